//! netmorph: a deep-learning engine on wgpu with its own WGSL kernels and tape autodiff, and an
//! architecture search by network morphism.

pub mod device;
pub mod error;
pub mod ops;
pub mod tensor;
pub mod testing;

pub use device::Device;
pub use error::{Error, Result};
pub use tensor::Tensor;
