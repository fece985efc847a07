//! The differentiable functions: each runs an op's forward and records its backward on the tape.
//! This is the one place that lists the ops the tape knows.

use super::{Tape, Var};
use crate::error::Result;
use crate::ops::{self, Backward};
use crate::tensor::Tensor;

impl Tape {
    pub fn matmul(&self, a: &Var, b: &Var, trans_a: bool, trans_b: bool) -> Result<Var> {
        let (y, bw) = ops::matmul::matmul_op(&a.value, &b.value, trans_a, trans_b)?;
        Ok(self.record(&[Some(a), Some(b)], y, bw))
    }

    pub fn dense(&self, x: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
        let (y, bw) = ops::dense::dense(&x.value, &w.value, b.map(|b| &b.value))?;
        Ok(self.record(&[Some(x), Some(w), b], y, bw))
    }

    pub fn conv2d(&self, x: &Var, w: &Var, b: Option<&Var>, cfg: ops::conv2d::Conv2dConfig) -> Result<Var> {
        let (y, bw) = ops::conv2d::conv2d(&x.value, &w.value, b.map(|b| &b.value), cfg)?;
        Ok(self.record(&[Some(x), Some(w), b], y, bw))
    }

    pub fn max_pool2d(&self, x: &Var, cfg: ops::pool::Pool2dConfig) -> Result<Var> {
        let (y, bw) = ops::pool::max_pool2d(&x.value, cfg)?;
        Ok(self.record(&[Some(x)], y, bw))
    }

    pub fn avg_pool2d(&self, x: &Var, cfg: ops::pool::Pool2dConfig) -> Result<Var> {
        let (y, bw) = ops::pool::avg_pool2d(&x.value, cfg)?;
        Ok(self.record(&[Some(x)], y, bw))
    }

    /// `[n, c, h, w]` to `[n, c]`.
    pub fn global_avg_pool(&self, x: &Var) -> Result<Var> {
        let (y, bw) = ops::pool::global_avg_pool(&x.value)?;
        Ok(self.record(&[Some(x)], y, bw))
    }

    /// Per-channel batch norm of `[n, c, ...]`; in training the running statistics (not on the tape)
    /// are updated in place.
    pub fn batch_norm(
        &self,
        x: &Var,
        gamma: &Var,
        beta: &Var,
        running_mean: &Tensor,
        running_var: &Tensor,
        cfg: ops::batch_norm::BatchNormConfig,
    ) -> Result<Var> {
        let (y, bw) = ops::batch_norm::batch_norm(&x.value, &gamma.value, &beta.value, running_mean, running_var, cfg)?;
        Ok(self.record(&[Some(x), Some(gamma), Some(beta), None, None], y, bw))
    }

    pub fn relu(&self, x: &Var) -> Result<Var> {
        let (y, bw) = ops::relu::relu(&x.value)?;
        Ok(self.record(&[Some(x)], y, bw))
    }

    /// Inverted dropout in training, identity in evaluation.
    pub fn dropout(&self, x: &Var, rate: f32, seed: u64, training: bool) -> Result<Var> {
        if !training || rate == 0.0 {
            return Ok(x.clone());
        }
        let (y, bw) = ops::dropout::dropout(&x.value, rate, seed, training)?;
        Ok(self.record(&[Some(x)], y, bw))
    }

    pub fn add(&self, a: &Var, b: &Var) -> Result<Var> {
        let (y, bw) = ops::add::add(&a.value, &b.value)?;
        Ok(self.record(&[Some(a), Some(b)], y, bw))
    }

    /// `x * s`.
    pub fn scale(&self, x: &Var, s: f32) -> Result<Var> {
        let (y, bw) = ops::add::scale_op(&x.value, s)?;
        Ok(self.record(&[Some(x)], y, bw))
    }

    /// Images `[n, c, h, w]` moved by `[dx, dy]` pixels (right and down), zero where uncovered.
    pub fn shift(&self, x: &Var, by: [i32; 2]) -> Result<Var> {
        let (y, bw) = ops::shift::shift(&x.value, by)?;
        Ok(self.record(&[Some(x)], y, bw))
    }

    /// Concatenation along channels (axis 1).
    pub fn concat_channels(&self, xs: &[&Var]) -> Result<Var> {
        let values: Vec<&Tensor> = xs.iter().map(|v| &v.value).collect();
        let (y, bw) = ops::concat::concat_channels(&values)?;
        let inputs: Vec<Option<&Var>> = xs.iter().map(|v| Some(*v)).collect();
        Ok(self.record(&inputs, y, bw))
    }

    /// Mean cross-entropy of softmax(logits) against integer labels; a `[1]` loss.
    pub fn softmax_cross_entropy(&self, logits: &Var, labels: &Var) -> Result<Var> {
        self.softmax_cross_entropy_smoothed(logits, labels, 0.0)
    }

    /// Mean cross-entropy of softmax(logits) against the labels smoothed by `smoothing` in [0, 1)
    /// (see [`ops::softmax::softmax_cross_entropy_smoothed`]); a `[1]` loss.
    pub fn softmax_cross_entropy_smoothed(&self, logits: &Var, labels: &Var, smoothing: f32) -> Result<Var> {
        let (y, bw) = ops::softmax::softmax_cross_entropy_smoothed(&logits.value, &labels.value, smoothing)?;
        Ok(self.record(&[Some(logits), Some(labels)], y, bw))
    }

    /// Same data, new shape (flatten is `reshape(x, [n, rest])`).
    pub fn reshape(&self, x: &Var, shape: &[usize]) -> Result<Var> {
        let y = x.value.reshape(shape)?;
        Ok(self.record(&[Some(x)], y, ReshapeBackward { shape: x.shape().to_vec() }))
    }
}

struct ReshapeBackward {
    shape: Vec<usize>,
}

impl Backward for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    // d/dx reshape(x) = reshape back.
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(dy.reshape(&self.shape)?)])
    }
}
