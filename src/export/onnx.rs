//! A graph as an ONNX model (opset 13): the whole classifier, from pixels to probabilities.
//!
//! The model's input `input` is float32 `[N, c, h, w]` (or `[N, features]` for a flat input) with a
//! symbolic batch `N`, holding pixel values divided by 255 (in [0, 1]), as netmorph's graphs take
//! them. The model applies the input's per-channel normalisation if the graph has one, runs the
//! layers in evaluation mode (batch norm with its running statistics, dropout the identity) and
//! ends in a softmax: its output `probabilities` is `[N, classes]`. The class names travel in the
//! metadata (`class_names`, a JSON array).
//!
//! A graph with test-time shifts exports them too: the input's shifted copies (Pad, then Slice)
//! are stacked along the batch axis, the layers run once on the stack, and the outputs of each
//! image's copies are averaged (Reshape to `[copies, N, classes]`, ReduceMean) before the softmax,
//! as [`crate::graph::Model`] averages them.
//!
//! Layouts need no conversion: our conv kernels are ONNX's `[out, in, kh, kw]`, dense kernels
//! `[in, out]` are Gemm's `B`, and flatten is row-major over `[c, h, w]` like ONNX's `Flatten`.

use super::onnx_proto as pb;
use crate::error::{Error, Result};
use crate::graph::{Graph, Layer, LayerId, Op, Padding};
use prost::Message;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// The ONNX operator set the model imports (default domain).
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13 (ONNX 1.8), so that older runtimes load the model.
pub const IR_VERSION: i64 = 7;
/// Name of the model's input.
pub const INPUT_NAME: &str = "input";
/// Name of the model's output.
pub const OUTPUT_NAME: &str = "probabilities";
/// Name of the symbolic batch dimension.
pub const BATCH_DIM: &str = "N";
/// Name of the tensor of averaged outputs (logits, for a graph that does not end in a softmax) of a
/// model with test-time shifts.
pub const TEST_TIME_MEAN: &str = "test_time_mean";
/// Metadata key of the class names (a JSON array of strings).
pub const CLASS_NAMES_KEY: &str = "class_names";

/// The ONNX model of `graph`, serialised. Fails, naming the layer, on a graph that is not a
/// complete classifier: missing weights, or an output that is not flat `[classes]`.
pub fn to_onnx(graph: &Graph) -> Result<Vec<u8>> {
    Ok(model(graph)?.encode_to_vec())
}

/// Writes [`to_onnx`]'s bytes to `path` atomically: a temporary file beside it, renamed over it,
/// so a reader never sees half a model.
pub fn write_onnx(graph: &Graph, path: &Path) -> Result<()> {
    let bytes = to_onnx(graph)?;
    let mut name = path.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?.to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(&bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// The ONNX model of `graph`, as messages.
pub fn model(graph: &Graph) -> Result<pb::ModelProto> {
    graph.validate().map_err(|e| Error::Invalid(format!("cannot export the graph to ONNX: {e}")))?;
    let shapes = graph.infer_shapes()?;
    let output = graph.output();
    let classes = match shapes[&output.id].as_slice() {
        &[classes] => classes,
        shape => {
            return Err(layer_error(
                output,
                format!("the output gives {shape:?}; an exported classifier must end in flat logits [classes] (a dense layer)"),
            ))
        }
    };
    let class_names: Vec<String> = if graph.class_names().is_empty() {
        (0..classes).map(|i| i.to_string()).collect()
    } else if graph.class_names().len() == classes {
        graph.class_names().to_vec()
    } else {
        return Err(layer_error(output, format!("the output has {classes} classes but the graph names {}", graph.class_names().len())));
    };

    let mut b = Builder::default();
    // Each layer's output tensor; dropout reuses its input's (the identity in evaluation mode).
    let mut tensors: HashMap<LayerId, String> = HashMap::new();
    // A softmax at the end already gives the probabilities: its output takes the model output's name.
    let final_softmax = ends_in_softmax(graph);
    let shifts = graph.test_time_shifts();
    for layer in graph.layers() {
        let name = tensor_name(layer);
        let out = if Some(layer.id) == final_softmax && shifts.is_empty() { OUTPUT_NAME.to_string() } else { name.clone() };
        let ins: Vec<String> = layer.inputs.iter().map(|i| tensors[i].clone()).collect();
        let tensor = match &layer.op {
            Op::Input { .. } => b.prepare_input(graph, &out),
            Op::Conv2d { kernel, stride, padding, bias, .. } => {
                let input = &shapes[&layer.inputs[0]];
                let pads = match padding {
                    Padding::Valid => [0; 4],
                    Padding::Same => {
                        let (top, bottom) = same_padding(input[1], *kernel, *stride);
                        let (left, right) = same_padding(input[2], *kernel, *stride);
                        [top, left, bottom, right]
                    }
                };
                let mut node_inputs = vec![ins[0].clone(), b.weight(layer, &name, "kernel")];
                if *bias {
                    node_inputs.push(b.weight(layer, &name, "bias"));
                }
                let (k, s) = (*kernel as i64, *stride as i64);
                let attributes = vec![
                    ints("kernel_shape", &[k, k]),
                    ints("strides", &[s, s]),
                    ints("pads", &pads.map(|p| p as i64)),
                    ints("dilations", &[1, 1]),
                    int("group", 1),
                ];
                b.node("Conv", &name, node_inputs, &out, attributes)
            }
            Op::BatchNorm { momentum, eps } => {
                let node_inputs = [ins[0].clone()]
                    .into_iter()
                    .chain(["gamma", "beta", "running_mean", "running_var"].map(|p| b.weight(layer, &name, p)))
                    .collect();
                b.node("BatchNormalization", &name, node_inputs, &out, vec![float("epsilon", *eps), float("momentum", *momentum)])
            }
            Op::Relu => b.node("Relu", &name, ins, &out, vec![]),
            Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
                let op_type = if matches!(layer.op, Op::MaxPool { .. }) { "MaxPool" } else { "AveragePool" };
                let (k, s) = (*kernel as i64, *stride as i64);
                // Our pools keep only full windows: no padding, floor of the output size.
                let attributes = vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s]), ints("pads", &[0; 4]), int("ceil_mode", 0)];
                b.node(op_type, &name, ins, &out, attributes)
            }
            Op::GlobalAvgPool => {
                // GlobalAveragePool keeps [N, C, 1, 1]; our layer gives [N, C].
                let pooled = b.node("GlobalAveragePool", &name, ins, &format!("{out}_nc11"), vec![]);
                b.node("Flatten", &format!("{name}_flatten"), vec![pooled], &out, vec![int("axis", 1)])
            }
            Op::Dense { bias, .. } => {
                let mut node_inputs = vec![ins[0].clone(), b.weight(layer, &name, "kernel")];
                if *bias {
                    node_inputs.push(b.weight(layer, &name, "bias"));
                }
                b.node("Gemm", &name, node_inputs, &out, vec![])
            }
            Op::Dropout { .. } => ins[0].clone(),
            Op::Flatten => b.node("Flatten", &name, ins, &out, vec![int("axis", 1)]),
            Op::Add => {
                // A chain of binary adds in input order, as the reference sums.
                let mut sum = ins[0].clone();
                for (i, term) in ins.iter().enumerate().skip(1) {
                    let partial = if i + 1 == ins.len() { out.clone() } else { format!("{out}_partial{i}") };
                    sum = b.node("Add", &format!("{name}_{i}"), vec![sum, term.clone()], &partial, vec![]);
                }
                sum
            }
            Op::Concat => b.node("Concat", &name, ins, &out, vec![int("axis", 1)]),
            Op::Softmax => b.node("Softmax", &name, ins, &out, vec![int("axis", 1)]),
        };
        tensors.insert(layer.id, tensor);
    }
    let mut result = tensors[&output.id].clone();
    if !shifts.is_empty() {
        let mean = if final_softmax.is_some() { OUTPUT_NAME } else { TEST_TIME_MEAN };
        result = b.average_copies(&result, shifts.len(), classes, mean);
    }
    if final_softmax.is_none() {
        b.node("Softmax", "probabilities_softmax", vec![result], OUTPUT_NAME, vec![int("axis", 1)]);
    }

    let input_dims: Vec<Dim> = std::iter::once(Dim::Batch).chain(graph.input_shape().iter().map(|&d| Dim::Fixed(d))).collect();
    let graph_proto = pb::GraphProto {
        name: Some("netmorph".into()),
        node: b.nodes,
        initializer: b.initializers,
        input: vec![value_info(INPUT_NAME, &input_dims, "pixel values divided by 255, NCHW")],
        output: vec![value_info(OUTPUT_NAME, &[Dim::Batch, Dim::Fixed(classes)], "class probabilities (softmax)")],
        ..Default::default()
    };
    let class_names_json = serde_json::to_string(&class_names).map_err(|e| Error::Other(format!("class names as JSON: {e}")))?;
    Ok(pb::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("netmorph".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!(
            "A netmorph graph of {} layers: pixels / 255 in, {classes} class probabilities out.",
            graph.layers().len()
        )),
        graph: Some(graph_proto),
        metadata_props: vec![
            entry(CLASS_NAMES_KEY, class_names_json),
            entry("producer", "netmorph".into()),
            entry("producer_version", env!("CARGO_PKG_VERSION").into()),
        ],
        ..Default::default()
    })
}

/// The name of the node, and of the tensor, that computes `layer`'s output in the exported model:
/// `{kind}_{id}` ("conv2d_3"). Exceptions: a dropout has no node (its output is its input's
/// tensor), and a softmax that ends the graph writes `probabilities`.
pub fn tensor_name(layer: &Layer) -> String {
    format!("{}_{}", layer.op.kind(), layer.id)
}

/// The softmax layer whose output is the graph's output (through any dropouts), if there is one.
fn ends_in_softmax(graph: &Graph) -> Option<LayerId> {
    let mut layer = graph.output();
    while matches!(layer.op, Op::Dropout { .. }) {
        layer = graph.layer(layer.inputs[0]);
    }
    matches!(layer.op, Op::Softmax).then_some(layer.id)
}

/// TensorFlow's "same" padding along one axis of `size`: the output is `ceil(size / stride)`, and
/// the odd extra pixel of padding goes after. Returns (before, after).
fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

fn layer_error(layer: &Layer, msg: String) -> Error {
    Error::Invalid(format!("cannot export the graph to ONNX: layer {} ({}): {msg}", layer.id, layer.op))
}

/// Nodes and initializers, in the order they are added (which is topological).
#[derive(Default)]
struct Builder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl Builder {
    /// Adds a node with one output and returns the output's name.
    fn node(&mut self, op_type: &str, name: &str, inputs: Vec<String>, output: &str, attribute: Vec<pb::AttributeProto>) -> String {
        self.nodes.push(pb::NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op_type.to_string()),
            domain: Some(String::new()),
            attribute,
            ..Default::default()
        });
        output.to_string()
    }

    /// Adds a float32 initializer and returns its name.
    fn constant(&mut self, name: String, dims: &[usize], data: &[f32]) -> String {
        self.initializers.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(pb::tensor_proto::DataType::Float as i32),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            name: Some(name.clone()),
            ..Default::default()
        });
        name
    }

    /// Adds an int64 initializer (shapes, pads, slice bounds) and returns its name.
    fn constant_i64(&mut self, name: String, data: &[i64]) -> String {
        self.initializers.push(pb::TensorProto {
            dims: vec![data.len() as i64],
            data_type: Some(pb::tensor_proto::DataType::Int64 as i32),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            name: Some(name.clone()),
            ..Default::default()
        });
        name
    }

    /// The model's input, or with test-time shifts its shifted copies stacked along the batch
    /// axis (copy `i` of every image in rows `i N .. (i + 1) N`).
    fn shifted_inputs(&mut self, graph: &Graph) -> String {
        let shifts = graph.test_time_shifts();
        if shifts.is_empty() {
            return INPUT_NAME.into();
        }
        let (h, w) = (graph.input_shape()[1] as i64, graph.input_shape()[2] as i64);
        let mut copies = Vec::with_capacity(shifts.len());
        for (i, &[dx, dy]) in shifts.iter().enumerate() {
            if [dx, dy] == [0, 0] {
                copies.push(INPUT_NAME.to_string());
                continue;
            }
            // out[y][x] = in[y - dy][x - dx]: zeros before (for positive shifts) or after (for
            // negative ones), then the frame's h x w window of the padded image.
            let (dx, dy) = (dx as i64, dy as i64);
            let pads = self.constant_i64(format!("shift{i}.pads"), &[0, 0, dy.max(0), dx.max(0), 0, 0, (-dy).max(0), (-dx).max(0)]);
            let padded = self.node("Pad", &format!("shift{i}_pad"), vec![INPUT_NAME.into(), pads], &format!("shift{i}_padded"), vec![]);
            let (top, left) = ((-dy).max(0), (-dx).max(0));
            let starts = self.constant_i64(format!("shift{i}.starts"), &[top, left]);
            let ends = self.constant_i64(format!("shift{i}.ends"), &[top + h, left + w]);
            let axes = self.constant_i64(format!("shift{i}.axes"), &[2, 3]);
            let inputs = vec![padded, starts, ends, axes];
            copies.push(self.node("Slice", &format!("shift{i}_slice"), inputs, &format!("shifted_input{i}"), vec![]));
        }
        self.node("Concat", "test_time_copies", copies, "shifted_inputs", vec![int("axis", 0)])
    }

    /// The mean over the `copies` stacked along the batch axis of `stacked` `[copies N, classes]`.
    fn average_copies(&mut self, stacked: &str, copies: usize, classes: usize, out: &str) -> String {
        let shape = self.constant_i64("test_time.shape".into(), &[copies as i64, -1, classes as i64]);
        let split = self.node("Reshape", "test_time_split", vec![stacked.into(), shape], "test_time_outputs", vec![]);
        self.node("ReduceMean", TEST_TIME_MEAN, vec![split], out, vec![ints("axes", &[0]), int("keepdims", 0)])
    }

    /// Adds one of `layer`'s weights (validated present) as an initializer.
    fn weight(&mut self, layer: &Layer, node: &str, param: &str) -> String {
        let t = layer.param(param);
        self.constant(format!("{node}.{param}"), &t.shape, &t.data)
    }

    /// The input normalised per channel if the graph says so; returns the tensor the input layer
    /// stands for (`out`, or the model's input itself).
    fn prepare_input(&mut self, graph: &Graph, out: &str) -> String {
        let source = self.shifted_inputs(graph);
        let Some(norm) = graph.input_normalization() else {
            return source;
        };
        // [1, c, 1, 1] (or [1, c] for a flat input) broadcasts over the batch and the pixels.
        let mut dims = vec![1; graph.input_shape().len() + 1];
        dims[1] = norm.mean.len();
        let mean = self.constant("normalization.mean".into(), &dims, &norm.mean);
        let std = self.constant("normalization.std".into(), &dims, &norm.std);
        let centred = self.node("Sub", "normalize_mean", vec![source, mean], "centred_input", vec![]);
        self.node("Div", "normalize_std", vec![centred, std], out, vec![])
    }
}

enum Dim {
    Batch,
    Fixed(usize),
}

fn value_info(name: &str, dims: &[Dim], doc: &str) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => Value::DimParam(BATCH_DIM.into()),
                Dim::Fixed(n) => Value::DimValue(*n as i64),
            }),
            ..Default::default()
        })
        .collect();
    let tensor =
        pb::type_proto::Tensor { elem_type: Some(pb::tensor_proto::DataType::Float as i32), shape: Some(pb::TensorShapeProto { dim }) };
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto { value: Some(pb::type_proto::Value::TensorType(tensor)), ..Default::default() }),
        doc_string: Some(doc.into()),
        ..Default::default()
    }
}

fn entry(key: &str, value: String) -> pb::StringStringEntryProto {
    pb::StringStringEntryProto { key: Some(key.into()), value: Some(value) }
}

fn attribute(name: &str, kind: pb::attribute_proto::AttributeType) -> pb::AttributeProto {
    pb::AttributeProto { name: Some(name.into()), r#type: Some(kind as i32), ..Default::default() }
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto { i: Some(value), ..attribute(name, pb::attribute_proto::AttributeType::Int) }
}

fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { ints: values.to_vec(), ..attribute(name, pb::attribute_proto::AttributeType::Ints) }
}

fn float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto { f: Some(value), ..attribute(name, pb::attribute_proto::AttributeType::Float) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        assert_eq!(same_padding(8, 3, 1), (1, 1));
        assert_eq!(same_padding(8, 4, 1), (1, 2));
        assert_eq!(same_padding(8, 3, 2), (0, 1));
        assert_eq!(same_padding(7, 3, 2), (1, 1));
        // A window smaller than the stride needs no padding.
        assert_eq!(same_padding(6, 1, 4), (0, 0));
    }
}
