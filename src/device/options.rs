//! What a device is opened with. Settings that change how kernels run are read here once, when the
//! device is created (from the environment, or given by a test), never on each call.

use super::knobs::KernelKnobs;
use super::tuning::KernelTuning;
use crate::error::{Error, Result};

/// The checks wgpu compiles into our shaders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShaderChecks {
    /// Every check: bounds, forced loop bounding and integer-division checks.
    All,
    /// Bounds checks on every buffer access, nothing else. Forced loop bounding (a counter and a
    /// branch in every loop, against infinite loops) and division checks (a select per `/` and
    /// `%`, against a zero divisor) guard against untrusted shaders; ours are trusted: every loop
    /// runs to a count taken from its launch parameters, and every divisor is a shape extent or
    /// stride, which the shape rules reject when zero.
    Bounds,
    /// No check at all: out-of-bounds accesses are left to the driver.
    None,
}

impl ShaderChecks {
    /// The default for a backend. Vulkan guarantees robust buffer access (`robustBufferAccess` is
    /// the one feature every Vulkan 1.0 device must support, and wgpu enables it): an access out
    /// of a binding's range reads zero or a value inside the buffer and never touches other
    /// memory, so the shader's own checks only cost time. Metal gives no such guarantee, and
    /// DX12's and GL's are not relied on here: their shaders keep the bounds checks.
    pub fn for_backend(backend: wgpu::Backend) -> ShaderChecks {
        match backend {
            wgpu::Backend::Vulkan => ShaderChecks::None,
            _ => ShaderChecks::Bounds,
        }
    }

    pub fn parse(s: &str) -> Result<ShaderChecks> {
        match s {
            "all" => Ok(ShaderChecks::All),
            "bounds" => Ok(ShaderChecks::Bounds),
            "none" => Ok(ShaderChecks::None),
            other => Err(Error::Invalid(format!("NETMORPH_SHADER_CHECKS={other:?}: expected all, bounds or none"))),
        }
    }

    pub(super) fn runtime_checks(self) -> wgpu::ShaderRuntimeChecks {
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        if self != ShaderChecks::All {
            checks.force_loop_bounding = false;
            checks.int_div_checks = false;
            checks.bounds_checks = self == ShaderChecks::Bounds;
        }
        checks
    }
}

/// How to open a device. [`DeviceOptions::from_env`] is what [`Device::new`](super::Device::new)
/// uses; tests set fields directly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceOptions {
    /// The largest storage binding and buffer, in bytes, when lower than the adapter's. The device
    /// is opened with these limits, so wgpu itself refuses anything larger: tests open such a
    /// device to check that work is split to fit (a GPU with small bindings, at small sizes).
    pub max_binding_bytes: Option<u64>,
    /// The checks compiled into the shaders; `None`: [`ShaderChecks::for_backend`].
    pub shader_checks: Option<ShaderChecks>,
    /// Kernels chosen by measurement, or by the built-in rules alone (the default here; the
    /// environment's default, [`DeviceOptions::from_env`], is to measure).
    pub kernel_tuning: KernelTuning,
    /// Kernels forced or logged by hand (the environment's NETMORPH_GEMM_*, NETMORPH_CONV_* and
    /// NETMORPH_ROW_* variables).
    pub knobs: KernelKnobs,
}

impl DeviceOptions {
    /// The options of a run: NETMORPH_SHADER_CHECKS=all|bounds|none overrides the backend's
    /// default checks, and NETMORPH_TUNING=off|on|SECONDS turns kernel tuning off, or on with the
    /// default cap or with a cap of SECONDS (on, with the default cap, when unset).
    pub fn from_env() -> Result<DeviceOptions> {
        let tuning = tuning_from_env()?.unwrap_or_else(KernelTuning::default_on);
        Ok(DeviceOptions { kernel_tuning: tuning, ..DeviceOptions::without_tuning_from_env()? })
    }

    /// The options of the tests' and benchmarks' shared device: the environment's, but kernel
    /// tuning only where NETMORPH_TUNING asks for it. Tests compare kernels with references and runs
    /// with each other, and a measured choice would vary with the machine's load.
    pub fn without_tuning_from_env() -> Result<DeviceOptions> {
        let shader_checks = match std::env::var("NETMORPH_SHADER_CHECKS") {
            Ok(v) if !v.is_empty() => Some(ShaderChecks::parse(&v)?),
            _ => None,
        };
        let kernel_tuning = tuning_from_env()?.unwrap_or(KernelTuning::Off);
        Ok(DeviceOptions { shader_checks, kernel_tuning, knobs: KernelKnobs::from_env()?, ..DeviceOptions::default() })
    }

    /// The adapter's limits, lowered where these options ask.
    pub(super) fn limits(&self, adapter: &wgpu::Limits) -> wgpu::Limits {
        let mut limits = adapter.clone();
        if let Some(bytes) = self.max_binding_bytes {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(bytes);
            limits.max_buffer_size = limits.max_buffer_size.min(bytes);
        }
        limits
    }
}

/// NETMORPH_TUNING, when set.
fn tuning_from_env() -> Result<Option<KernelTuning>> {
    let Ok(value) = std::env::var("NETMORPH_TUNING") else { return Ok(None) };
    KernelTuning::parse(&value).map(Some).map_err(|why| Error::Invalid(format!("NETMORPH_TUNING: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn vulkan_alone_runs_without_bounds_checks() {
        assert_eq!(ShaderChecks::for_backend(wgpu::Backend::Vulkan), ShaderChecks::None);
        for backend in [wgpu::Backend::Metal, wgpu::Backend::Dx12, wgpu::Backend::Gl] {
            assert!(ShaderChecks::for_backend(backend).runtime_checks().bounds_checks, "{backend:?}");
        }
        assert!(!ShaderChecks::None.runtime_checks().bounds_checks);
        let all = ShaderChecks::All.runtime_checks();
        assert!(all.bounds_checks && all.force_loop_bounding && all.int_div_checks);
    }

    #[test]
    fn a_wrong_setting_is_named() {
        let e = ShaderChecks::parse("some").unwrap_err().to_string();
        assert!(e.contains("NETMORPH_SHADER_CHECKS") && e.contains("\"some\""), "{e}");
        for bad in ["-1", "NaN", "1e30", "fast"] {
            let e = KernelTuning::parse(bad).unwrap_err();
            assert!(e.contains("off, on, or a cap in seconds"), "{e}");
        }
        assert_eq!(KernelTuning::parse("off").unwrap(), KernelTuning::Off);
        assert!(matches!(KernelTuning::parse("2.5").unwrap(), KernelTuning::On { cap, .. } if cap == Duration::from_millis(2500)));
    }
}
