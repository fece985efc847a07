//! WGSL source as the device compiles it. WGSL has no includes, so the pieces that several shaders
//! share (parameter structs, grid indexing, workgroup reductions) live once in `shaders/lib/` and
//! are put in where a shader says `#include "lib/NAME.wgsl"`; then tile-size constants are applied.

use crate::error::{Error, Result};

/// The pieces of `shaders/lib/`, by the name shaders include them with.
const LIBRARY: &[(&str, &str)] = &[
    ("lib/grid.wgsl", include_str!("../../shaders/lib/grid.wgsl")),
    ("lib/elementwise.wgsl", include_str!("../../shaders/lib/elementwise.wgsl")),
    ("lib/optimizer.wgsl", include_str!("../../shaders/lib/optimizer.wgsl")),
    ("lib/workgroup_sum.wgsl", include_str!("../../shaders/lib/workgroup_sum.wgsl")),
    ("lib/gemm_params.wgsl", include_str!("../../shaders/lib/gemm_params.wgsl")),
    ("lib/gemm_store.wgsl", include_str!("../../shaders/lib/gemm_store.wgsl")),
];

/// `source` with each `#include "lib/NAME.wgsl"` line replaced by that piece (itself composed, so
/// pieces may include pieces; each goes in once, where it is first included).
pub fn compose(source: &str) -> Result<String> {
    let mut included = Vec::new();
    compose_into(source, &mut included)
}

fn compose_into(source: &str, included: &mut Vec<&'static str>) -> Result<String> {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        let Some(name) = line.trim().strip_prefix("#include") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let name = name.trim().trim_matches('"');
        let Some(&(known, piece)) = LIBRARY.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = LIBRARY.iter().map(|(n, _)| *n).collect();
            return Err(Error::Invalid(format!("#include {name:?} names no shared piece (there are {names:?})")));
        };
        if !included.contains(&known) {
            included.push(known);
            out.push_str(&compose_into(piece, included)?);
        }
    }
    Ok(out)
}

/// Applies tile-size constants. WGSL sizes function-scope arrays only with `const`, so a constant
/// declared as `const NAME: u32 = ...;` at the start of a line is rewritten in the source (a
/// comment that quotes one is left alone); any other name is passed as a pipeline-overridable
/// constant (`override NAME`).
pub fn specialise(source: &str, constants: &[(&'static str, u32)]) -> (String, Vec<(&'static str, u32)>) {
    let mut text = source.to_string();
    let mut overrides = Vec::new();
    for &(name, value) in constants {
        let decl = format!("const {name}: u32 = ");
        let at_line_start = |at: &usize| text[..*at].rsplit('\n').next().is_some_and(|before| before.trim().is_empty());
        if let Some(start) = text.match_indices(&decl).map(|(at, _)| at).find(at_line_start) {
            let end = start + text[start..].find(';').expect("const declaration ends with ;");
            text.replace_range(start..end, &format!("{decl}{value}u"));
        } else {
            overrides.push((name, value));
        }
    }
    (text, overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_go_in_once_and_unknown_ones_are_named() {
        let source = "#include \"lib/elementwise.wgsl\"\n#include \"lib/grid.wgsl\"\nfn f() {}\n";
        let composed = compose(source).unwrap();
        assert_eq!(composed.matches("fn workgroup_index").count(), 1, "{composed}");
        assert!(composed.contains("fn first_index") && composed.ends_with("fn f() {}\n"));
        let e = compose("#include \"lib/nope.wgsl\"\n").unwrap_err().to_string();
        assert!(e.contains("lib/nope.wgsl") && e.contains("lib/grid.wgsl"), "{e}");
    }

    #[test]
    fn a_constant_quoted_in_a_comment_stays_as_it_is() {
        let source = "// like `const TM: u32 = 4u;` in the other kernel\nconst TM: u32 = 8u;\n";
        let (text, overrides) = specialise(source, &[("TM", 2), ("WG", 64)]);
        assert_eq!(text, "// like `const TM: u32 = 4u;` in the other kernel\nconst TM: u32 = 2u;\n");
        assert_eq!(overrides, vec![("WG", 64)]);
    }
}
