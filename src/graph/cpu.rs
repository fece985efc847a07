//! f64 reference forward of a whole graph in evaluation mode (batch norm uses its running
//! statistics, dropout is the identity). Morphism tests compare outputs with it, without a GPU.
//! The layers reuse the ops' own f64 references (`ops::*::cpu`).

use super::{Graph, LayerId, Op, Padding};
use crate::error::{Error, Result};
use crate::ops::batch_norm::{self, Layout};
use crate::ops::pool::{self, Pool2dConfig};
use crate::ops::{concat, conv2d, dense, shift, softmax};
use std::collections::HashMap;

/// A batch of activations: `[n, ...shape]`, row-major.
#[derive(Clone, Debug)]
pub struct Activation {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Graph {
    /// Output of the graph (logits) for a batch `x` of shape `[n, ...input_shape]`: with test-time
    /// shifts, the mean of the outputs for the shifted inputs.
    pub fn forward_cpu(&self, x: &[f64], batch: usize) -> Result<Vec<f64>> {
        let shifts = self.test_time_shifts();
        if shifts.is_empty() {
            let mut all = self.forward_cpu_all(x, batch)?;
            return Ok(all.remove(&self.output().id).expect("output computed").data);
        }
        let (h, w) = (self.input_shape()[1], self.input_shape()[2]);
        let mut mean: Vec<f64> = vec![];
        for &by in shifts {
            let mut all = self.forward_cpu_all(&shift::cpu::shift(x, h, w, by), batch)?;
            let out = all.remove(&self.output().id).expect("output computed").data;
            mean.resize(out.len(), 0.0);
            mean.iter_mut().zip(&out).for_each(|(m, o)| *m += o / shifts.len() as f64);
        }
        Ok(mean)
    }

    /// Every layer's output for a batch `x` of shape `[n, ...input_shape]`, for the input as it
    /// is (test-time shifts apply to [`Graph::forward_cpu`] only).
    pub fn forward_cpu_all(&self, x: &[f64], batch: usize) -> Result<HashMap<LayerId, Activation>> {
        self.validate()?;
        let per_sample: usize = self.input_shape().iter().product();
        if x.len() != batch * per_sample {
            return Err(Error::shape("graph", format!("input has {} values, expected batch {batch} x {:?}", x.len(), self.input_shape())));
        }
        let mut acts: HashMap<LayerId, Activation> = HashMap::new();
        for layer in self.layers() {
            let ins: Vec<&Activation> = layer.inputs.iter().map(|i| &acts[i]).collect();
            let p = |name: &str| -> Vec<f64> { layer.param(name).data.iter().map(|&v| v as f64).collect() };
            let out = match &layer.op {
                Op::Input { shape, normalization, .. } => {
                    let mut data = x.to_vec();
                    if let Some(norm) = normalization {
                        let plane: usize = shape[1..].iter().product();
                        for (i, v) in data.iter_mut().enumerate() {
                            let c = (i / plane) % shape[0];
                            *v = (*v - norm.mean[c] as f64) / norm.std[c] as f64;
                        }
                    }
                    Activation { shape: [&[batch], shape.as_slice()].concat(), data }
                }
                Op::Conv2d { filters, kernel, stride, padding, bias } => {
                    let b = if *bias { p("bias") } else { vec![0.0; *filters] };
                    conv2d(ins[0], &p("kernel"), &b, *filters, *kernel, *stride, *padding)?
                }
                Op::BatchNorm { eps, .. } => {
                    batch_norm(ins[0], &p("gamma"), &p("beta"), &p("running_mean"), &p("running_var"), *eps as f64)
                }
                Op::Relu => map(ins[0], |v| v.max(0.0)),
                Op::MaxPool { kernel, stride } => pool(ins[0], *kernel, *stride, true),
                Op::AvgPool { kernel, stride } => pool(ins[0], *kernel, *stride, false),
                Op::GlobalAvgPool => {
                    let shape = image(ins[0]);
                    Activation { shape: shape[..2].to_vec(), data: pool::cpu::global_avg_pool(&ins[0].data, shape) }
                }
                Op::Dense { units, bias } => {
                    let b = if *bias { p("bias") } else { vec![0.0; *units] };
                    let (n, k) = (ins[0].shape[0], ins[0].shape[1]);
                    Activation { shape: vec![n, *units], data: dense::cpu::dense(&ins[0].data, &p("kernel"), &b, n, k, *units) }
                }
                Op::Dropout { .. } => ins[0].clone(),
                Op::Flatten => {
                    let n = ins[0].shape[0];
                    Activation { shape: vec![n, ins[0].data.len() / n], data: ins[0].data.clone() }
                }
                Op::Add => {
                    let mut out = ins[0].clone();
                    for other in &ins[1..] {
                        out.data.iter_mut().zip(&other.data).for_each(|(o, v)| *o += v);
                    }
                    out
                }
                Op::Concat => {
                    let data: Vec<Vec<f64>> = ins.iter().map(|a| a.data.clone()).collect();
                    let shapes: Vec<Vec<usize>> = ins.iter().map(|a| a.shape.clone()).collect();
                    let mut shape = shapes[0].clone();
                    shape[1] = shapes.iter().map(|s| s[1]).sum();
                    Activation { shape, data: concat::cpu::concat_channels(&data, &shapes) }
                }
                Op::Softmax => Activation { shape: ins[0].shape.clone(), data: softmax::cpu::softmax(&ins[0].data, ins[0].shape[1]) },
            };
            acts.insert(layer.id, out);
        }
        Ok(acts)
    }
}

fn map(x: &Activation, f: impl Fn(f64) -> f64) -> Activation {
    Activation { shape: x.shape.clone(), data: x.data.iter().map(|&v| f(v)).collect() }
}

fn image(x: &Activation) -> [usize; 4] {
    x.shape[..].try_into().expect("validated image activation")
}

fn conv2d(x: &Activation, w: &[f64], b: &[f64], f: usize, k: usize, stride: usize, padding: Padding) -> Result<Activation> {
    let padding = match padding {
        Padding::Valid => conv2d::Padding::Valid,
        Padding::Same => conv2d::Padding::Same,
    };
    let c = x.shape[1];
    let g = conv2d::conv2d_geometry(&x.shape, &[f, c, k, k], conv2d::Conv2dConfig { stride, padding })?;
    Ok(Activation { shape: g.out_shape().to_vec(), data: conv2d::cpu::conv2d(&x.data, w, Some(b), &g) })
}

fn pool(x: &Activation, kernel: usize, stride: usize, max: bool) -> Activation {
    let shape = image(x);
    let cfg = Pool2dConfig { kernel, stride };
    let out_shape = vec![shape[0], shape[1], (shape[2] - kernel) / stride + 1, (shape[3] - kernel) / stride + 1];
    let data = if max { pool::cpu::max_pool2d(&x.data, shape, cfg).0 } else { pool::cpu::avg_pool2d(&x.data, shape, cfg) };
    Activation { shape: out_shape, data }
}

/// Per channel (axis 1), with the running statistics.
fn batch_norm(x: &Activation, gamma: &[f64], beta: &[f64], mean: &[f64], var: &[f64], eps: f64) -> Activation {
    let layout = Layout { outer: x.shape[0], channels: x.shape[1], inner: x.shape[2..].iter().product() };
    Activation { shape: x.shape.clone(), data: batch_norm::cpu::normalize(&x.data, &layout, mean, var, gamma, beta, eps) }
}
