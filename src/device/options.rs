//! What a device is opened with. Settings that change how kernels run are read here once, when the
//! device is created (from the environment, or given by a test), never on each call.

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
}

impl DeviceOptions {
    /// NETMORPH_SHADER_CHECKS=all|bounds|none overrides the backend's default checks.
    pub fn from_env() -> Result<DeviceOptions> {
        let shader_checks = match std::env::var("NETMORPH_SHADER_CHECKS") {
            Ok(v) if !v.is_empty() => Some(ShaderChecks::parse(&v)?),
            _ => None,
        };
        Ok(DeviceOptions { shader_checks, ..DeviceOptions::default() })
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
