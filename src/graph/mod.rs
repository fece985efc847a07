//! Architecture graphs: a network as a DAG of layers that carries its own weights on the CPU.
//!
//! The graph is the single source of truth for an architecture and its weights (one f32 vector per
//! tensor), so morphisms are pure CPU transformations; [`Model`] uploads the weights
//! to train them and writes them back with `sync_to_graph`. Layers are kept in topological order:
//! the first is the input, the last is the output (logits). A layer's output tensor is named by the
//! layer's id; ids are stable across morphisms (new layers get fresh ids).
//!
//! The main path is the chain from the output back to the input through each layer's first input:
//! merge layers (add, concat) take the main path as input 0 and the skip branch after it.

pub mod cpu;
pub mod ensemble;
pub mod generators;
pub mod io;
pub mod model;

pub use generators::{CnnConfig, ResNetConfig, Sequential};
pub use model::Model;

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// A layer's id (and the id of its output tensor). Stable: morphisms never renumber layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LayerId(pub usize);

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Convolution padding, as in Keras: `Valid` keeps only full windows, `Same` pads so that the output
/// is `ceil(input / stride)` (TensorFlow's rule: the odd extra row or column goes after).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    Valid,
    Same,
}

/// What a layer computes. Shapes exclude the batch: images are `[c, h, w]`, features `[n]`.
/// Kernels and pooling windows are square.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// The network's input: pixels scaled to [0, 1], then, with `normalization`, shifted and
    /// scaled per channel (so a saved or exported model takes the same input as the data set).
    Input {
        shape: Vec<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        normalization: Option<ChannelNorm>,
        /// Test-time augmentation: in evaluation the graph's output is the mean of its outputs
        /// for the input moved by each `[dx, dy]` (pixels, right and down for positive values,
        /// zero fill, before the normalisation). Empty: the input as it is. Training ignores it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        test_time_shifts: Vec<[i32; 2]>,
    },
    Conv2d {
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        bias: bool,
    },
    BatchNorm {
        momentum: f32,
        eps: f32,
    },
    Relu,
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
    },
    GlobalAvgPool,
    Dense {
        units: usize,
        bias: bool,
    },
    Dropout {
        rate: f32,
    },
    Flatten,
    Add,
    Concat,
    Softmax,
}

/// Per-channel normalisation of the input: channel `c` becomes `(x - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelNorm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ChannelNorm {
    /// Each channel's mean and standard deviation over NCHW `images` of `channels` planes of
    /// `plane` pixels each, bytes times `scale`; a constant channel gets a deviation of 1, not 0.
    pub fn of_images(images: &[u8], channels: usize, plane: usize, scale: f32) -> ChannelNorm {
        let mut sum = vec![0.0f64; channels];
        let mut sq = vec![0.0f64; channels];
        if channels > 0 && plane > 0 {
            for (i, chunk) in images.chunks(plane).enumerate() {
                let c = i % channels;
                for &b in chunk {
                    let v = b as f64;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
        }
        let count = (images.len() / channels.max(1)).max(1) as f64;
        let scale = scale as f64;
        let (mut mean, mut std) = (Vec::with_capacity(channels), Vec::with_capacity(channels));
        for c in 0..channels {
            let m = sum[c] / count;
            let s = (sq[c] / count - m * m).max(0.0).sqrt() * scale;
            mean.push((m * scale) as f32);
            std.push(if s > 1e-6 { s as f32 } else { 1.0 });
        }
        ChannelNorm { mean, std }
    }

    /// Checks that there is one positive, finite deviation and one finite mean per channel.
    fn check(&self, channels: usize) -> std::result::Result<(), String> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(format!("normalization has {} means and {} deviations for {channels} channels", self.mean.len(), self.std.len()));
        }
        if let Some(bad) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("normalization mean {bad} is not finite"));
        }
        if let Some(bad) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("normalization deviation {bad} must be positive and finite"));
        }
        Ok(())
    }
}

/// The most shifted copies test-time augmentation may average (a 7x7 square of shifts is 49).
pub const MAX_TEST_TIME_SHIFTS: usize = 64;

/// Checks test-time shifts against the input: an image input, each shift within the frame, none
/// listed twice, at most [`MAX_TEST_TIME_SHIFTS`].
fn check_test_time_shifts(shape: &[usize], shifts: &[[i32; 2]]) -> std::result::Result<(), String> {
    if shifts.is_empty() {
        return Ok(());
    }
    let &[_, h, w] = shape else {
        return Err(format!("test-time shifts need an image input [c, h, w], not {shape:?}"));
    };
    if shifts.len() > MAX_TEST_TIME_SHIFTS {
        return Err(format!("{} test-time shifts, more than the {MAX_TEST_TIME_SHIFTS} allowed", shifts.len()));
    }
    for (i, &[dx, dy]) in shifts.iter().enumerate() {
        if dx.unsigned_abs() as usize >= w || dy.unsigned_abs() as usize >= h {
            return Err(format!("test-time shift [{dx}, {dy}] moves a {h}x{w} image out of its frame"));
        }
        if shifts[..i].contains(&[dx, dy]) {
            return Err(format!("test-time shift [{dx}, {dy}] is listed twice"));
        }
    }
    Ok(())
}

/// Keras defaults for batch normalisation.
pub const BN_MOMENTUM: f32 = 0.99;
pub const BN_EPS: f32 = 1e-3;

/// The most values one tensor (a weight, or one sample's activation) may hold: 2^30 f32, 4 GiB,
/// about the largest storage binding a wgpu device offers. Checked by [`Graph::infer_shapes`], so
/// an architecture read from a file cannot declare sizes that wrap or allocate without bound.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 30;
/// The most weights a whole graph may hold (8 GiB of f32).
pub const MAX_GRAPH_PARAMS: usize = 1 << 31;

/// The number of elements of `shape`, or `None` when it overflows.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Checks a layer's output and weights against [`MAX_TENSOR_ELEMENTS`] and adds its weights to
/// `total_params`, against [`MAX_GRAPH_PARAMS`].
fn check_sizes(op: &Op, input: &[usize], output: &[usize], total_params: usize) -> std::result::Result<usize, String> {
    let too_large = |what: String| format!("{what} is too large (more than {MAX_TENSOR_ELEMENTS} values)");
    if element_count(output).is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
        return Err(too_large(format!("output {output:?}")));
    }
    let mut total = total_params;
    for spec in op.param_specs(input) {
        let n = element_count(&spec.shape)
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| too_large(format!("weight `{}` {:?}", spec.name, spec.shape)))?;
        total = total
            .checked_add(n)
            .filter(|&t| t <= MAX_GRAPH_PARAMS)
            .ok_or_else(|| format!("the graph's weights exceed {MAX_GRAPH_PARAMS} values"))?;
    }
    Ok(total)
}

/// A weight tensor as it lives in the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> HostTensor {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "HostTensor {shape:?} with {} values", data.len());
        HostTensor { shape, data }
    }
    pub fn filled(shape: Vec<usize>, value: f32) -> HostTensor {
        let n = shape.iter().product();
        HostTensor { shape, data: vec![value; n] }
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }
}

/// The weights a layer needs, given its input shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub shape: Vec<usize>,
    /// Trained by the optimizer; batch norm's running statistics are not (Keras counts them as
    /// non-trainable parameters).
    pub trainable: bool,
}

impl Op {
    /// Short lower-case name of the layer type ("conv2d", "batch_norm", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::MaxPool { .. } => "max_pool",
            Op::AvgPool { .. } => "avg_pool",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Dense { .. } => "dense",
            Op::Dropout { .. } => "dropout",
            Op::Flatten => "flatten",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Softmax => "softmax",
        }
    }

    /// The weights of this layer for a given (first) input shape, in a fixed order.
    pub fn param_specs(&self, input: &[usize]) -> Vec<ParamSpec> {
        let p = |name, shape: Vec<usize>, trainable| ParamSpec { name, shape, trainable };
        match *self {
            Op::Conv2d { filters, kernel, bias, .. } => {
                let mut v = vec![p("kernel", vec![filters, input[0], kernel, kernel], true)];
                if bias {
                    v.push(p("bias", vec![filters], true));
                }
                v
            }
            Op::Dense { units, bias } => {
                let mut v = vec![p("kernel", vec![input[0], units], true)];
                if bias {
                    v.push(p("bias", vec![units], true));
                }
                v
            }
            Op::BatchNorm { .. } => {
                let c = vec![input[0]];
                vec![
                    p("gamma", c.clone(), true),
                    p("beta", c.clone(), true),
                    p("running_mean", c.clone(), false),
                    p("running_var", c, false),
                ]
            }
            _ => vec![],
        }
    }

    /// Output shape from the input shapes, or a message saying why they do not fit.
    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let arity = match self {
            Op::Input { .. } => 0,
            Op::Add | Op::Concat => usize::MAX,
            _ => 1,
        };
        if arity == usize::MAX {
            if inputs.len() < 2 {
                return Err(format!("needs at least two inputs, has {}", inputs.len()));
            }
        } else if inputs.len() != arity {
            return Err(format!("needs {arity} input(s), has {}", inputs.len()));
        }
        let image = |what: &str| -> std::result::Result<[usize; 3], String> {
            match inputs[0] {
                &[c, h, w] => Ok([c, h, w]),
                s => Err(format!("{what} needs an image input [c, h, w], got {s:?}")),
            }
        };
        let window = |size: usize, k: usize, s: usize| -> std::result::Result<usize, String> {
            if k == 0 || s == 0 {
                return Err(format!("kernel {k} and stride {s} must be positive"));
            }
            if size < k {
                return Err(format!("input {:?} is smaller than the {k}x{k} window", inputs[0]));
            }
            Ok((size - k) / s + 1)
        };
        match self {
            Op::Input { shape, normalization, test_time_shifts } => {
                if shape.is_empty() || shape.contains(&0) || !(shape.len() == 1 || shape.len() == 3) {
                    return Err(format!("input shape {shape:?} must be [c, h, w] or [features], all positive"));
                }
                if let Some(norm) = normalization {
                    norm.check(shape[0])?;
                }
                check_test_time_shifts(shape, test_time_shifts)?;
                Ok(shape.clone())
            }
            Op::Conv2d { filters, kernel, stride, padding, .. } => {
                let [_, h, w] = image("conv2d")?;
                if *filters == 0 {
                    return Err("needs at least one filter".into());
                }
                match padding {
                    Padding::Valid => Ok(vec![*filters, window(h, *kernel, *stride)?, window(w, *kernel, *stride)?]),
                    Padding::Same => {
                        if *kernel == 0 || *stride == 0 {
                            return Err(format!("kernel {kernel} and stride {stride} must be positive"));
                        }
                        Ok(vec![*filters, h.div_ceil(*stride), w.div_ceil(*stride)])
                    }
                }
            }
            Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
                let [c, h, w] = image(self.kind())?;
                Ok(vec![c, window(h, *kernel, *stride)?, window(w, *kernel, *stride)?])
            }
            Op::GlobalAvgPool => Ok(vec![image("global_avg_pool")?[0]]),
            Op::Dense { units, .. } => {
                if inputs[0].len() != 1 {
                    return Err(format!("needs flat input [features], got {:?}: add a flatten or global_avg_pool before it", inputs[0]));
                }
                if *units == 0 {
                    return Err("needs at least one unit".into());
                }
                Ok(vec![*units])
            }
            Op::Flatten => Ok(vec![element_count(inputs[0]).ok_or_else(|| format!("input {:?} overflows when flattened", inputs[0]))?]),
            Op::Softmax => {
                if inputs[0].len() != 1 {
                    return Err(format!("needs flat input [features], got {:?}", inputs[0]));
                }
                Ok(inputs[0].to_vec())
            }
            Op::Dropout { rate } => {
                if !(0.0..1.0).contains(rate) {
                    return Err(format!("rate {rate} must be in [0, 1)"));
                }
                Ok(inputs[0].to_vec())
            }
            Op::BatchNorm { eps, .. } => {
                if *eps <= 0.0 {
                    return Err(format!("eps {eps} must be positive"));
                }
                Ok(inputs[0].to_vec())
            }
            Op::Relu => Ok(inputs[0].to_vec()),
            Op::Add => {
                if let Some(s) = inputs.iter().find(|s| **s != inputs[0]) {
                    return Err(format!("input shapes differ: {:?} and {s:?}", inputs[0]));
                }
                Ok(inputs[0].to_vec())
            }
            Op::Concat => {
                let rest = &inputs[0][1..];
                if let Some(s) = inputs.iter().find(|s| s.len() != inputs[0].len() || &s[1..] != rest) {
                    return Err(format!("inputs must agree on all but the channel axis: {:?} and {s:?}", inputs[0]));
                }
                let mut out = inputs[0].to_vec();
                out[0] =
                    inputs.iter().try_fold(0usize, |sum, s| sum.checked_add(s[0])).ok_or("channel counts overflow when concatenated")?;
                Ok(out)
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Conv2d { filters, kernel, stride, padding, .. } => {
                write!(f, "conv2d {filters} {kernel}x{kernel}/{stride} {}", if *padding == Padding::Same { "same" } else { "valid" })
            }
            Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => write!(f, "{} {kernel}x{kernel}/{stride}", self.kind()),
            Op::Dense { units, .. } => write!(f, "dense {units}"),
            Op::Dropout { rate } => write!(f, "dropout {rate}"),
            _ => write!(f, "{}", self.kind()),
        }
    }
}

/// One layer: what it computes, which layers feed it, and its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub id: LayerId,
    pub op: Op,
    pub inputs: Vec<LayerId>,
    pub params: BTreeMap<String, HostTensor>,
}

impl Layer {
    pub fn param(&self, name: &str) -> &HostTensor {
        self.params.get(name).unwrap_or_else(|| panic!("layer {} ({}) has no `{name}`", self.id, self.op))
    }
    pub fn param_mut(&mut self, name: &str) -> &mut HostTensor {
        let (id, kind) = (self.id, self.op.kind());
        self.params.get_mut(name).unwrap_or_else(|| panic!("layer {id} ({kind}) has no `{name}`"))
    }
}

/// A network: layers in topological order, the first the input and the last the output.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    layers: Vec<Layer>,
    next_id: usize,
    /// What each output means, for people and exported models; morphisms keep it.
    class_names: Vec<String>,
}

impl Graph {
    /// A graph holding only its input layer (id 0). Add layers with [`Graph::push`].
    pub fn new(input_shape: &[usize]) -> Graph {
        let op = Op::Input { shape: input_shape.to_vec(), normalization: None, test_time_shifts: vec![] };
        let input = Layer { id: LayerId(0), op, inputs: vec![], params: BTreeMap::new() };
        Graph { layers: vec![input], next_id: 1, class_names: vec![] }
    }

    /// Appends a layer (without weights: see [`Graph::init_weights`]) and returns its id.
    pub fn push(&mut self, op: Op, inputs: &[LayerId]) -> LayerId {
        let id = self.fresh_id();
        self.layers.push(Layer { id, op, inputs: inputs.to_vec(), params: BTreeMap::new() });
        id
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    pub fn input(&self) -> &Layer {
        &self.layers[0]
    }
    pub fn output(&self) -> &Layer {
        self.layers.last().expect("a graph has an input layer")
    }
    pub fn input_shape(&self) -> &[usize] {
        match &self.layers[0].op {
            Op::Input { shape, .. } => shape,
            op => panic!("first layer is {op}, not the input"),
        }
    }
    /// The input's per-channel normalisation, if any.
    pub fn input_normalization(&self) -> Option<&ChannelNorm> {
        match &self.layers[0].op {
            Op::Input { normalization, .. } => normalization.as_ref(),
            _ => None,
        }
    }
    /// Sets (or, with `None`, removes) the input's per-channel normalisation.
    pub fn set_input_normalization(&mut self, norm: Option<ChannelNorm>) -> Result<()> {
        let Op::Input { shape, normalization, .. } = &mut self.layers[0].op else {
            return Err(Error::Invalid("the graph's first layer is not its input".into()));
        };
        if let Some(n) = &norm {
            n.check(shape[0]).map_err(|msg| Error::shape("graph input", msg))?;
        }
        *normalization = norm;
        Ok(())
    }
    /// The shifts whose outputs evaluation averages (test-time augmentation; empty: none).
    pub fn test_time_shifts(&self) -> &[[i32; 2]] {
        match &self.layers[0].op {
            Op::Input { test_time_shifts, .. } => test_time_shifts,
            _ => &[],
        }
    }
    /// Sets the test-time shifts (empty: evaluate the input as it is). Each `[dx, dy]` moves the
    /// image right and down by whole pixels, and must leave some of it in the frame.
    pub fn set_test_time_shifts(&mut self, shifts: Vec<[i32; 2]>) -> Result<()> {
        let Op::Input { shape, test_time_shifts, .. } = &mut self.layers[0].op else {
            return Err(Error::Invalid("the graph's first layer is not its input".into()));
        };
        check_test_time_shifts(shape, &shifts).map_err(|msg| Error::shape("graph input", msg))?;
        *test_time_shifts = shifts;
        Ok(())
    }
    /// The names of the output classes, in output order (empty: unnamed).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
    /// Names the output classes; there must be one name per output.
    pub fn set_class_names(&mut self, names: Vec<String>) -> Result<()> {
        let out = self.shape_of(self.output().id)?;
        if !names.is_empty() && out != [names.len()] {
            return Err(Error::shape("graph", format!("{} class names for an output of shape {out:?}", names.len())));
        }
        self.class_names = names;
        Ok(())
    }
    pub fn position(&self, id: LayerId) -> Option<usize> {
        self.layers.iter().position(|l| l.id == id)
    }
    pub fn contains(&self, id: LayerId) -> bool {
        self.position(id).is_some()
    }
    pub fn layer(&self, id: LayerId) -> &Layer {
        &self.layers[self.position(id).unwrap_or_else(|| panic!("no layer {id}"))]
    }
    pub fn layer_mut(&mut self, id: LayerId) -> &mut Layer {
        let pos = self.position(id).unwrap_or_else(|| panic!("no layer {id}"));
        &mut self.layers[pos]
    }
    /// Layers that take `id`'s output as an input, in order.
    pub fn consumers(&self, id: LayerId) -> Vec<LayerId> {
        self.layers.iter().filter(|l| l.inputs.contains(&id)).map(|l| l.id).collect()
    }

    /// The chain from the input to the output through each layer's first input.
    pub fn main_path(&self) -> Vec<LayerId> {
        let mut path = vec![self.output().id];
        let mut cur = self.output();
        while let Some(&first) = cur.inputs.first() {
            path.push(first);
            cur = self.layer(first);
        }
        path.reverse();
        path
    }

    /// Output shape of every layer (batch excluded), checking that each layer's inputs fit.
    pub fn infer_shapes(&self) -> Result<HashMap<LayerId, Vec<usize>>> {
        let mut shapes: HashMap<LayerId, Vec<usize>> = HashMap::new();
        let mut total_params = 0usize;
        for layer in &self.layers {
            let ins: Vec<&[usize]> = layer
                .inputs
                .iter()
                .map(|i| shapes.get(i).map(|s| s.as_slice()).ok_or_else(|| self.err(layer, format!("input {i} is not an earlier layer"))))
                .collect::<Result<_>>()?;
            let out = layer.op.output_shape(&ins).map_err(|msg| {
                let given: Vec<String> = layer.inputs.iter().zip(&ins).map(|(i, s)| format!("{s:?} from layer {i}")).collect();
                self.err(layer, format!("{msg} (inputs: {})", if given.is_empty() { "none".into() } else { given.join(", ") }))
            })?;
            let first_input = ins.first().copied().unwrap_or_default();
            total_params = check_sizes(&layer.op, first_input, &out, total_params).map_err(|msg| self.err(layer, msg))?;
            shapes.insert(layer.id, out);
        }
        Ok(shapes)
    }

    /// Values per image of the largest layer output (the input included).
    pub fn largest_activation_values(&self) -> Result<usize> {
        Ok(self.infer_shapes()?.values().map(|shape| shape.iter().product::<usize>()).max().unwrap_or(0))
    }

    /// Output shape of one layer.
    pub fn shape_of(&self, id: LayerId) -> Result<Vec<usize>> {
        let mut shapes = self.infer_shapes()?;
        shapes.remove(&id).ok_or_else(|| Error::Invalid(format!("no layer {id}")))
    }

    /// Shape of the first input of `id` (what its weights are sized by).
    pub(crate) fn input_shape_of(&self, shapes: &HashMap<LayerId, Vec<usize>>, id: LayerId) -> Vec<usize> {
        self.layer(id).inputs.first().map(|i| shapes[i].clone()).unwrap_or_default()
    }

    /// Checks structure (ids, order, arity, one input, one output, every layer used), shapes and
    /// weights (each layer holds exactly the tensors of its shapes).
    pub fn validate(&self) -> Result<()> {
        self.validate_architecture()?;
        self.validate_weights()
    }

    /// Checks structure and shapes only (an architecture read without weights).
    pub fn validate_architecture(&self) -> Result<()> {
        let first = &self.layers[0];
        if !matches!(first.op, Op::Input { .. }) || first.id != LayerId(0) {
            return Err(self.err(first, "the first layer must be the input, with id 0".into()));
        }
        let mut seen = HashSet::new();
        for layer in &self.layers {
            if !seen.insert(layer.id) {
                return Err(self.err(layer, "duplicate layer id".into()));
            }
            if layer.id.0 >= self.next_id {
                return Err(self.err(layer, format!("id is not below the next free id {}", self.next_id)));
            }
            if matches!(layer.op, Op::Input { .. }) && layer.id != LayerId(0) {
                return Err(self.err(layer, "only the first layer may be an input".into()));
            }
        }
        self.infer_shapes()?;
        let output = self.output().id;
        for layer in &self.layers {
            if layer.id != output && self.consumers(layer.id).is_empty() {
                return Err(self.err(layer, "its output is never used (only the last layer may be the output)".into()));
            }
        }
        Ok(())
    }

    /// Checks that each layer holds exactly the weight tensors its shapes call for.
    pub fn validate_weights(&self) -> Result<()> {
        let shapes = self.infer_shapes()?;
        for layer in &self.layers {
            let specs = layer.op.param_specs(&self.input_shape_of(&shapes, layer.id));
            for spec in &specs {
                match layer.params.get(spec.name) {
                    None => return Err(self.err(layer, format!("missing weight `{}` {:?}", spec.name, spec.shape))),
                    Some(t) if t.shape != spec.shape || t.data.len() != t.shape.iter().product::<usize>() => {
                        return Err(self.err(layer, format!("weight `{}` is {:?}, expected {:?}", spec.name, t.shape, spec.shape)))
                    }
                    _ => {}
                }
            }
            if let Some(extra) = layer.params.keys().find(|k| !specs.iter().any(|s| s.name == k.as_str())) {
                return Err(self.err(layer, format!("unexpected weight `{extra}`")));
            }
        }
        Ok(())
    }

    /// Gives every layer that lacks weights its initial weights: Glorot uniform kernels, zero biases,
    /// batch norm as the identity of fresh statistics (Keras defaults). Each layer's values depend
    /// only on `seed` and its id.
    pub fn init_weights(&mut self, seed: u64) -> Result<()> {
        let shapes = self.infer_shapes()?;
        for pos in 0..self.layers.len() {
            let id = self.layers[pos].id;
            let specs = self.layers[pos].op.param_specs(&self.input_shape_of(&shapes, id));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (id.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let layer = &mut self.layers[pos];
            for spec in specs {
                if layer.params.contains_key(spec.name) {
                    continue;
                }
                let t = match spec.name {
                    "kernel" => glorot_uniform(&spec.shape, &mut rng),
                    "gamma" | "running_var" => HostTensor::filled(spec.shape, 1.0),
                    _ => HostTensor::filled(spec.shape, 0.0),
                };
                layer.params.insert(spec.name.to_string(), t);
            }
        }
        Ok(())
    }

    /// Sets every weight and statistic to random values (kernels scaled by their fan-in, gammas
    /// near 1, positive variances), so that tests cannot pass by identity batch norms or zero biases.
    pub fn randomize_weights(&mut self, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        self.for_each_param_mut(|_, name, t| {
            let fan_in = if t.shape.len() == 4 { t.shape[1..].iter().product() } else { t.shape[0] } as f32;
            for v in &mut t.data {
                *v = match name {
                    "kernel" => rng.random_range(-1.0..1.0) * (3.0 / fan_in).sqrt(),
                    "running_var" => rng.random_range(0.5..2.0),
                    "gamma" => rng.random_range(0.5..1.5),
                    _ => rng.random_range(-0.5..0.5),
                };
            }
        });
    }

    /// True when no layer holds weights (an architecture read from JSON, or stripped).
    pub fn is_architecture_only(&self) -> bool {
        self.layers.iter().all(|l| l.params.is_empty())
    }

    /// The same architecture without weights (cheap to clone, morph and compare).
    pub fn without_weights(&self) -> Graph {
        let mut g = self.clone();
        g.layers.iter_mut().for_each(|l| l.params.clear());
        g
    }

    /// Number of (trainable, non-trainable) weights.
    pub fn param_counts(&self) -> Result<(usize, usize)> {
        let shapes = self.infer_shapes()?;
        let (mut trainable, mut fixed) = (0, 0);
        for layer in &self.layers {
            for spec in layer.op.param_specs(&self.input_shape_of(&shapes, layer.id)) {
                let n: usize = spec.shape.iter().product();
                if spec.trainable {
                    trainable += n;
                } else {
                    fixed += n;
                }
            }
        }
        Ok((trainable, fixed))
    }

    /// Every weight tensor with its layer, in layer order then [`Op::param_specs`] order.
    pub fn params(&self) -> Vec<(LayerId, &str, &HostTensor)> {
        const ORDER: [&str; 6] = ["kernel", "bias", "gamma", "beta", "running_mean", "running_var"];
        let rank = |name: &str| ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len());
        let mut out = vec![];
        for layer in &self.layers {
            let mut params: Vec<(&String, &HostTensor)> = layer.params.iter().collect();
            params.sort_by_key(|(name, _)| rank(name));
            out.extend(params.into_iter().map(|(name, t)| (layer.id, name.as_str(), t)));
        }
        out
    }

    /// Visits every weight tensor mutably (tests randomise weights and statistics with this).
    pub fn for_each_param_mut(&mut self, mut f: impl FnMut(LayerId, &str, &mut HostTensor)) {
        for layer in &mut self.layers {
            for (name, t) in layer.params.iter_mut() {
                f(layer.id, name, t);
            }
        }
    }

    /// A text table like Keras's `model.summary()`: layer, output shape, parameters, inputs.
    pub fn summary(&self) -> Result<String> {
        let shapes = self.infer_shapes()?;
        let main: HashSet<LayerId> = self.main_path().into_iter().collect();
        let mut rows = vec![];
        for layer in &self.layers {
            let n: usize =
                layer.op.param_specs(&self.input_shape_of(&shapes, layer.id)).iter().map(|s| s.shape.iter().product::<usize>()).sum();
            let inputs: Vec<String> = layer.inputs.iter().map(|i| i.to_string()).collect();
            let name = format!("{}{} {}", layer.id, if main.contains(&layer.id) { "" } else { "*" }, layer.op);
            rows.push([name, format!("{:?}", shapes[&layer.id]), n.to_string(), inputs.join(", ")]);
        }
        let header = ["Layer (type)", "Output shape", "Param #", "Inputs"];
        let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].len()).chain([header[c].len()]).max().unwrap_or(0)).collect();
        let line = |r: [&str; 4]| {
            format!("{:<w0$}  {:<w1$}  {:>w2$}  {}\n", r[0], r[1], r[2], r[3], w0 = widths[0], w1 = widths[1], w2 = widths[2])
        };
        let total_width = widths.iter().sum::<usize>() + 6;
        let mut s = line(header);
        s += &format!("{}\n", "=".repeat(total_width));
        for r in &rows {
            s += &line([&r[0], &r[1], &r[2], &r[3]]);
        }
        let (trainable, fixed) = self.param_counts()?;
        s += &format!("{}\n", "=".repeat(total_width));
        s += &format!("Total params: {}\nTrainable params: {trainable}\nNon-trainable params: {fixed}\n", trainable + fixed);
        s += "(* = off the main path)\n";
        Ok(s)
    }

    // --- editing, for morphisms ---

    pub(crate) fn fresh_id(&mut self) -> LayerId {
        let id = LayerId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Inserts a layer right after the latest of its inputs (keeping the order topological) and
    /// returns its id.
    pub(crate) fn insert(&mut self, op: Op, inputs: &[LayerId], params: BTreeMap<String, HostTensor>) -> LayerId {
        let pos = inputs.iter().map(|&i| self.position(i).expect("input exists")).max().expect("a layer with inputs") + 1;
        let id = self.fresh_id();
        self.layers.insert(pos, Layer { id, op, inputs: inputs.to_vec(), params });
        id
    }

    /// Makes every layer that reads `from` read `to` instead, except `to` itself and `keep`.
    pub(crate) fn redirect(&mut self, from: LayerId, to: LayerId, keep: &[LayerId]) {
        for layer in &mut self.layers {
            if layer.id == to || keep.contains(&layer.id) {
                continue;
            }
            for i in &mut layer.inputs {
                if *i == from {
                    *i = to;
                }
            }
        }
    }

    pub(crate) fn next_id(&self) -> usize {
        self.next_id
    }

    pub(crate) fn from_parts(layers: Vec<Layer>, next_id: usize) -> Graph {
        Graph { layers, next_id, class_names: vec![] }
    }

    fn err(&self, layer: &Layer, msg: String) -> Error {
        Error::shape("graph", format!("layer {} ({}): {msg}", layer.id, layer.op))
    }
}

/// Glorot (Xavier) uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)); for a conv kernel
/// `[c_out, c_in, k, k]` the fans include the receptive field, for a dense kernel `[in, out]` they
/// are the two dimensions.
pub fn glorot_uniform<R: Rng + ?Sized>(shape: &[usize], rng: &mut R) -> HostTensor {
    let (fan_in, fan_out) = match *shape {
        [c_out, c_in, kh, kw] => (c_in * kh * kw, c_out * kh * kw),
        [n_in, n_out] => (n_in, n_out),
        _ => panic!("glorot_uniform: unsupported kernel shape {shape:?}"),
    };
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let n = shape.iter().product();
    HostTensor::new(shape.to_vec(), (0..n).map(|_| rng.random_range(-limit..limit)).collect())
}
