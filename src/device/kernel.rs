//! Kernels: a WGSL file, its entry point and its bindings, declared once; pipelines compiled on
//! first use and cached by (kernel, override constants).

use super::options::ShaderChecks;
use super::wgsl::{compose, specialise};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How a kernel uses a storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// A compute kernel. Binding 0 is always its uniform parameter struct; `bindings` lists the
/// storage buffers at bindings 1, 2, ... in order.
#[derive(Debug)]
pub struct KernelSpec {
    pub name: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
    pub bindings: &'static [Access],
}

type Key = (usize, Vec<(&'static str, u32)>);

pub(super) struct Compiled {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// The size of the shader's uniform parameter struct (binding 0), as naga lays it out: every
    /// dispatch checks the Rust struct against it, so a field added on one side only is an error
    /// that names the kernel, not garbage read by the GPU.
    pub params_size: Option<u32>,
}

pub(super) struct PipelineCache {
    map: Mutex<HashMap<Key, Arc<Compiled>>>,
    checks: ShaderChecks,
}

impl PipelineCache {
    pub fn new(checks: ShaderChecks) -> PipelineCache {
        PipelineCache { map: Mutex::default(), checks }
    }

    pub fn checks(&self) -> ShaderChecks {
        self.checks
    }

    pub fn get(&self, device: &wgpu::Device, spec: &KernelSpec, constants: &[(&'static str, u32)]) -> Result<Arc<Compiled>> {
        let key = (spec as *const KernelSpec as usize, constants.to_vec());
        if let Some(c) = self.map.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let compiled = Arc::new(compile(device, spec, constants, self.checks)?);
        self.map.lock().unwrap().insert(key, compiled.clone());
        Ok(compiled)
    }
}

fn compile(device: &wgpu::Device, spec: &KernelSpec, constants: &[(&'static str, u32)], checks: ShaderChecks) -> Result<Compiled> {
    let composed = compose(spec.source).map_err(|e| Error::Invalid(format!("kernel {} ({}): {e}", spec.name, spec.entry)))?;
    let (source, overrides) = specialise(&composed, constants);
    let params_size = uniform_size(&source);
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let desc = wgpu::ShaderModuleDescriptor { label: Some(spec.name), source: wgpu::ShaderSource::Wgsl(source.into()) };
    // SAFETY: the checks left out are those `ShaderChecks` explains: loops and divisors are
    // bounded by the launch parameters, and buffers by the driver's robust access where the
    // bounds checks go.
    let module = unsafe { device.create_shader_module_trusted(desc, checks.runtime_checks()) };
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    }];
    for (i, access) in spec.bindings.iter().enumerate() {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: i as u32 + 1,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: *access == Access::Read },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(spec.name), entries: &entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(spec.name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let consts: Vec<(&str, f64)> = overrides.iter().map(|(k, v)| (*k, *v as f64)).collect();
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(spec.name),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(spec.entry),
        compilation_options: wgpu::PipelineCompilationOptions { constants: &consts, zero_initialize_workgroup_memory: false },
        cache: None,
    });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Gpu(format!("compiling kernel {} ({}): {e}", spec.name, spec.entry)));
    }
    Ok(Compiled { pipeline, layout, params_size })
}

/// The size of the uniform struct at group 0, binding 0 of `source` (`None` when it has none or
/// does not parse: wgpu has reported that already).
pub fn uniform_size(source: &str) -> Option<u32> {
    let module = naga::front::wgsl::parse_str(source).ok()?;
    let (_, var) = module
        .global_variables
        .iter()
        .find(|(_, v)| v.space == naga::AddressSpace::Uniform && v.binding.as_ref().is_some_and(|b| b.group == 0 && b.binding == 0))?;
    Some(module.types[var.ty].inner.size(module.to_ctx()))
}
