//! The comparison figure: palette, projections, layout and the PNG file.

use qcanet_gpu::infer::figure::{compose, label_colour, max_z, write_png, Row, COLUMNS};

#[test]
fn palette_is_fixed_distinct_and_black_for_background() {
    assert_eq!(label_colour(0), [0, 0, 0]);
    assert_eq!(label_colour(17), label_colour(17));
    let cols: Vec<[u8; 3]> = (1..=64).map(label_colour).collect();
    for (i, a) in cols.iter().enumerate() {
        assert!(a.iter().map(|&v| v as u32).sum::<u32>() > 120, "label {} too dark: {a:?}", i + 1);
        for (j, b) in cols.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "labels {} and {} share a colour", i + 1, j + 1);
        }
    }
}

#[test]
fn max_projection_along_z() {
    let dims = [3, 2, 2];
    let v = vec![1u32, 0, 5, 2, /* z1 */ 0, 7, 1, 2, /* z2 */ 3, 0, 0, 9];
    assert_eq!(max_z(&v, dims), vec![3, 7, 5, 9]);
}

#[test]
fn figure_panels_hold_raw_and_label_colours() {
    let dims = [5, 7, 9];
    let n = 5 * 7 * 9;
    let raw: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32).collect();
    // Label 4 only in z = 0 at (y 1, x 2); label 9 at the middle slice (z 2) at (y 3, x 4).
    let mut a = vec![0u32; n];
    a[9 + 2] = 4; // (z 0, y 1, x 2)
    a[(2 * 7 + 3) * 9 + 4] = 9;
    let b = vec![0u32; n];
    let rows = [Row { name: "NSN + CCL".into(), labels: &a }, Row { name: "QCANet".into(), labels: &b }];
    let scale = 3;
    let f = compose(&raw, dims, &rows, scale).unwrap();
    assert_eq!(f.rgb.len(), f.width * f.height * 3);
    assert_eq!(f.titles.len(), COLUMNS.len() + rows.len());
    // Find the panels from the column title positions (x) and row title positions (y).
    let col_x: Vec<usize> = f.titles[..4].iter().map(|t| t.0).collect();
    let row_y: Vec<usize> = f.titles[4..].iter().map(|t| t.1 + 8 - 7 * scale / 2).collect();
    let px = |x: usize, y: usize| {
        let o = (y * f.width + x) * 3;
        [f.rgb[o], f.rgb[o + 1], f.rgb[o + 2]]
    };
    let at = |row: usize, col: usize, y: usize, x: usize| px(col_x[col] + x * scale + 1, row_y[row] + y * scale + 1);
    // Label MIP shows both labels; middle slice only label 9; background black.
    assert_eq!(at(0, 1, 1, 2), label_colour(4));
    assert_eq!(at(0, 1, 3, 4), label_colour(9));
    assert_eq!(at(0, 1, 0, 0), [0, 0, 0]);
    assert_eq!(at(0, 3, 1, 2), [0, 0, 0]);
    assert_eq!(at(0, 3, 3, 4), label_colour(9));
    assert_eq!(at(1, 1, 3, 4), [0, 0, 0]);
    // Raw panels are grey, and differ between MIP and middle slice somewhere.
    let g = at(1, 0, 2, 3);
    assert!(g[0] == g[1] && g[1] == g[2]);
    let differs = (0..7).any(|y| (0..9).any(|x| at(0, 0, y, x) != at(0, 2, y, x)));
    assert!(differs);
}

#[test]
fn png_is_written_atomically_with_the_right_size() {
    let dims = [4, 6, 8];
    let n = 4 * 6 * 8;
    let raw: Vec<f32> = (0..n).map(|i| (i % 13) as f32).collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % 5) as u32).collect();
    let f = compose(&raw, dims, &[Row { name: "QCANet".into(), labels: &labels }], 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fig.png");
    write_png(&f, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w as usize, h as usize), (f.width, f.height));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
}

#[test]
fn mismatched_volumes_are_errors() {
    let raw = vec![0.0f32; 24];
    let labels = vec![0u32; 23];
    let e = compose(&raw, [2, 3, 4], &[Row { name: "x".into(), labels: &labels }], 1).err().unwrap();
    assert!(e.to_string().contains("labels of 'x'"), "{e}");
    assert!(compose(&raw, [2, 3, 5], &[], 1).is_err());
    let missing = std::path::Path::new("/nonexistent-dir/fig.png");
    let f = compose(&raw, [2, 3, 4], &[Row { name: "x".into(), labels: &[0; 24] }], 1).unwrap();
    let e = write_png(&f, missing).unwrap_err();
    assert!(e.to_string().contains("fig.png"), "{e}");
}
