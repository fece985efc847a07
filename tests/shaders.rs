//! Every kernel in `shaders/` parses and validates with naga: shader errors show up without a GPU.

use netmorph::testing::validate_wgsl;

#[test]
fn every_shader_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let source = std::fs::read_to_string(&path).unwrap();
            validate_wgsl(&path.display().to_string(), &source);
            checked += 1;
        }
    }
    eprintln!("[shaders] {checked} WGSL files validated");
    assert!(checked >= 10, "only {checked} shaders found in {}", dir.display());
}
