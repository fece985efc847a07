//! netmorph: a deep-learning engine on wgpu with its own WGSL kernels and tape autodiff, and an
//! architecture search by network morphism.
//!
//! Layers, each depending only on those below it: `cli` (the options and jobs of the `netmorph`
//! command) -> `export` (ONNX), `search` -> `morph` -> `graph` -> `train` -> `optim`, `data` ->
//! `autograd` -> `ops` -> `device`. `report` (data health and the search, as a page) sits beside
//! `export`, over `search` and `data`.

pub mod autograd;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod graph;
pub mod morph;
pub mod ops;
pub mod optim;
pub mod report;
pub mod search;
pub mod tensor;
pub mod testing;
pub mod train;

pub use device::Device;
pub use error::{Error, Result};
pub use tensor::Tensor;
