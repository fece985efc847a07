//! Batch normalisation over axis 1 of `[n, c]` (dense) or `[n, c, h, w]` (conv) tensors, Keras
//! conventions. Training: normalise with the batch mean and biased variance, and update the running
//! statistics in place on the device (`running = momentum * running + (1 - momentum) * batch`, with
//! the unbiased variance for the running variance, as PyTorch and TensorFlow's fused kernel do).
//! Evaluation: normalise with the running statistics; the backward is then the affine map.
//!
//! Kernels: one reduction per channel for the statistics (`shaders/batch_norm_stats.wgsl`), one
//! element-wise normalise (`shaders/batch_norm.wgsl`); the backward is one reduction per channel
//! (dgamma, dbeta) and one element-wise dx (`shaders/batch_norm_backward.wgsl`).

use super::Backward;
use crate::device::{Access, Device, GpuBuffer, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Workgroup size of the per-channel reductions (one workgroup per channel): lavapipe runs a
/// workgroup on one thread and prefers 64 (2-3x faster than 256); GPUs want more invocations.
fn reduce_wg(device: &Device) -> u32 {
    if device.is_cpu() {
        64
    } else {
        256
    }
}

const STATS_BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite];
static TRAIN_STATS: KernelSpec = KernelSpec {
    name: "batch_norm_train_stats",
    source: include_str!("../../shaders/batch_norm_stats.wgsl"),
    entry: "train",
    bindings: STATS_BINDINGS,
};
static EVAL_STATS: KernelSpec = KernelSpec {
    name: "batch_norm_eval_stats",
    source: include_str!("../../shaders/batch_norm_stats.wgsl"),
    entry: "eval",
    bindings: STATS_BINDINGS,
};
const NORMALIZE_BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite];
static NORMALIZE: KernelSpec =
    KernelSpec { name: "batch_norm", source: include_str!("../../shaders/batch_norm.wgsl"), entry: "main", bindings: NORMALIZE_BINDINGS };
static NORMALIZE_PLANES: KernelSpec = KernelSpec {
    name: "batch_norm_planes",
    source: include_str!("../../shaders/batch_norm.wgsl"),
    entry: "planes",
    bindings: NORMALIZE_BINDINGS,
};
const BACKWARD_BINDINGS: &[Access] =
    &[Access::Read, Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite];
static BACKWARD_REDUCE: KernelSpec = KernelSpec {
    name: "batch_norm_backward_reduce",
    source: include_str!("../../shaders/batch_norm_backward.wgsl"),
    entry: "reduce",
    bindings: BACKWARD_BINDINGS,
};
static BACKWARD_DX: KernelSpec = KernelSpec {
    name: "batch_norm_backward_dx",
    source: include_str!("../../shaders/batch_norm_backward.wgsl"),
    entry: "main",
    bindings: BACKWARD_BINDINGS,
};
static BACKWARD_DX_PLANES: KernelSpec = KernelSpec {
    name: "batch_norm_backward_dx_planes",
    source: include_str!("../../shaders/batch_norm_backward.wgsl"),
    entry: "planes",
    bindings: BACKWARD_BINDINGS,
};

/// Records an element-wise pass: one workgroup per (n, c) plane when planes are at least a
/// workgroup wide (uniform channel, consecutive addresses), else flat over all elements.
fn launch_elementwise<P: bytemuck::Pod>(
    dev: &Device,
    (flat, planes): (&KernelSpec, &KernelSpec),
    l: &Layout,
    params: &P,
    bufs: &[&GpuBuffer],
) -> Result<()> {
    let wg = reduce_wg(dev);
    if l.inner >= wg as usize {
        dev.dispatch(planes, &[("WG", wg)], params, bufs, super::grid_1d((l.outer * l.channels) as u32))
    } else {
        dev.dispatch(flat, &super::ELEMENTWISE_CONSTS, params, bufs, super::elementwise_grid(l.len()))
    }
}

/// Keras' `BatchNormalization` settings.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormConfig {
    /// Weight of the old running statistics in the update (Keras' convention, not PyTorch's).
    pub momentum: f32,
    pub eps: f32,
    /// Batch statistics (and a running-statistics update) when true; running statistics when false.
    pub training: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig { momentum: 0.99, eps: 1e-3, training: true }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StatsParams {
    outer: u32,
    channels: u32,
    inner: u32,
    momentum: f32,
    eps: f32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormalizeParams {
    outer: u32,
    channels: u32,
    inner: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BackwardParams {
    outer: u32,
    channels: u32,
    inner: u32,
    training: u32,
    inv_count: f32,
    _pad: [u32; 3],
}

/// `x` viewed as `[outer, channels, inner]`: batch, channels, spatial positions (1 for dense).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub outer: usize,
    pub channels: usize,
    pub inner: usize,
}

impl Layout {
    /// Values per channel (the N of the statistics).
    pub fn count(&self) -> usize {
        self.outer * self.inner
    }
    pub fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shape rule: x f32 `[n, c, ...]` non-empty, and gamma, beta, running mean and variance f32
/// `[c]`. Returns x's layout.
pub fn batch_norm_shape(x: &Tensor, gamma: &Tensor, beta: &Tensor, running_mean: &Tensor, running_var: &Tensor) -> Result<Layout> {
    x.expect_f32("batch_norm")?;
    let s = x.shape();
    if s.len() < 2 || x.is_empty() {
        return Err(Error::shape("batch_norm", format!("expects a non-empty [n, c] or [n, c, h, w] input, got {s:?}")));
    }
    let layout = Layout { outer: s[0], channels: s[1], inner: s[2..].iter().product() };
    for (name, t) in [("gamma", gamma), ("beta", beta), ("running mean", running_mean), ("running variance", running_var)] {
        t.expect_f32("batch_norm")?;
        if t.shape() != [layout.channels] {
            return Err(Error::shape(
                "batch_norm",
                format!("{name} has shape {:?}, expected [{}] for input {s:?}", t.shape(), layout.channels),
            ));
        }
    }
    if running_mean.id() == running_var.id() {
        return Err(Error::Invalid("batch_norm: the running mean and variance must be different tensors".into()));
    }
    Ok(layout)
}

fn check_config(cfg: &BatchNormConfig) -> Result<()> {
    if !((0.0..=1.0).contains(&cfg.momentum) && cfg.eps > 0.0 && cfg.eps.is_finite()) {
        return Err(Error::Invalid(format!("batch_norm: momentum must be in [0, 1] and eps positive, got {cfg:?}")));
    }
    Ok(())
}

/// Normalises `x` per channel (axis 1) and applies `gamma`, `beta`. In training the running
/// statistics are updated in place (recorded on the device like any other dispatch).
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    cfg: BatchNormConfig,
) -> Result<(Tensor, BatchNormBackward)> {
    let l = batch_norm_shape(x, gamma, beta, running_mean, running_var)?;
    check_config(&cfg)?;
    let dev = x.device();
    // Per channel: (mean, invstd, gamma * invstd, beta).
    let stats = Tensor::uninit(dev, &[l.channels, 4], "batch norm statistics")?;
    let params = StatsParams {
        outer: l.outer as u32,
        channels: l.channels as u32,
        inner: l.inner as u32,
        momentum: cfg.momentum,
        eps: cfg.eps,
        _pad: [0; 3],
    };
    let bufs = [x.buffer(), gamma.buffer(), beta.buffer(), running_mean.buffer(), running_var.buffer(), stats.buffer()];
    let wg = reduce_wg(dev);
    if cfg.training {
        dev.dispatch(&TRAIN_STATS, &[("WG", wg)], &params, &bufs, super::grid_1d(l.channels as u32))?;
    } else {
        dev.dispatch(&EVAL_STATS, &[("WG", wg)], &params, &bufs, super::grid_1d(super::groups(l.channels, wg as usize)))?;
    }
    let y = Tensor::uninit(dev, x.shape(), "batch norm output")?;
    let params = NormalizeParams { outer: l.outer as u32, channels: l.channels as u32, inner: l.inner as u32, _pad: 0 };
    let bufs = [x.buffer(), stats.buffer(), y.buffer()];
    launch_elementwise(dev, (&NORMALIZE, &NORMALIZE_PLANES), &l, &params, &bufs)?;
    Ok((y, BatchNormBackward { x: x.clone(), gamma: gamma.clone(), stats, layout: l, training: cfg.training }))
}

/// Keeps x, gamma and the forward's per-channel statistics (batch or running).
pub struct BatchNormBackward {
    x: Tensor,
    gamma: Tensor,
    stats: Tensor,
    layout: Layout,
    training: bool,
}

impl Backward for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch_norm"
    }
    // Training: dx = (gamma * invstd / N) * (N * dy - sum(dy) - xhat * sum(dy * xhat));
    // evaluation: dx = gamma * invstd * dy. Both: dgamma = sum(dy * xhat), dbeta = sum(dy).
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        dy.expect_f32("batch_norm backward")?;
        if dy.shape() != self.x.shape() {
            return Err(Error::shape(
                "batch_norm backward",
                format!("gradient {:?} for an output of shape {:?}", dy.shape(), self.x.shape()),
            ));
        }
        let (l, dev) = (self.layout, dy.device());
        let dgamma = Tensor::uninit(dev, &[l.channels], "batch norm gamma gradient")?;
        let dbeta = Tensor::uninit(dev, &[l.channels], "batch norm beta gradient")?;
        let dx = Tensor::uninit(dev, dy.shape(), "batch norm input gradient")?;
        // Per channel: (mean, k, c_x, c_0) of dx = k * dy + c_x * (x - mean) + c_0.
        let coef = Tensor::uninit(dev, &[l.channels, 4], "batch norm backward coefficients")?;
        let params = BackwardParams {
            outer: l.outer as u32,
            channels: l.channels as u32,
            inner: l.inner as u32,
            training: self.training as u32,
            inv_count: 1.0 / l.count() as f32,
            _pad: [0; 3],
        };
        let bufs = [
            self.x.buffer(),
            dy.buffer(),
            self.stats.buffer(),
            self.gamma.buffer(),
            dgamma.buffer(),
            dbeta.buffer(),
            coef.buffer(),
            dx.buffer(),
        ];
        dev.dispatch(&BACKWARD_REDUCE, &[("WG", reduce_wg(dev))], &params, &bufs, super::grid_1d(l.channels as u32))?;
        launch_elementwise(dev, (&BACKWARD_DX, &BACKWARD_DX_PLANES), &l, &params, &bufs)?;
        Ok(vec![Some(dx), Some(dgamma), Some(dbeta), None, None])
    }
}

/// f64 CPU reference, on x viewed as [outer, channels, inner].
pub mod cpu {
    use super::Layout;

    fn index(l: &Layout, o: usize, ch: usize, i: usize) -> usize {
        (o * l.channels + ch) * l.inner + i
    }

    /// Per channel: (mean, biased variance).
    pub fn batch_stats(x: &[f64], l: &Layout) -> (Vec<f64>, Vec<f64>) {
        let n = l.count() as f64;
        let mut mean = vec![0.0; l.channels];
        let mut var = vec![0.0; l.channels];
        for ch in 0..l.channels {
            let vals = || (0..l.outer).flat_map(move |o| (0..l.inner).map(move |i| x[index(l, o, ch, i)]));
            mean[ch] = vals().sum::<f64>() / n;
            var[ch] = vals().map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / n;
        }
        (mean, var)
    }

    /// y = (x - mean) / sqrt(var + eps) * gamma + beta with the given per-channel statistics.
    pub fn normalize(x: &[f64], l: &Layout, mean: &[f64], var: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        for (j, v) in y.iter_mut().enumerate() {
            let ch = (j / l.inner) % l.channels;
            *v = (x[j] - mean[ch]) / (var[ch] + eps).sqrt() * gamma[ch] + beta[ch];
        }
        y
    }

    /// Training forward with batch statistics.
    pub fn batch_norm_train(x: &[f64], l: &Layout, gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
        let (mean, var) = batch_stats(x, l);
        normalize(x, l, &mean, &var, gamma, beta, eps)
    }

    /// The running statistics after one training step (unbiased variance; N = 1 keeps the biased).
    pub fn update_running(x: &[f64], l: &Layout, running_mean: &[f64], running_var: &[f64], momentum: f64) -> (Vec<f64>, Vec<f64>) {
        let (mean, var) = batch_stats(x, l);
        let n = l.count() as f64;
        let bessel = n / (n - 1.0).max(1.0);
        let rm = running_mean.iter().zip(&mean).map(|(r, m)| momentum * r + (1.0 - momentum) * m).collect();
        let rv = running_var.iter().zip(&var).map(|(r, v)| momentum * r + (1.0 - momentum) * v * bessel).collect();
        (rm, rv)
    }

    /// Gradients (dx, dgamma, dbeta) of the training forward.
    pub fn batch_norm_train_backward(x: &[f64], l: &Layout, gamma: &[f64], eps: f64, dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mean, var) = batch_stats(x, l);
        backward(x, l, &mean, &var, gamma, eps, dy, true)
    }

    /// Gradients (dx, dgamma, dbeta) of the evaluation forward (running statistics, affine).
    pub fn batch_norm_eval_backward(
        x: &[f64],
        l: &Layout,
        gamma: &[f64],
        running_mean: &[f64],
        running_var: &[f64],
        eps: f64,
        dy: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        backward(x, l, running_mean, running_var, gamma, eps, dy, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn backward(
        x: &[f64],
        l: &Layout,
        mean: &[f64],
        var: &[f64],
        gamma: &[f64],
        eps: f64,
        dy: &[f64],
        training: bool,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let n = l.count() as f64;
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let xhat = |j: usize, ch: usize| (x[j] - mean[ch]) * invstd[ch];
        let mut dgamma = vec![0.0; l.channels];
        let mut dbeta = vec![0.0; l.channels];
        for (j, g) in dy.iter().enumerate() {
            let ch = (j / l.inner) % l.channels;
            dbeta[ch] += g;
            dgamma[ch] += g * xhat(j, ch);
        }
        let dx = (0..x.len())
            .map(|j| {
                let ch = (j / l.inner) % l.channels;
                if training {
                    gamma[ch] * invstd[ch] / n * (n * dy[j] - dbeta[ch] - xhat(j, ch) * dgamma[ch])
                } else {
                    gamma[ch] * invstd[ch] * dy[j]
                }
            })
            .collect();
        (dx, dgamma, dbeta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// Random 2-D and 4-D shapes: batch 1, one channel, sizes that are not multiples of 256, planes
    /// (h * w) smaller and larger than a workgroup.
    fn shapes(rng: &mut TestRng) -> Vec<Vec<usize>> {
        let mut out = vec![
            vec![1, 5],
            vec![1, 3, 4, 5],
            vec![2, 1],
            vec![7, 1, 9, 9],
            vec![33, 17, 3, 3],
            vec![300, 6],
            vec![2, 3, 17, 19],
            vec![3, 2, 30, 30],
        ];
        while out.len() < 22 {
            let (n, c) = (rand_dim(rng, 1, 12), rand_dim(rng, 1, 20));
            out.push(if out.len() % 2 == 0 { vec![n, c] } else { vec![n, c, rand_dim(rng, 1, 11), rand_dim(rng, 1, 11)] });
        }
        out
    }

    fn layout(shape: &[usize]) -> Layout {
        Layout { outer: shape[0], channels: shape[1], inner: shape[2..].iter().product() }
    }

    /// x with a per-channel offset and spread, so the statistics differ by channel.
    fn input(rng: &mut TestRng, l: &Layout) -> Vec<f64> {
        let shift = rand_vec(rng, l.channels);
        (0..l.len()).map(|j| rand_vec(rng, 1)[0] * 2.0 + shift[(j / l.inner) % l.channels] * 3.0).collect()
    }

    /// Per-channel parameters: gamma around 1, beta, running mean and a positive running variance.
    struct Params {
        gamma: Vec<f64>,
        beta: Vec<f64>,
        rm: Vec<f64>,
        rv: Vec<f64>,
    }

    fn params(rng: &mut TestRng, c: usize) -> Params {
        Params {
            gamma: rand_vec(rng, c).iter().map(|v| 1.0 + 0.5 * v).collect(),
            beta: rand_vec(rng, c),
            rm: rand_vec(rng, c),
            rv: rand_vec(rng, c).iter().map(|v| 1.5 + v).collect(),
        }
    }

    struct Gpu {
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        rm: Tensor,
        rv: Tensor,
    }

    fn upload(x: &[f64], shape: &[usize], p: &Params) -> Gpu {
        let dev = device();
        let c = [shape[1]];
        Gpu {
            x: tensor(&dev, x, shape),
            gamma: tensor(&dev, &p.gamma, &c),
            beta: tensor(&dev, &p.beta, &c),
            rm: tensor(&dev, &p.rm, &c),
            rv: tensor(&dev, &p.rv, &c),
        }
    }

    fn run(g: &Gpu, cfg: BatchNormConfig) -> (Tensor, BatchNormBackward) {
        batch_norm(&g.x, &g.gamma, &g.beta, &g.rm, &g.rv, cfg).unwrap()
    }

    #[test]
    fn training_forward_and_running_update_match_reference() {
        let mut rng = rng(71);
        for shape in shapes(&mut rng) {
            let l = layout(&shape);
            let (x, p) = (input(&mut rng, &l), params(&mut rng, l.channels));
            let g = upload(&x, &shape, &p);
            let cfg = BatchNormConfig { momentum: 0.9, eps: 1e-3, training: true };
            let (y, _) = run(&g, cfg);
            let want = cpu::batch_norm_train(&x, &l, &p.gamma, &p.beta, 1e-3);
            assert_close(&y.to_vec().unwrap(), &want, 1e-4, &format!("batch norm train {shape:?}"));
            let (rm, rv) = cpu::update_running(&x, &l, &p.rm, &p.rv, 0.9);
            assert_close(&g.rm.to_vec().unwrap(), &rm, 1e-4, &format!("running mean {shape:?}"));
            assert_close(&g.rv.to_vec().unwrap(), &rv, 1e-4, &format!("running variance {shape:?}"));
        }
    }

    #[test]
    fn evaluation_forward_uses_running_statistics() {
        let mut rng = rng(72);
        for shape in shapes(&mut rng) {
            let l = layout(&shape);
            let (x, p) = (input(&mut rng, &l), params(&mut rng, l.channels));
            let g = upload(&x, &shape, &p);
            let (y, _) = run(&g, BatchNormConfig { training: false, ..Default::default() });
            let want = cpu::normalize(&x, &l, &p.rm, &p.rv, &p.gamma, &p.beta, 1e-3);
            assert_close(&y.to_vec().unwrap(), &want, 1e-4, &format!("batch norm eval {shape:?}"));
            // Evaluation leaves the running statistics alone.
            assert_close(&g.rm.to_vec().unwrap(), &p.rm, 1e-6, "running mean unchanged");
            assert_close(&g.rv.to_vec().unwrap(), &p.rv, 1e-6, "running variance unchanged");
        }
    }

    #[test]
    fn repeated_training_steps_converge_to_the_batch_statistics() {
        let mut rng = rng(73);
        let shape = [16, 3, 2, 2];
        let l = layout(&shape);
        let (x, p) = (input(&mut rng, &l), params(&mut rng, 3));
        let g = upload(&x, &shape, &p);
        let (mut rm, mut rv) = (p.rm.clone(), p.rv.clone());
        for _ in 0..5 {
            run(&g, BatchNormConfig { momentum: 0.5, ..Default::default() });
            (rm, rv) = cpu::update_running(&x, &l, &rm, &rv, 0.5);
        }
        assert_close(&g.rm.to_vec().unwrap(), &rm, 1e-4, "running mean after 5 steps");
        assert_close(&g.rv.to_vec().unwrap(), &rv, 1e-4, "running variance after 5 steps");
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(74);
        for shape in [vec![4, 3], vec![3, 2, 2, 3], vec![1, 2, 2, 2]] {
            let l = layout(&shape);
            let (x, p) = (input(&mut rng, &l), params(&mut rng, l.channels));
            let w = rand_vec(&mut rng, l.len());
            let eps = 1e-3;
            for training in [true, false] {
                // L = sum(w * y)
                let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| {
                    let y = if training {
                        cpu::batch_norm_train(x, &l, gamma, beta, eps)
                    } else {
                        cpu::normalize(x, &l, &p.rm, &p.rv, gamma, beta, eps)
                    };
                    dot(&y, &w)
                };
                let (dx, dgamma, dbeta) = if training {
                    cpu::batch_norm_train_backward(&x, &l, &p.gamma, eps, &w)
                } else {
                    cpu::batch_norm_eval_backward(&x, &l, &p.gamma, &p.rm, &p.rv, eps, &w)
                };
                let what = format!("{shape:?} training={training}");
                assert_close_f64(&dx, &numeric_grad(&x, |v| loss(v, &p.gamma, &p.beta)), 1e-5, &format!("batch norm dx {what}"));
                assert_close_f64(&dgamma, &numeric_grad(&p.gamma, |v| loss(&x, v, &p.beta)), 1e-5, &format!("batch norm dgamma {what}"));
                assert_close_f64(&dbeta, &numeric_grad(&p.beta, |v| loss(&x, &p.gamma, v)), 1e-5, &format!("batch norm dbeta {what}"));
            }
        }
    }

    #[test]
    fn backward_matches_reference_in_both_modes() {
        let dev = device();
        let mut rng = rng(75);
        for (case, shape) in shapes(&mut rng).into_iter().enumerate() {
            let l = layout(&shape);
            let (x, p) = (input(&mut rng, &l), params(&mut rng, l.channels));
            let w = rand_vec(&mut rng, l.len());
            let training = case % 2 == 0 || case < 4;
            let g = upload(&x, &shape, &p);
            let (_, bw) = run(&g, BatchNormConfig { training, ..Default::default() });
            let grads = bw.backward(&tensor(&dev, &w, &shape)).unwrap();
            assert_eq!(grads.len(), 5);
            assert!(grads[3].is_none() && grads[4].is_none());
            let (dx, dgamma, dbeta) = if training {
                cpu::batch_norm_train_backward(&x, &l, &p.gamma, 1e-3, &w)
            } else {
                cpu::batch_norm_eval_backward(&x, &l, &p.gamma, &p.rm, &p.rv, 1e-3, &w)
            };
            let what = format!("{shape:?} training={training}");
            let got = |i: usize| grads[i].as_ref().unwrap().to_vec().unwrap();
            assert_close(&got(0), &dx, 1e-3, &format!("batch norm dx {what}"));
            assert_close(&got(1), &dgamma, 1e-4, &format!("batch norm dgamma {what}"));
            assert_close(&got(2), &dbeta, 1e-4, &format!("batch norm dbeta {what}"));
        }
    }

    #[test]
    fn shape_and_config_errors_name_the_problem() {
        let dev = device();
        let x = Tensor::zeros(&dev, &[4, 3, 2, 2]).unwrap();
        let c3 = || Tensor::zeros(&dev, &[3]).unwrap();
        let c2 = Tensor::zeros(&dev, &[2]).unwrap();
        let e = batch_norm(&x, &c2, &c3(), &c3(), &c3(), Default::default()).err().unwrap().to_string();
        assert!(e.contains("gamma") && e.contains("[2]") && e.contains("[4, 3, 2, 2]"), "{e}");
        let e = batch_norm(&x, &c3(), &c3(), &c3(), &c2, Default::default()).err().unwrap().to_string();
        assert!(e.contains("running variance") && e.contains("[2]"), "{e}");
        let v = Tensor::zeros(&dev, &[3]).unwrap();
        let e = batch_norm(&v, &c3(), &c3(), &c3(), &c3(), Default::default()).err().unwrap().to_string();
        assert!(e.contains("[3]"), "{e}");
        let rm = c3();
        let e = batch_norm(&x, &c3(), &c3(), &rm, &rm, Default::default()).err().unwrap().to_string();
        assert!(e.contains("different"), "{e}");
        let bad = BatchNormConfig { momentum: 1.5, ..Default::default() };
        let e = batch_norm(&x, &c3(), &c3(), &c3(), &c3(), bad).err().unwrap().to_string();
        assert!(e.contains("momentum"), "{e}");
        let (_, bw) = batch_norm(&x, &c3(), &c3(), &c3(), &c3(), Default::default()).unwrap();
        let e = bw.backward(&Tensor::zeros(&dev, &[4, 3]).unwrap()).err().unwrap().to_string();
        assert!(e.contains("[4, 3]") && e.contains("[4, 3, 2, 2]"), "{e}");
    }

    #[test]
    fn shaders_validate() {
        validate_wgsl("batch_norm_stats", include_str!("../../shaders/batch_norm_stats.wgsl"));
        validate_wgsl("batch_norm", include_str!("../../shaders/batch_norm.wgsl"));
        validate_wgsl("batch_norm_backward", include_str!("../../shaders/batch_norm_backward.wgsl"));
    }
}
