//! Every kernel in `shaders/` parses and validates with naga, and translates through naga's SPIR-V,
//! MSL and HLSL back ends (Vulkan, Metal, DX12): shader errors show up without a GPU.

use netmorph::device::{compose, specialise};
use netmorph::ops::matmul::Tiling;
use netmorph::testing::validate_wgsl;

#[test]
fn every_shader_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let written = std::fs::read_to_string(&path).unwrap();
            let source = compose(&written).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            validate_wgsl(&path.display().to_string(), &source);
            checked += 1;
        }
    }
    eprintln!("[shaders] {checked} WGSL files validated");
    assert!(checked >= 10, "only {checked} shaders found in {}", dir.display());
}

/// Validation with subgroups, as the device compiles them.
fn validate(module: &naga::Module) -> Result<naga::valid::ModuleInfo, String> {
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default() | naga::valid::Capabilities::SUBGROUP,
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(module)
    .map_err(|e| format!("{e:?}"))
}

/// One entry point of `module` with `overrides` (the rest at their defaults), in SPIR-V (Vulkan),
/// MSL (Metal 2.4: subgroups) and HLSL (shader model 6.0: wave operations).
fn translate(module: &naga::Module, info: &naga::valid::ModuleInfo, entry: &str, overrides: &[(&str, u32)]) -> Result<(), String> {
    use naga::back::{hlsl, msl, pipeline_constants, spv};
    let stage = naga::ShaderStage::Compute;
    let constants: naga::back::PipelineConstants = overrides.iter().map(|&(k, v)| (k.to_string(), v as f64)).collect();
    let (module, info) =
        pipeline_constants::process_overrides(module, info, Some((stage, entry)), &constants).map_err(|e| format!("overrides: {e:?}"))?;
    let spv_options = spv::Options { lang_version: (1, 3), ..Default::default() };
    let spv_pipeline = spv::PipelineOptions { shader_stage: stage, entry_point: entry.to_string() };
    spv::write_vec(&module, &info, &spv_options, Some(&spv_pipeline)).map_err(|e| format!("SPIR-V: {e:?}"))?;
    let msl_options = msl::Options { lang_version: (2, 4), ..Default::default() };
    let msl_pipeline = msl::PipelineOptions { entry_point: Some((stage, entry.to_string())), ..Default::default() };
    msl::write_string(&module, &info, &msl_options, &msl_pipeline).map_err(|e| format!("MSL: {e:?}"))?;
    let hlsl_options = hlsl::Options { shader_model: hlsl::ShaderModel::V6_0, ..Default::default() };
    let hlsl_pipeline = hlsl::PipelineOptions { entry_point: Some((stage, entry.to_string())) };
    let mut hlsl_text = String::new();
    hlsl::Writer::new(&mut hlsl_text, &hlsl_options, &hlsl_pipeline).write(&module, &info, None).map_err(|e| format!("HLSL: {e:?}"))?;
    Ok(())
}

/// The constants each shader is compiled with (applied by the device's own `specialise`): the
/// GEMMs in every candidate tiling, the subgroup GEMMs in their geometries for subgroups of 4 to
/// 128 invocations, the small-K subgroup convolutions at 4, 8, 32 and 64, the workgroup-memory
/// GEMM in its candidate tilings with their k-steps, the others as written.
fn variants(name: &str) -> Vec<Vec<(&'static str, u32)>> {
    let tilings: Vec<Tiling> = match name {
        "matmul_subgroup.wgsl" => {
            // Every geometry of every subgroup size the kernels take, LANES among the constants.
            let tilings = [4, 8, 16, 32, 64, 128].into_iter().flat_map(Tiling::subgroup_candidates);
            return tilings.map(|t| vec![("TM", t.tm), ("TN", t.tn), ("WG_X", t.wg_x), ("WG_Y", t.wg_y), ("LANES", t.lanes())]).collect();
        }
        "conv2d_subgroup.wgsl" => {
            // The small-K kernels at subgroup sizes of 4 to 64, with a reduction of 9 (more than
            // a lane's rows at 4 and 8, fewer than a subgroup's at 32 and 64) and of 32.
            let sizes = [4, 8, 32, 64].into_iter().flat_map(|lanes| [(lanes, 9, 4), (lanes, 32, 2)]);
            return sizes.map(|(lanes, k, cpl)| vec![("LANES", lanes), ("KK", k), ("CPL", cpl)]).collect();
        }
        "matmul.wgsl" | "matmul_vec4.wgsl" => Tiling::CANDIDATES.to_vec(),
        "matmul_tiled.wgsl" => {
            let tilings = Tiling::WORKGROUP_CANDIDATES.iter();
            return tilings.map(|t| vec![("TM", t.tm), ("TN", t.tn), ("WG_X", t.wg_x), ("WG_Y", t.wg_y), ("BK", t.bk)]).collect();
        }
        _ => return vec![vec![]],
    };
    tilings.iter().map(|t| vec![("TM", t.tm), ("TN", t.tn), ("WG_X", t.wg_x), ("WG_Y", t.wg_y)]).collect()
}

#[test]
fn every_shader_translates_for_vulkan_metal_and_dx12() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let (mut translated, mut failures) = (0, Vec::new());
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wgsl") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let written = compose(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for constants in variants(&name) {
            let (source, overrides) = specialise(&written, &constants);
            let what = if constants.is_empty() { name.clone() } else { format!("{name} {constants:?}") };
            let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&source)));
            let info = validate(&module).unwrap_or_else(|e| panic!("{what}: {e}"));
            for ep in &module.entry_points {
                translated += 1;
                if let Err(e) = translate(&module, &info, &ep.name, &overrides) {
                    failures.push(format!("{what} ({}): {e}", ep.name));
                }
            }
        }
    }
    eprintln!("[shaders] {translated} entry points (GEMM tilings included) translated to SPIR-V, MSL and HLSL");
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
    assert!(translated >= 70, "only {translated} entry points in {}", dir.display());
}
