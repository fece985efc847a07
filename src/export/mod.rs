//! Exporting a trained graph for other runtimes.
//!
//! [`to_onnx`] turns a graph into a self-contained ONNX model (opset 13) that takes raw pixel
//! values and gives class probabilities; [`write_onnx`] writes it to a file.

pub mod onnx;

/// The ONNX messages, generated from `onnx.proto` (see the header of `onnx_proto.rs`). Public so
/// that callers and tests can read an exported model back.
#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod onnx_proto;

pub use onnx::{to_onnx, write_onnx};
