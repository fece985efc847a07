//! Network morphisms: transformations of a graph, weights included, that leave its function (the
//! output in evaluation mode, on any input) unchanged. Each is a serialisable [`Morph`] record;
//! [`applicable`] lists the legal ones for a graph and [`apply`] performs one, returning a new graph.
//!
//! - **deeper**: after a main-path layer, an identity conv block (conv with centre tap 1, batch norm
//!   that is the identity on its running statistics, ReLU only where the input is already
//!   non-negative) or an identity dense block (dense, ReLU where allowed, dropout).
//! - **wider**: Net2Net. New units copy randomly chosen existing ones; each consumer divides the
//!   copied units' outgoing weights by their number of copies. Everything downstream whose shape
//!   follows the width (batch norm, pools, concats, flatten, dense after pooling) is adjusted, and
//!   layers added to the same tensor (residual branches) are widened with the same copies.
//! - **add skip** a -> b: a branch that repeats the spatial downsampling between a and b (pools as
//!   they are; a conv as a pool with its window and stride), then a zero 1x1 conv, added at b.
//! - **concat skip** a -> b: the same branch concatenated at b, then a 1x1 conv that passes b's
//!   channels through and gives the branch zero weight.
//!
//! With `noise > 0` the new weights get uniform noise (to break the symmetry of copied units):
//! amplitude `noise` for identity and zero weights, `noise * max|w|` for copied units.

pub mod distance;
mod wider;

pub use distance::{edit_distance, Descriptor};

use crate::error::{Error, Result};
use crate::graph::{Graph, HostTensor, LayerId, Op, Padding, BN_EPS, BN_MOMENTUM};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Kernel sizes a deeper conv block may use.
pub const DEEPER_CONV_KERNELS: [usize; 3] = [1, 3, 5];
/// Dropout rate of a deeper dense block (AutoKeras's `DENSE_DROPOUT_RATE`).
pub const DENSE_DROPOUT_RATE: f32 = 0.5;
/// Noise amplitude for searches: in the property tests each morphism with this noise changed the
/// output by at most about 1e-4 relative, and 20 of them by under 1e-3.
pub const DEFAULT_NOISE: f32 = 1e-5;
/// [`applicable`] lists no widening past this many units, nor dense blocks wider than this.
pub const MAX_WIDTH: usize = 4096;

/// What a deeper morphism inserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeeperKind {
    /// Conv `kernel`x`kernel` (odd), batch norm, ReLU where the input is non-negative.
    Conv { kernel: usize },
    /// Dense, ReLU where the input is non-negative, dropout.
    Dense,
}

/// One morphism, as a record that can be stored and replayed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Morph {
    Deeper { after: LayerId, kind: DeeperKind },
    Wider { layer: LayerId, n: usize },
    AddSkip { from: LayerId, to: LayerId },
    ConcatSkip { from: LayerId, to: LayerId },
}

impl Morph {
    /// Short name of the family ("deeper", "wider", "add_skip", "concat_skip").
    pub fn family(&self) -> &'static str {
        match self {
            Morph::Deeper { .. } => "deeper",
            Morph::Wider { .. } => "wider",
            Morph::AddSkip { .. } => "add_skip",
            Morph::ConcatSkip { .. } => "concat_skip",
        }
    }

    /// AutoKeras-style description with the widths read from `graph` (the graph it applies to):
    /// "to_deeper_model 33 Conv2d(256, 256, 5, 1)", "to_wider_model 34 128".
    pub fn describe(&self, graph: &Graph) -> String {
        let width = |id: LayerId| graph.shape_of(id).ok().and_then(|s| s.first().copied()).unwrap_or(0);
        match *self {
            Morph::Deeper { after, kind: DeeperKind::Conv { kernel } } => {
                let c = width(after);
                format!("to_deeper_model {after} Conv2d({c}, {c}, {kernel}, 1)")
            }
            Morph::Deeper { after, kind: DeeperKind::Dense } => {
                let c = width(after);
                format!("to_deeper_model {after} Dense({c}, {c})")
            }
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Morph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Morph::Deeper { after, kind: DeeperKind::Conv { kernel } } => write!(f, "to_deeper_model {after} Conv2d({kernel}x{kernel})"),
            Morph::Deeper { after, kind: DeeperKind::Dense } => write!(f, "to_deeper_model {after} Dense"),
            Morph::Wider { layer, n } => write!(f, "to_wider_model {layer} {n}"),
            Morph::AddSkip { from, to } => write!(f, "to_add_skip_model {from} {to}"),
            Morph::ConcatSkip { from, to } => write!(f, "to_concat_skip_model {from} {to}"),
        }
    }
}

/// Every morphism that can apply to `graph`. Widening doubles the layer, as AutoKeras did (up to
/// [`MAX_WIDTH`]); any `n > 0` is legal for the same layers. Deeper conv blocks come in each of
/// [`DEEPER_CONV_KERNELS`]; skips join any two main-path layers that output images.
pub fn applicable(graph: &Graph) -> Vec<Morph> {
    let Ok(shapes) = graph.infer_shapes() else { return vec![] };
    let main = graph.main_path();
    let output = graph.output().id;
    let mut out = vec![];
    for &after in &main {
        if after == output || matches!(graph.layer(after).op, Op::Softmax) {
            continue;
        }
        match shapes[&after].len() {
            3 => out.extend(DEEPER_CONV_KERNELS.iter().map(|&kernel| Morph::Deeper { after, kind: DeeperKind::Conv { kernel } })),
            // An identity dense layer has width^2 weights: none after a wide flatten.
            _ if shapes[&after][0] <= MAX_WIDTH => out.push(Morph::Deeper { after, kind: DeeperKind::Dense }),
            _ => {}
        }
    }
    for layer in graph.layers() {
        let width = match layer.op {
            Op::Conv2d { filters, .. } => filters,
            Op::Dense { units, .. } => units,
            _ => continue,
        };
        if 2 * width <= MAX_WIDTH && wider::plan(graph, &shapes, layer.id, &wider::probe_map(width)).is_ok() {
            out.push(Morph::Wider { layer: layer.id, n: width });
        }
    }
    for (i, &from) in main.iter().enumerate() {
        if shapes[&from].len() != 3 {
            continue;
        }
        for &to in &main[i + 1..] {
            if shapes[&to].len() == 3 {
                out.push(Morph::AddSkip { from, to });
                out.push(Morph::ConcatSkip { from, to });
            }
        }
    }
    out
}

/// Applies `morph` without noise: the output is unchanged up to f32 rounding.
pub fn apply<R: Rng + ?Sized>(graph: &Graph, morph: &Morph, rng: &mut R) -> Result<Graph> {
    apply_with_noise(graph, morph, 0.0, rng)
}

/// Applies `morph`, adding uniform noise of relative amplitude `noise` to the new weights.
///
/// A graph without any weights (an architecture, e.g. from [`Graph::from_json`]) is morphed
/// structurally: the result has the same architecture as with weights, and no weights.
pub fn apply_with_noise<R: Rng + ?Sized>(graph: &Graph, morph: &Morph, noise: f32, rng: &mut R) -> Result<Graph> {
    let weighted = !graph.is_architecture_only();
    if weighted {
        graph.validate()?;
    } else {
        graph.validate_architecture()?;
    }
    let mut result = match *morph {
        Morph::Deeper { after, kind } => deeper(graph, after, kind, noise, rng),
        Morph::Wider { layer, n } => wider::wider(graph, layer, n, noise, rng),
        Morph::AddSkip { from, to } => skip(graph, from, to, false, noise, rng),
        Morph::ConcatSkip { from, to } => skip(graph, from, to, true, noise, rng),
    }?;
    let check = if weighted {
        result.validate()
    } else {
        result = result.without_weights();
        result.validate_architecture()
    };
    check.map_err(|e| Error::Other(format!("{morph} produced an invalid graph (a bug): {e}")))?;
    Ok(result)
}

fn not_applicable(morph: impl fmt::Display, why: impl fmt::Display) -> Error {
    Error::Invalid(format!("{morph} does not apply: {why}"))
}

/// Layers whose output is known to be >= 0 on every input (a ReLU, or pooling, dropout, flatten,
/// concat or add of such outputs).
pub fn non_negative(graph: &Graph) -> HashMap<LayerId, bool> {
    let mut nn: HashMap<LayerId, bool> = HashMap::new();
    for layer in graph.layers() {
        let all_inputs = layer.inputs.iter().all(|i| nn[i]);
        let v = match layer.op {
            Op::Relu | Op::Softmax => true,
            Op::MaxPool { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool | Op::Dropout { .. } | Op::Flatten | Op::Add | Op::Concat => {
                all_inputs
            }
            _ => false,
        };
        nn.insert(layer.id, v);
    }
    nn
}

/// Uniform noise in [-amplitude/2, amplitude/2] added to each value.
fn add_noise<R: Rng + ?Sized>(values: &mut [f32], amplitude: f32, rng: &mut R) {
    if amplitude > 0.0 {
        values.iter_mut().for_each(|v| *v += rng.random_range(-0.5..0.5) * amplitude);
    }
}

fn params(list: Vec<(&str, HostTensor)>) -> BTreeMap<String, HostTensor> {
    list.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Batch norm that is the identity in evaluation mode: mean 0, variance 1, gamma sqrt(1 + eps).
fn identity_batch_norm(c: usize) -> (Op, BTreeMap<String, HostTensor>) {
    let gamma = (1.0f64 + BN_EPS as f64).sqrt() as f32;
    let p = params(vec![
        ("gamma", HostTensor::filled(vec![c], gamma)),
        ("beta", HostTensor::filled(vec![c], 0.0)),
        ("running_mean", HostTensor::filled(vec![c], 0.0)),
        ("running_var", HostTensor::filled(vec![c], 1.0)),
    ]);
    (Op::BatchNorm { momentum: BN_MOMENTUM, eps: BN_EPS }, p)
}

fn deeper<R: Rng + ?Sized>(graph: &Graph, after: LayerId, kind: DeeperKind, noise: f32, rng: &mut R) -> Result<Graph> {
    let morph = Morph::Deeper { after, kind };
    if !graph.contains(after) {
        return Err(not_applicable(&morph, format!("there is no layer {after}")));
    }
    if !graph.main_path().contains(&after) {
        return Err(not_applicable(&morph, format!("layer {after} is not on the main path")));
    }
    if after == graph.output().id {
        return Err(not_applicable(&morph, "nothing may follow the output layer"));
    }
    let shape = graph.shape_of(after)?;
    let relu = non_negative(graph)[&after];
    let mut g = graph.clone();
    let c = shape[0];
    let mut block: Vec<LayerId> = vec![];
    let mut push = |g: &mut Graph, op: Op, p: BTreeMap<String, HostTensor>| {
        let input = block.last().copied().unwrap_or(after);
        block.push(g.insert(op, &[input], p));
    };
    match kind {
        DeeperKind::Conv { kernel } => {
            if shape.len() != 3 {
                return Err(not_applicable(&morph, format!("layer {after} outputs {shape:?}, not an image")));
            }
            if kernel % 2 == 0 {
                return Err(not_applicable(&morph, format!("an identity {kernel}x{kernel} conv needs an odd kernel")));
            }
            // Centre tap 1 from channel i to channel i; 'same' padding keeps the image size.
            let mut w = HostTensor::filled(vec![c, c, kernel, kernel], 0.0);
            let centre = kernel / 2;
            for i in 0..c {
                w.data[((i * c + i) * kernel + centre) * kernel + centre] = 1.0;
            }
            add_noise(&mut w.data, noise, rng);
            let conv = Op::Conv2d { filters: c, kernel, stride: 1, padding: Padding::Same, bias: true };
            push(&mut g, conv, params(vec![("kernel", w), ("bias", HostTensor::filled(vec![c], 0.0))]));
            let (bn, p) = identity_batch_norm(c);
            push(&mut g, bn, p);
            if relu {
                push(&mut g, Op::Relu, BTreeMap::new());
            }
        }
        DeeperKind::Dense => {
            if shape.len() != 1 {
                return Err(not_applicable(&morph, format!("layer {after} outputs {shape:?}, not features")));
            }
            let mut w = HostTensor::filled(vec![c, c], 0.0);
            for i in 0..c {
                w.data[i * c + i] = 1.0;
            }
            add_noise(&mut w.data, noise, rng);
            push(&mut g, Op::Dense { units: c, bias: true }, params(vec![("kernel", w), ("bias", HostTensor::filled(vec![c], 0.0))]));
            if relu {
                push(&mut g, Op::Relu, BTreeMap::new());
            }
            push(&mut g, Op::Dropout { rate: DENSE_DROPOUT_RATE }, BTreeMap::new());
        }
    }
    g.redirect(after, *block.last().expect("a block"), &block);
    Ok(g)
}

/// The layers of the branch from `from` to `to` that mirror the main path's spatial
/// downsampling: pools as they are, convs as pools of the same window and stride.
fn downsampling_branch(graph: &Graph, main: &[LayerId], from: LayerId, to: LayerId) -> Vec<Op> {
    let start = main.iter().position(|&i| i == from).expect("on the main path") + 1;
    let end = main.iter().position(|&i| i == to).expect("on the main path");
    let mut ops = vec![];
    for &id in &main[start..=end] {
        match graph.layer(id).op {
            Op::MaxPool { kernel, stride } => ops.push(Op::MaxPool { kernel, stride }),
            Op::AvgPool { kernel, stride } => ops.push(Op::AvgPool { kernel, stride }),
            Op::Conv2d { kernel, stride, padding: Padding::Valid, .. } if kernel > 1 || stride > 1 => {
                ops.push(Op::AvgPool { kernel, stride })
            }
            // 'same' gives ceil(n / s), as does a 1x1 window with stride s.
            Op::Conv2d { stride, padding: Padding::Same, .. } if stride > 1 => ops.push(Op::AvgPool { kernel: 1, stride }),
            _ => {}
        }
    }
    ops
}

fn skip<R: Rng + ?Sized>(graph: &Graph, from: LayerId, to: LayerId, concat: bool, noise: f32, rng: &mut R) -> Result<Graph> {
    let morph = if concat { Morph::ConcatSkip { from, to } } else { Morph::AddSkip { from, to } };
    let main = graph.main_path();
    let (Some(i), Some(j)) = (main.iter().position(|&x| x == from), main.iter().position(|&x| x == to)) else {
        return Err(not_applicable(&morph, "both ends must be layers on the main path"));
    };
    if i >= j {
        return Err(not_applicable(&morph, format!("layer {to} does not come after layer {from}")));
    }
    let shapes = graph.infer_shapes()?;
    let (sa, sb) = (&shapes[&from], &shapes[&to]);
    if sa.len() != 3 || sb.len() != 3 {
        return Err(not_applicable(&morph, format!("both ends must output images, they output {sa:?} and {sb:?}")));
    }
    let (ca, cb) = (sa[0], sb[0]);
    let mut g = graph.clone();
    let mut branch = from;
    let mut new_layers = vec![];
    for op in downsampling_branch(graph, &main, from, to) {
        branch = g.insert(op, &[branch], BTreeMap::new());
        new_layers.push(branch);
    }
    let conv = |c_out| Op::Conv2d { filters: c_out, kernel: 1, stride: 1, padding: Padding::Valid, bias: true };
    let merged_end = if concat {
        let cat = g.insert(Op::Concat, &[to, branch], BTreeMap::new());
        // Output channel o reads main channel o with weight 1 and no branch channel.
        let mut w = HostTensor::filled(vec![cb, cb + ca, 1, 1], 0.0);
        for o in 0..cb {
            w.data[o * (cb + ca) + o] = 1.0;
        }
        for o in 0..cb {
            add_noise(&mut w.data[o * (cb + ca) + cb..(o + 1) * (cb + ca)], noise, rng);
        }
        let mix = g.insert(conv(cb), &[cat], params(vec![("kernel", w), ("bias", HostTensor::filled(vec![cb], 0.0))]));
        new_layers.extend([cat, mix]);
        mix
    } else {
        let mut w = HostTensor::filled(vec![cb, ca, 1, 1], 0.0);
        add_noise(&mut w.data, noise, rng);
        let zero = g.insert(conv(cb), &[branch], params(vec![("kernel", w), ("bias", HostTensor::filled(vec![cb], 0.0))]));
        let add = g.insert(Op::Add, &[to, zero], BTreeMap::new());
        new_layers.extend([zero, add]);
        add
    };
    g.redirect(to, merged_end, &new_layers);
    Ok(g)
}
