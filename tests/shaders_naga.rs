//! Parses and validates every WGSL file under `shaders/` with naga. Needs no
//! GPU, so a broken shader fails here first, with naga's message.

use std::path::Path;

#[test]
fn every_shader_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match naga::front::wgsl::parse_str(&src) {
            Err(e) => failures.push(format!("{name}: parse error:\n{}", e.emit_to_string(&src))),
            Ok(module) => {
                let mut v =
                    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
                if let Err(e) = v.validate(&module) {
                    failures.push(format!("{name}: validation error:\n{}", e.emit_to_string(&src)));
                }
                if module.entry_points.is_empty() {
                    failures.push(format!("{name}: no entry points"));
                }
            }
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 2, "found only {checked} shaders in {}", dir.display());
}
