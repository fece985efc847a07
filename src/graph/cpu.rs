//! f64 reference forward of a whole graph in evaluation mode (batch norm uses its running
//! statistics, dropout is the identity). Morphism tests compare outputs with it, without a GPU.

use super::{Graph, LayerId, Op, Padding};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// A batch of activations: `[n, ...shape]`, row-major.
#[derive(Clone, Debug)]
pub struct Activation {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Graph {
    /// Output of the graph (logits) for a batch `x` of shape `[n, ...input_shape]`.
    pub fn forward_cpu(&self, x: &[f64], batch: usize) -> Result<Vec<f64>> {
        let mut all = self.forward_cpu_all(x, batch)?;
        Ok(all.remove(&self.output().id).expect("output computed").data)
    }

    /// Every layer's output for a batch `x` of shape `[n, ...input_shape]`.
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
                Op::Input { shape } => Activation { shape: [&[batch], shape.as_slice()].concat(), data: x.to_vec() },
                Op::Conv2d { filters, kernel, stride, padding, bias } => {
                    let b = if *bias { p("bias") } else { vec![0.0; *filters] };
                    conv2d(ins[0], &p("kernel"), &b, *filters, *kernel, *stride, *padding)
                }
                Op::BatchNorm { eps, .. } => {
                    batch_norm(ins[0], &p("gamma"), &p("beta"), &p("running_mean"), &p("running_var"), *eps as f64)
                }
                Op::Relu => map(ins[0], |v| v.max(0.0)),
                Op::MaxPool { kernel, stride } => pool(ins[0], *kernel, *stride, true),
                Op::AvgPool { kernel, stride } => pool(ins[0], *kernel, *stride, false),
                Op::GlobalAvgPool => global_avg_pool(ins[0]),
                Op::Dense { units, bias } => {
                    let b = if *bias { p("bias") } else { vec![0.0; *units] };
                    dense(ins[0], &p("kernel"), &b, *units)
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
                Op::Concat => concat(&ins),
                Op::Softmax => softmax(ins[0]),
            };
            acts.insert(layer.id, out);
        }
        Ok(acts)
    }
}

fn map(x: &Activation, f: impl Fn(f64) -> f64) -> Activation {
    Activation { shape: x.shape.clone(), data: x.data.iter().map(|&v| f(v)).collect() }
}

/// Padding before the first row for an input of `size`: TensorFlow's `same` puts the odd extra
/// padding after.
pub fn pad_before(size: usize, kernel: usize, stride: usize, padding: Padding) -> usize {
    match padding {
        Padding::Valid => 0,
        Padding::Same => {
            let out = size.div_ceil(stride);
            ((out - 1) * stride + kernel).saturating_sub(size) / 2
        }
    }
}

fn conv2d(x: &Activation, w: &[f64], b: &[f64], f: usize, k: usize, s: usize, padding: Padding) -> Activation {
    let [n, c, h, wd] = x.shape[..] else { panic!("conv2d input {:?}", x.shape) };
    let (oh, ow) = match padding {
        Padding::Valid => ((h - k) / s + 1, (wd - k) / s + 1),
        Padding::Same => (h.div_ceil(s), wd.div_ceil(s)),
    };
    let (ph, pw) = (pad_before(h, k, s, padding) as isize, pad_before(wd, k, s, padding) as isize);
    let mut out = vec![0.0; n * f * oh * ow];
    for ni in 0..n {
        for fi in 0..f {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[fi];
                    for ci in 0..c {
                        for ky in 0..k {
                            let iy = (oy * s + ky) as isize - ph;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let ix = (ox * s + kx) as isize - pw;
                                if ix < 0 || ix >= wd as isize {
                                    continue;
                                }
                                acc += w[((fi * c + ci) * k + ky) * k + kx] * x.data[((ni * c + ci) * h + iy as usize) * wd + ix as usize];
                            }
                        }
                    }
                    out[((ni * f + fi) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    Activation { shape: vec![n, f, oh, ow], data: out }
}

/// Per channel (axis 1): `(x - mean) / sqrt(var + eps) * gamma + beta`.
fn batch_norm(x: &Activation, gamma: &[f64], beta: &[f64], mean: &[f64], var: &[f64], eps: f64) -> Activation {
    let (n, c) = (x.shape[0], x.shape[1]);
    let inner = x.data.len() / (n * c);
    let mut out = x.data.clone();
    for (i, v) in out.iter_mut().enumerate() {
        let ch = (i / inner) % c;
        *v = (*v - mean[ch]) / (var[ch] + eps).sqrt() * gamma[ch] + beta[ch];
    }
    Activation { shape: x.shape.clone(), data: out }
}

fn pool(x: &Activation, k: usize, s: usize, max: bool) -> Activation {
    let [n, c, h, w] = x.shape[..] else { panic!("pool input {:?}", x.shape) };
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    let mut out = vec![0.0; n * c * oh * ow];
    for nc in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let window = (0..k).flat_map(|ky| (0..k).map(move |kx| (oy * s + ky, ox * s + kx)));
                let vals = window.map(|(iy, ix)| x.data[(nc * h + iy) * w + ix]);
                out[(nc * oh + oy) * ow + ox] =
                    if max { vals.fold(f64::NEG_INFINITY, f64::max) } else { vals.sum::<f64>() / (k * k) as f64 };
            }
        }
    }
    Activation { shape: vec![n, c, oh, ow], data: out }
}

fn global_avg_pool(x: &Activation) -> Activation {
    let [n, c, h, w] = x.shape[..] else { panic!("global_avg_pool input {:?}", x.shape) };
    let data = x.data.chunks(h * w).map(|plane| plane.iter().sum::<f64>() / (h * w) as f64).collect();
    Activation { shape: vec![n, c], data }
}

/// `x [n, in] . w [in, units] + b`.
fn dense(x: &Activation, w: &[f64], b: &[f64], units: usize) -> Activation {
    let (n, k) = (x.shape[0], x.shape[1]);
    let mut out = vec![0.0; n * units];
    for ni in 0..n {
        for j in 0..units {
            out[ni * units + j] = b[j] + (0..k).map(|p| x.data[ni * k + p] * w[p * units + j]).sum::<f64>();
        }
    }
    Activation { shape: vec![n, units], data: out }
}

/// Along axis 1 (channels or features).
fn concat(ins: &[&Activation]) -> Activation {
    let n = ins[0].shape[0];
    let mut shape = ins[0].shape.clone();
    shape[1] = ins.iter().map(|a| a.shape[1]).sum();
    let mut data = Vec::with_capacity(ins.iter().map(|a| a.data.len()).sum());
    for ni in 0..n {
        for a in ins {
            let per = a.data.len() / n;
            data.extend_from_slice(&a.data[ni * per..(ni + 1) * per]);
        }
    }
    Activation { shape, data }
}

fn softmax(x: &Activation) -> Activation {
    let k = x.shape[1];
    let mut data = x.data.clone();
    for row in data.chunks_mut(k) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|v| *v = (*v - m).exp());
        let s: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    Activation { shape: x.shape.clone(), data }
}
