//! A graph built on the engine: its weights uploaded to device tensors, a forward pass through the
//! tape (so backward comes for free), and the weights written back to the graph after training.
//! [`Model`] implements [`Network`], so `train::fit` trains it.

use super::{Graph, LayerId, Op};
use crate::autograd::{Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::batch_norm::BatchNormConfig;
use crate::ops::conv2d::{self, Conv2dConfig};
use crate::ops::pool::Pool2dConfig;
use crate::tensor::Tensor;
use crate::train::Network;
use std::collections::{BTreeMap, HashMap};

/// A trainable network made from a [`Graph`]. Batch norm's running statistics live on the device
/// and are updated by training forwards, like the trainable weights by the optimizer;
/// [`Model::sync_to_graph`] reads all of them back.
pub struct Model {
    graph: Graph,
    weights: HashMap<LayerId, BTreeMap<String, Tensor>>,
    /// Position of each layer's last consumer: activations are dropped after it.
    last_use: HashMap<LayerId, usize>,
    /// The input's normalisation as an evaluation-mode batch norm (gamma, beta, mean, variance).
    input_norm: Option<[Tensor; 4]>,
    /// Bytes per image of the largest activation (see [`Network::largest_tensor_bytes_per_image`]).
    largest_activation: u64,
}

impl Model {
    /// Uploads `graph`'s weights to `device`.
    pub fn new(graph: &Graph, device: &Device) -> Result<Model> {
        graph.validate()?;
        let mut weights = HashMap::new();
        for layer in graph.layers() {
            let mut tensors = BTreeMap::new();
            for (name, t) in &layer.params {
                tensors.insert(name.clone(), Tensor::from_slice(device, &t.data, &t.shape)?);
            }
            weights.insert(layer.id, tensors);
        }
        let mut last_use = HashMap::new();
        for (pos, layer) in graph.layers().iter().enumerate() {
            for &i in &layer.inputs {
                last_use.insert(i, pos);
            }
        }
        let input_norm = match graph.input_normalization() {
            None => None,
            Some(norm) => {
                // (x - mean) / sqrt(std^2 + eps) * gamma with gamma = sqrt(std^2 + eps) / std is
                // (x - mean) / std: batch norm's evaluation kernel, with no kernel of its own.
                let var: Vec<f32> = norm.std.iter().map(|s| s * s).collect();
                let gamma: Vec<f32> = norm.std.iter().map(|s| (s * s + INPUT_NORM_EPS).sqrt() / s).collect();
                let c = [norm.std.len()];
                Some([
                    Tensor::from_slice(device, &gamma, &c)?,
                    Tensor::zeros(device, &c)?,
                    Tensor::from_slice(device, &norm.mean, &c)?,
                    Tensor::from_slice(device, &var, &c)?,
                ])
            }
        };
        let largest_activation = graph.largest_activation_values()? as u64 * 4;
        Ok(Model { graph: graph.clone(), weights, last_use, input_norm, largest_activation })
    }

    /// The architecture (with the weights as they were when the model was built).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    fn weight(&self, id: LayerId, name: &str) -> &Tensor {
        &self.weights[&id][name]
    }

    /// Evaluation-mode logits for a batch, without recording anything.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let tape = Tape::no_grad();
        let xv = tape.constant(x.clone());
        Ok(self.forward(&tape, &xv, false, 0)?.value().clone())
    }

    /// Reads every weight and running statistic back from the device into `graph`, which must
    /// have this model's architecture (typically the graph the model was built from).
    pub fn sync_to_graph(&self, graph: &mut Graph) -> Result<()> {
        if graph.to_json() != self.graph.to_json() {
            return Err(Error::Invalid("sync_to_graph: the graph's architecture differs from the model's".into()));
        }
        for (id, tensors) in &self.weights {
            let layer = graph.layer_mut(*id);
            for (name, t) in tensors {
                layer.param_mut(name).data = t.to_vec()?;
            }
        }
        Ok(())
    }

    /// One pass through the layers (see [`Network::forward`]), for the input as it is.
    fn forward_once(&self, tape: &Tape, x: &Var, training: bool, seed: u64) -> Result<Var> {
        let n = x.shape()[0];
        let mut acts: HashMap<LayerId, Var> = HashMap::new();
        for (pos, layer) in self.graph.layers().iter().enumerate() {
            let ins: Vec<&Var> = layer.inputs.iter().map(|i| &acts[i]).collect();
            let param = |name: &str| tape.param(self.weight(layer.id, name));
            let bias = |has: bool| has.then(|| param("bias"));
            let y = match &layer.op {
                Op::Input { .. } => match &self.input_norm {
                    None => x.clone(),
                    Some([gamma, beta, mean, var]) => {
                        let cfg = BatchNormConfig { momentum: 0.0, eps: INPUT_NORM_EPS, training: false };
                        tape.batch_norm(x, &tape.constant(gamma.clone()), &tape.constant(beta.clone()), mean, var, cfg)?
                    }
                },
                Op::Conv2d { stride, padding, bias: b, .. } => {
                    let padding = match padding {
                        super::Padding::Valid => conv2d::Padding::Valid,
                        super::Padding::Same => conv2d::Padding::Same,
                    };
                    tape.conv2d(ins[0], &param("kernel"), bias(*b).as_ref(), Conv2dConfig { stride: *stride, padding })?
                }
                Op::BatchNorm { momentum, eps } => {
                    let cfg = BatchNormConfig { momentum: *momentum, eps: *eps, training };
                    let (mean, var) = (self.weight(layer.id, "running_mean"), self.weight(layer.id, "running_var"));
                    tape.batch_norm(ins[0], &param("gamma"), &param("beta"), mean, var, cfg)?
                }
                Op::Relu => tape.relu(ins[0])?,
                Op::MaxPool { kernel, stride } => tape.max_pool2d(ins[0], Pool2dConfig { kernel: *kernel, stride: *stride })?,
                Op::AvgPool { kernel, stride } => tape.avg_pool2d(ins[0], Pool2dConfig { kernel: *kernel, stride: *stride })?,
                Op::GlobalAvgPool => tape.global_avg_pool(ins[0])?,
                Op::Dense { bias: b, .. } => tape.dense(ins[0], &param("kernel"), bias(*b).as_ref())?,
                Op::Dropout { rate } => tape.dropout(ins[0], *rate, layer_seed(seed, layer.id), training)?,
                Op::Flatten => {
                    let features = ins[0].shape()[1..].iter().product();
                    tape.reshape(ins[0], &[n, features])?
                }
                Op::Add => {
                    let mut sum = tape.add(ins[0], ins[1])?;
                    for other in &ins[2..] {
                        sum = tape.add(&sum, other)?;
                    }
                    sum
                }
                Op::Concat => tape.concat_channels(&ins)?,
                Op::Softmax => {
                    if tape.is_recording() {
                        return Err(Error::Invalid(format!(
                            "layer {} (softmax) is for inference only: train on logits (the loss applies softmax), or use a no-grad tape",
                            layer.id
                        )));
                    }
                    tape.constant(crate::ops::softmax::softmax(ins[0].value())?)
                }
            };
            acts.insert(layer.id, y);
            // Free activations no later layer reads (the tape keeps what backward needs).
            acts.retain(|id, _| self.last_use.get(id).is_some_and(|&last| last > pos) || *id == layer.id);
        }
        Ok(acts.remove(&self.graph.output().id).expect("output computed"))
    }

    /// A copy of the architecture with the current device weights.
    pub fn to_graph(&self) -> Result<Graph> {
        let mut g = self.graph.clone();
        self.sync_to_graph(&mut g)?;
        Ok(g)
    }
}

impl Network for Model {
    /// The largest layer output (the input included): gradients, dropout masks, pooling indices
    /// and batch norm's temporaries have the size of an output or an input, and the convolutions'
    /// im2col matrices, larger, are cut into chunks by the convolution itself.
    fn largest_tensor_bytes_per_image(&self) -> Option<u64> {
        Some(self.largest_activation)
    }

    /// Logits `[n, classes]` for `x` `[n, ...input shape]`. In training, batch norm uses (and
    /// updates) batch statistics and dropout drops, with masks drawn from `seed` and the layer id.
    /// In evaluation, a graph with test-time shifts gives the mean of its logits for the input
    /// moved by each shift.
    fn forward(&self, tape: &Tape, x: &Var, training: bool, seed: u64) -> Result<Var> {
        if x.shape()[1..] != *self.graph.input_shape() {
            return Err(Error::shape(
                "model",
                format!("input {:?} does not match the graph's input [n, {:?}]", x.shape(), self.graph.input_shape()),
            ));
        }
        let shifts = self.graph.test_time_shifts();
        if training || shifts.is_empty() {
            return self.forward_once(tape, x, training, seed);
        }
        let mut sum: Option<Var> = None;
        for &by in shifts {
            let moved = if by == [0, 0] { x.clone() } else { tape.shift(x, by)? };
            let y = self.forward_once(tape, &moved, false, seed)?;
            sum = Some(match sum {
                None => y,
                Some(s) => tape.add(&s, &y)?,
            });
        }
        tape.scale(&sum.expect("at least one shift"), 1.0 / shifts.len() as f32)
    }

    /// The trainable weights (kernels, biases, gammas, betas) in the graph's weight order.
    fn parameters(&self) -> Vec<Tensor> {
        let shapes = self.graph.infer_shapes().expect("validated graph");
        let mut out = vec![];
        for layer in self.graph.layers() {
            for spec in layer.op.param_specs(&self.graph.input_shape_of(&shapes, layer.id)) {
                if spec.trainable {
                    out.push(self.weight(layer.id, spec.name).clone());
                }
            }
        }
        out
    }

    /// Every weight, batch norm's running statistics included.
    fn state(&self) -> Vec<Tensor> {
        self.graph.layers().iter().flat_map(|l| self.weights[&l.id].values().cloned()).collect()
    }
}

/// Batch norm's epsilon where it applies the input normalisation (any positive value: gamma
/// cancels it).
const INPUT_NORM_EPS: f32 = 1e-5;

/// A dropout layer's mask seed: differs per layer and per step.
fn layer_seed(seed: u64, id: LayerId) -> u64 {
    seed ^ (id.0 as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
