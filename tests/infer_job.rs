//! Batch plumbing of `infer`: shards, inputs, output names, skip/resume, all-or-none outputs, CSV gathering.

mod common;
use common::files_in;

use std::path::{Path, PathBuf};

use qcanet_gpu::infer::job::{
    base_name, check_distinct_outputs, check_not_input, expand_inputs, gather_csvs, is_output_name, series_criteria,
    write_outputs,
};
use qcanet_gpu::infer::{Outputs, Segmentation, Shard};

#[test]
fn shard_parsing_and_selection() {
    assert_eq!(Shard::parse("0/1").unwrap(), Shard::default());
    let s: Shard = "2/4".parse().unwrap();
    assert_eq!(s.units(11), vec![2, 6, 10]);
    assert!(s.selects(6) && !s.selects(7));
    for bad in ["4/4", "5/4", "0/0", "1", "a/b", "-1/3", "1/-3", ""] {
        let e = Shard::parse(bad).unwrap_err().to_string();
        assert!(e.contains("shard"), "{bad}: {e}");
    }
    // Every unit is taken by exactly one shard.
    for n in 1..6 {
        let mut all: Vec<usize> = (0..n).flat_map(|i| Shard::new(i, n).unwrap().units(13)).collect();
        all.sort();
        assert_eq!(all, (0..13).collect::<Vec<_>>());
    }
}

fn touch(p: &Path) {
    std::fs::write(p, b"x").unwrap();
}

#[test]
fn folders_expand_to_sorted_stacks_without_earlier_outputs() {
    let d = tempfile::tempdir().unwrap();
    for f in ["b.tif", "a.TIFF", "c.tiff", "a_labels.tif", "a_nsn_prob.tif", "notes.txt", "a_criteria.csv"] {
        touch(&d.path().join(f));
    }
    std::fs::create_dir(d.path().join("sub.tif")).unwrap();
    let got = expand_inputs(&[d.path().to_path_buf()]).unwrap();
    let names: Vec<_> = got.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, vec!["a.TIFF", "b.tif", "c.tiff"]);
    // Files given explicitly are kept in order, duplicates dropped.
    let b = d.path().join("b.tif");
    let got = expand_inputs(&[b.clone(), d.path().join("c.tiff"), b.clone()]).unwrap();
    assert_eq!(got.len(), 2);
    assert!(is_output_name(Path::new("x/s_t003_labels.tif")) && !is_output_name(Path::new("labels.tif")));
    // Errors name the path.
    let e = expand_inputs(&[d.path().join("missing.tif")]).unwrap_err().to_string();
    assert!(e.contains("missing.tif") && e.contains("no such"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = expand_inputs(&[empty.path().to_path_buf()]).unwrap_err().to_string();
    assert!(e.contains(&empty.path().display().to_string()) && e.contains("no .tif"), "{e}");
    assert!(expand_inputs(&[]).is_err());
}

#[test]
fn output_names_beside_input_or_in_out_dir() {
    let o = Outputs::for_input(Path::new("/data/stack.tif"), None, None, false);
    assert_eq!(o.labels, PathBuf::from("/data/stack_labels.tif"));
    assert_eq!(o.criteria, PathBuf::from("/data/stack_criteria.csv"));
    assert_eq!(o.paths().len(), 2);
    let o = Outputs::for_input(Path::new("/data/stack.tif"), Some(Path::new("/out")), Some((3, 40)), true);
    assert_eq!(o.labels, PathBuf::from("/out/stack_t003_labels.tif"));
    assert_eq!(o.criteria, PathBuf::from("/out/stack_t003_criteria.csv"));
    assert_eq!(o.nsn_prob, Some(PathBuf::from("/out/stack_t003_nsn_prob.tif")));
    assert_eq!(o.ndn_prob, Some(PathBuf::from("/out/stack_t003_ndn_prob.tif")));
    assert_eq!(base_name(Path::new("s.tif"), None, Some((7, 1500))), PathBuf::from("s_t0007"));
    assert_eq!(series_criteria(Path::new("/d/s.tiff"), None), PathBuf::from("/d/s_criteria.csv"));
}

#[test]
fn ome_tiff_outputs_drop_the_double_extension() {
    // OME-TIFF's `.ome.tif` (any case) is one extension: `x.ome.tif` gives
    // `x_labels.tif`, as `eval` pairs it, not `x.ome_labels.tif`.
    let o = Outputs::for_input(Path::new("/d/x.ome.tif"), None, None, false);
    assert_eq!(o.labels, PathBuf::from("/d/x_labels.tif"));
    assert_eq!(
        base_name(Path::new("/d/Embryo.OME.TIFF"), Some(Path::new("/o")), Some((2, 5))),
        PathBuf::from("/o/Embryo_t002")
    );
    // Only a final `.ome` before the TIFF extension is dropped.
    assert_eq!(base_name(Path::new("/d/home.tif"), None, None), PathBuf::from("/d/home"));
    assert_eq!(base_name(Path::new("/d/a.ome.b.tif"), None, None), PathBuf::from("/d/a.ome.b"));
    assert_eq!(base_name(Path::new("/d/.ome.tif"), None, None), PathBuf::from("/d/.ome"));
    assert_eq!(base_name(Path::new("/d/ü.ome.tif"), None, None), PathBuf::from("/d/ü"));
    assert_eq!(qcanet_gpu::io::stack_stem(Path::new("/d/x.ome.csv")), "x.ome");
    assert_eq!(base_name(Path::new("/"), Some(Path::new("/o")), None), PathBuf::from("/o/stack"));
}

#[test]
fn complete_means_every_output_exists() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("s.tif");
    touch(&input);
    let o = Outputs::for_input(&input, None, None, true);
    assert!(!o.complete());
    touch(&o.labels);
    touch(&o.criteria);
    touch(o.nsn_prob.as_ref().unwrap());
    assert!(!o.complete(), "one probability map still missing");
    touch(o.ndn_prob.as_ref().unwrap());
    assert!(o.complete());
    // Without probabilities the same run is complete with fewer files.
    assert!(Outputs::for_input(&input, None, None, false).complete());
}

#[test]
fn outputs_never_overwrite_inputs() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.tif");
    let al = d.path().join("a_labels.tif");
    touch(&a);
    touch(&al);
    let o = Outputs::for_input(&a, None, None, false);
    let e = check_not_input(&o, &[a.clone(), al.clone()]).unwrap_err().to_string();
    assert!(e.contains("a_labels.tif") && e.contains("input"), "{e}");
    assert!(check_not_input(&o, &[a]).is_ok());
}

#[test]
fn inputs_whose_outputs_share_names_are_refused_naming_both() {
    let d = tempfile::tempdir().unwrap();
    let (x, y) = (d.path().join("x"), d.path().join("y"));
    std::fs::create_dir_all(&x).unwrap();
    std::fs::create_dir_all(&y).unwrap();
    let (a, b, c) = (x.join("a.tif"), y.join("a.tif"), y.join("c.tif"));
    let out = d.path().join("out");
    // Beside their inputs, two a.tif write to two folders.
    assert!(check_distinct_outputs(&[a.clone(), b.clone(), c.clone()], None).is_ok());
    // Into one folder they would write the same files.
    let e = check_distinct_outputs(&[a.clone(), c.clone(), b.clone()], Some(&out)).unwrap_err().to_string();
    assert!(e.contains(b.to_str().unwrap()) && e.contains(a.to_str().unwrap()) && e.contains("a_labels.tif"), "{e}");
    // a.tiff and a.tif share a stem, so their outputs.
    let e = check_distinct_outputs(&[x.join("a.tiff"), a], None).unwrap_err().to_string();
    assert!(e.contains("a.tiff"), "{e}");
}

#[test]
fn atomic_writes_leave_nothing_on_failure() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("out.csv");
    let e = qcanet_gpu::io::write_atomic(&p, |w| {
        w.write_all(b"half a file").unwrap();
        Err(qcanet_gpu::Error::invalid("simulated failure"))
    });
    assert!(e.is_err());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "partial or temporary file left behind");
    qcanet_gpu::io::write_atomic(&p, |w| w.write_all(b"done\n").map_err(qcanet_gpu::Error::from)).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "done\n");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
}

/// A 2×3×4 segmentation without nuclei, with both probability maps.
fn segmentation() -> Segmentation {
    Segmentation {
        dims: [2, 3, 4],
        voxel_um: [0.8, 0.8, 1.75],
        labels: vec![0; 24],
        criteria: vec![],
        nsn_prob: Some(vec![0.5; 24]),
        ndn_prob: Some(vec![0.25; 24]),
    }
}

#[test]
fn an_inputs_outputs_appear_together_or_not_at_all() {
    let d = tempfile::tempdir().unwrap();
    let outs = Outputs::for_input(&d.path().join("s.tif"), None, None, true);

    // The last output cannot be renamed into place (a folder has its name):
    // the outputs renamed before it are removed again.
    std::fs::create_dir(&outs.labels).unwrap();
    let e = write_outputs(&outs, &segmentation(), None).unwrap_err().to_string();
    assert!(e.contains("s_labels.tif"), "{e}");
    assert_eq!(files_in(d.path()), vec!["s_labels.tif"], "only the folder may be left");
    std::fs::remove_dir(&outs.labels).unwrap();

    // Writing fails part-way (labels that do not fill the stack; a full
    // disk fails the same way): nothing appears, no temporary file is left,
    // and the error names the output, not a temporary file.
    let mut short = segmentation();
    short.labels.truncate(23);
    let e = write_outputs(&outs, &short, None).unwrap_err().to_string();
    assert!(e.contains("s_labels.tif:"), "{e}");
    assert!(files_in(d.path()).is_empty(), "left behind: {:?}", files_in(d.path()));
    let mut not_finite = segmentation();
    not_finite.ndn_prob.as_mut().unwrap()[0] = f32::NAN;
    write_outputs(&outs, &not_finite, None).unwrap_err();
    assert!(files_in(d.path()).is_empty(), "left behind: {:?}", files_in(d.path()));

    // Success: all four, readable by all.
    assert_eq!(write_outputs(&outs, &segmentation(), None).unwrap(), 0);
    assert!(outs.complete());
    assert_eq!(files_in(d.path()), vec!["s_criteria.csv", "s_labels.tif", "s_ndn_prob.tif", "s_nsn_prob.tif"]);
    #[cfg(unix)]
    for p in outs.paths() {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o644, "{}", p.display());
    }
    // A failed rewrite leaves the earlier complete outputs as they were.
    let before: Vec<Vec<u8>> = outs.paths().iter().map(|p| std::fs::read(p).unwrap()).collect();
    write_outputs(&outs, &short, None).unwrap_err();
    let after: Vec<Vec<u8>> = outs.paths().iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after && files_in(d.path()).len() == 4);
}

#[test]
fn series_csv_is_gathered_once_every_time_point_exists() {
    let d = tempfile::tempdir().unwrap();
    let parts: Vec<PathBuf> = (0..3).map(|t| d.path().join(format!("s_t{t:03}_criteria.csv"))).collect();
    let dest = d.path().join("s_criteria.csv");
    std::fs::write(&parts[0], "time,label,volume\n0,1,10\n0,2,12\n").unwrap();
    std::fs::write(&parts[2], "time,label,volume\n2,1,9\n").unwrap();
    assert!(!gather_csvs(&parts, &dest).unwrap());
    assert!(!dest.exists());
    std::fs::write(&parts[1], "time,label,volume\n").unwrap(); // a time point without nuclei
    assert!(gather_csvs(&parts, &dest).unwrap());
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "time,label,volume\n0,1,10\n0,2,12\n2,1,9\n");
    std::fs::write(&parts[1], "time,label\n1,1\n").unwrap();
    let e = gather_csvs(&parts, &dest).unwrap_err().to_string();
    assert!(e.contains("s_t001_criteria.csv") && e.contains("header"), "{e}");
}
