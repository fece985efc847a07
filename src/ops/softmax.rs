//! Softmax with cross-entropy, fused (llm.c style): the forward saves the probabilities and returns
//! the mean loss over the batch; the backward is (softmax - onehot) / n. With label smoothing eps
//! (Szegedy et al.'s), the target is (1 - eps) onehot + eps / classes instead of the one-hot row,
//! which keeps the logits from growing without bound to reach a probability of 1. Also the
//! inference softmax and `count_correct`, which counts correct predictions on the device so the
//! training loop reads back nothing per step. Kernels: `shaders/softmax*.wgsl`.
//!
//! Labels are u32 on the device, so they cannot be checked on the CPU without a readback. Kernels
//! never index with an out-of-range label (reads are clamped); such a row's loss is NaN, so the
//! training loop's divergence check stops the run, and its gradient has no one-hot term.
//! [`check_labels`] checks host labels once, where they are uploaded.

use super::Backward;
use crate::device::{Access, DType, Device, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `WG` of the row-wise kernels: rows per workgroup for narrow rows (one invocation per row), and
/// invocations per row for wide rows (one workgroup per row, consecutive reads).
const ROW_WG: usize = 64;

/// Whether rows of `c` columns go one per workgroup. On GPUs, from ROW_WG columns: one thread per
/// row of 1000 would walk it serially. Never on CPU backends (lavapipe), where the workgroup
/// barriers cost more than the strided reads they save (3-4x slower on 1024 x 1000).
fn wide_rows(device: &Device, c: usize) -> bool {
    !device.is_cpu() && c >= ROW_WG
}

/// The grid for `n` rows.
fn row_grid(n: usize, wide: bool) -> [u32; 3] {
    if wide {
        super::grid_1d(n as u32)
    } else {
        super::grid_1d(super::groups(n, ROW_WG))
    }
}

const SOFTMAX_BINDINGS: &[Access] = &[Access::Read, Access::ReadWrite];
static SOFTMAX: KernelSpec =
    KernelSpec { name: "softmax", source: include_str!("../../shaders/softmax.wgsl"), entry: "main", bindings: SOFTMAX_BINDINGS };
static SOFTMAX_WIDE: KernelSpec =
    KernelSpec { name: "softmax_wide", source: include_str!("../../shaders/softmax.wgsl"), entry: "wide", bindings: SOFTMAX_BINDINGS };

/// logits, probs, labels, row_loss.
const XENT_BINDINGS: &[Access] = &[Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite];
static XENT: KernelSpec =
    KernelSpec { name: "softmax_xent", source: include_str!("../../shaders/softmax.wgsl"), entry: "xent", bindings: XENT_BINDINGS };
static XENT_WIDE: KernelSpec = KernelSpec {
    name: "softmax_xent_wide",
    source: include_str!("../../shaders/softmax.wgsl"),
    entry: "xent_wide",
    bindings: XENT_BINDINGS,
};

static XENT_BACKWARD: KernelSpec = KernelSpec {
    name: "softmax_xent_backward",
    source: include_str!("../../shaders/softmax_xent_backward.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
};

static COUNT: KernelSpec = KernelSpec {
    name: "softmax_count",
    source: include_str!("../../shaders/softmax_count.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::Read, Access::ReadWrite],
};

/// Mirrors `Params` of softmax.wgsl and softmax_xent_backward.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowParams {
    rows: u32,
    cols: u32,
    inv_rows: f32,
    /// The loss written for a row whose label is out of range (NaN).
    invalid: f32,
    /// Label smoothing eps (cross-entropy only; 0: the plain one-hot target).
    smoothing: f32,
    _pad: [u32; 3],
}

impl RowParams {
    fn new(rows: usize, cols: usize, smoothing: f32) -> Self {
        RowParams { rows: rows as u32, cols: cols as u32, inv_rows: 1.0 / rows as f32, invalid: f32::NAN, smoothing, _pad: [0; 3] }
    }
}

/// Mirrors `Params` of softmax_count.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CountParams {
    rows: u32,
    cols: u32,
    with_loss: u32,
    invalid: f32,
}

/// Logits must be f32 `[n, c]` with n, c >= 1. Returns (n, c).
fn logits_shape(op: &'static str, logits: &Tensor) -> Result<(usize, usize)> {
    logits.expect_f32(op)?;
    match logits.shape() {
        &[n, c] if n > 0 && c > 0 => Ok((n, c)),
        s => Err(Error::shape(op, format!("expects non-empty logits [n, classes], got {s:?}"))),
    }
}

/// The shape rule with labels: logits `[n, c]` f32 and labels `[n]` u32. Returns (n, c).
pub fn xent_shape(op: &'static str, logits: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    let (n, c) = logits_shape(op, logits)?;
    if labels.dtype() != DType::U32 || labels.shape() != [n] {
        return Err(Error::shape(
            op,
            format!("expects u32 labels [{n}] for logits {:?}, got {:?} labels {:?}", logits.shape(), labels.dtype(), labels.shape()),
        ));
    }
    Ok((n, c))
}

/// Checks host labels before they go to the device: every label must be < `classes`.
pub fn check_labels(labels: &[u32], classes: usize) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(Error::Invalid(format!("label {} at index {i} is out of range for {classes} classes", labels[i]))),
        None => Ok(()),
    }
}

/// Row-wise softmax of logits `[n, c]` (inference; no backward).
pub fn softmax(logits: &Tensor) -> Result<Tensor> {
    let (_, c) = logits_shape("softmax", logits)?;
    softmax_rows(logits, wide_rows(logits.device(), c))
}

fn softmax_rows(logits: &Tensor, wide: bool) -> Result<Tensor> {
    let (n, c) = logits_shape("softmax", logits)?;
    let probs = Tensor::uninit(logits.device(), &[n, c], "softmax output")?;
    let kernel = if wide { &SOFTMAX_WIDE } else { &SOFTMAX };
    logits.device().dispatch(kernel, &[], &RowParams::new(n, c, 0.0), &[logits.buffer(), probs.buffer()], row_grid(n, wide))?;
    Ok(probs)
}

/// Mean over the batch of -log softmax(logits)[label], as a `[1]` tensor. Logits `[n, c]`, labels
/// u32 `[n]`.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, SoftmaxCrossEntropyBackward)> {
    softmax_cross_entropy_smoothed(logits, labels, 0.0)
}

/// Mean over the batch of -sum_k q_k log softmax(logits)_k with the smoothed target
/// q = (1 - smoothing) onehot(label) + smoothing / classes, as a `[1]` tensor; `smoothing` in
/// [0, 1), where 0 is [`softmax_cross_entropy`] exactly.
pub fn softmax_cross_entropy_smoothed(logits: &Tensor, labels: &Tensor, smoothing: f32) -> Result<(Tensor, SoftmaxCrossEntropyBackward)> {
    let (_, c) = xent_shape("softmax_cross_entropy", logits, labels)?;
    softmax_cross_entropy_rows(logits, labels, smoothing, wide_rows(logits.device(), c))
}

/// Label smoothing must be at least 0 and below 1 (at 1 the target ignores the label); the error
/// names `op`.
pub fn check_label_smoothing(op: &str, smoothing: f32) -> Result<()> {
    if (0.0..1.0).contains(&smoothing) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{op}: label smoothing {smoothing} must be at least 0 and below 1")))
    }
}

fn softmax_cross_entropy_rows(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
    wide: bool,
) -> Result<(Tensor, SoftmaxCrossEntropyBackward)> {
    let (n, c) = xent_shape("softmax_cross_entropy", logits, labels)?;
    check_label_smoothing("softmax_cross_entropy", smoothing)?;
    let dev = logits.device();
    let probs = Tensor::uninit(dev, &[n, c], "softmax probabilities")?;
    let row_loss = Tensor::uninit(dev, &[n], "cross-entropy per row")?;
    let params = RowParams::new(n, c, smoothing);
    let kernel = if wide { &XENT_WIDE } else { &XENT };
    let wg = row_grid(n, wide);
    dev.dispatch(kernel, &[], &params, &[logits.buffer(), probs.buffer(), labels.buffer(), row_loss.buffer()], wg)?;
    // Rows are already divided by n, so their sum is the mean.
    let loss = super::reduce::sum_keep_axis(&row_loss, 1, 1, n)?;
    Ok((loss, SoftmaxCrossEntropyBackward { probs, labels: labels.clone(), smoothing }))
}

/// Adds into `acc[0]` the number of rows whose argmax (the first maximum) equals the label and,
/// when `acc` has two or more elements, into `acc[1]` the sum of the rows' cross-entropy losses
/// (not divided by n). Nothing is read back.
pub fn count_correct(logits: &Tensor, labels: &Tensor, acc: &Tensor) -> Result<()> {
    let (n, c) = xent_shape("count_correct", logits, labels)?;
    acc.expect_f32("count_correct")?;
    if acc.is_empty() {
        return Err(Error::shape("count_correct", format!("needs an accumulator of 1 or 2 elements, got {:?}", acc.shape())));
    }
    let params = CountParams { rows: n as u32, cols: c as u32, with_loss: (acc.len() >= 2) as u32, invalid: f32::NAN };
    logits.device().dispatch(&COUNT, &[], &params, &[logits.buffer(), labels.buffer(), acc.buffer()], [1, 1, 1])
}

pub struct SoftmaxCrossEntropyBackward {
    probs: Tensor,
    labels: Tensor,
    smoothing: f32,
}

impl Backward for SoftmaxCrossEntropyBackward {
    fn name(&self) -> &'static str {
        "softmax_cross_entropy"
    }
    // d/dlogits mean_r(-sum_k q_rk log softmax(logits_r)_k) = (softmax - q) / n, where
    // q = (1 - smoothing) onehot(label) + smoothing / c (q = onehot(label) without smoothing).
    fn backward(&self, dloss: &Tensor) -> Result<Vec<Option<Tensor>>> {
        dloss.expect_f32("softmax_cross_entropy backward")?;
        if dloss.len() != 1 {
            return Err(Error::shape("softmax_cross_entropy backward", format!("expects a [1] loss gradient, got {:?}", dloss.shape())));
        }
        let (n, c) = (self.probs.dim(0), self.probs.dim(1));
        let dlogits = Tensor::uninit(dloss.device(), &[n, c], "softmax cross-entropy gradient")?;
        let params = RowParams::new(n, c, self.smoothing);
        let wg = super::elementwise_grid(n * c);
        let bufs = [self.probs.buffer(), self.labels.buffer(), dloss.buffer(), dlogits.buffer()];
        dloss.device().dispatch(&XENT_BACKWARD, &super::ELEMENTWISE_CONSTS, &params, &bufs, wg)?;
        Ok(vec![Some(dlogits), None])
    }
}

/// f64 CPU reference. An out-of-range label gives a NaN loss and no one-hot term, as on the device.
pub mod cpu {
    pub fn softmax(logits: &[f64], cols: usize) -> Vec<f64> {
        logits
            .chunks(cols)
            .flat_map(|row| {
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |v| v / s)
            })
            .collect()
    }

    /// log softmax(row)_k = x_k - logsumexp(row), finite however large the logits.
    pub fn log_softmax(logits: &[f64], cols: usize) -> Vec<f64> {
        logits
            .chunks(cols)
            .flat_map(|row| {
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                row.iter().map(move |v| v - lse)
            })
            .collect()
    }

    /// Each row's loss -log softmax(row)[label].
    pub fn row_losses(logits: &[f64], labels: &[u32], cols: usize) -> Vec<f64> {
        logits
            .chunks(cols)
            .zip(labels)
            .map(|(row, &l)| {
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                row.get(l as usize).map_or(f64::NAN, |x| lse - x)
            })
            .collect()
    }

    pub fn softmax_cross_entropy(logits: &[f64], labels: &[u32], cols: usize) -> f64 {
        let losses = row_losses(logits, labels, cols);
        losses.iter().sum::<f64>() / losses.len() as f64
    }

    pub fn softmax_cross_entropy_backward(logits: &[f64], labels: &[u32], cols: usize, dloss: f64) -> Vec<f64> {
        softmax_cross_entropy_smoothed_backward(logits, labels, cols, 0.0, dloss)
    }

    /// The mean over rows of -sum_k q_k log softmax(row)_k, q = (1 - eps) onehot(label) + eps / cols,
    /// written from its definition (the device uses an equivalent rearrangement).
    pub fn softmax_cross_entropy_smoothed(logits: &[f64], labels: &[u32], cols: usize, smoothing: f64) -> f64 {
        let n = labels.len() as f64;
        let total: f64 = log_softmax(logits, cols)
            .chunks(cols)
            .zip(labels)
            .map(|(row, &l)| match row.get(l as usize) {
                None => f64::NAN,
                Some(log_p_label) => -(1.0 - smoothing) * log_p_label - smoothing / cols as f64 * row.iter().sum::<f64>(),
            })
            .sum();
        total / n
    }

    /// (softmax - q) * dloss / n; an out-of-range label has no one-hot term, only the eps / cols.
    pub fn softmax_cross_entropy_smoothed_backward(logits: &[f64], labels: &[u32], cols: usize, smoothing: f64, dloss: f64) -> Vec<f64> {
        let n = labels.len() as f64;
        let mut g = softmax(logits, cols);
        for (r, &l) in labels.iter().enumerate() {
            for v in &mut g[r * cols..(r + 1) * cols] {
                *v -= smoothing / cols as f64;
            }
            if (l as usize) < cols {
                g[r * cols + l as usize] -= 1.0 - smoothing;
            }
        }
        g.iter().map(|v| v * dloss / n).collect()
    }

    /// (rows whose first argmax equals the label, sum of row losses).
    pub fn count_correct(logits: &[f64], labels: &[u32], cols: usize) -> (f64, f64) {
        let correct = logits
            .chunks(cols)
            .zip(labels)
            .filter(|(row, &l)| {
                let arg = row.iter().enumerate().fold(0, |best, (j, v)| if *v > row[best] { j } else { best });
                arg == l as usize
            })
            .count();
        (correct as f64, row_losses(logits, labels, cols).iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use rand::Rng;

    /// (n, c): batch 1, odd sizes, more rows than one workgroup, narrow rows (one invocation per
    /// row) and wide ones (one workgroup per row, from 64 columns).
    fn shapes(rng: &mut TestRng) -> Vec<(usize, usize)> {
        let mut out = vec![(1, 1), (1, 10), (128, 10), (65, 3), (3, 1000), (1, 64), (7, 63), (66, 65), (2, 257)];
        while out.len() < 24 {
            out.push((rand_dim(rng, 1, 150), rand_dim(rng, 1, if out.len() % 2 == 0 { 40 } else { 150 })));
        }
        out
    }

    /// Logits spread wider than [-1, 1] so the probabilities are not all alike.
    fn logits(rng: &mut TestRng, len: usize) -> Vec<f64> {
        rand_vec(rng, len).into_iter().map(|v| v * 4.0).collect()
    }

    fn labels(rng: &mut TestRng, n: usize, c: usize) -> Vec<u32> {
        (0..n).map(|_| rng.random_range(0..c as u32)).collect()
    }

    #[test]
    fn forward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(61);
        for (n, c) in shapes(&mut rng) {
            let (x, y) = (logits(&mut rng, n * c), labels(&mut rng, n, c));
            let gx = tensor(&dev, &x, &[n, c]);
            let gy = Tensor::from_u32(&dev, &y, &[n]).unwrap();
            let want = cpu::softmax_cross_entropy(&x, &y, c);
            // Both kernels on every shape, whichever this adapter would pick.
            for wide in [false, true] {
                let (loss, _) = softmax_cross_entropy_rows(&gx, &gy, 0.0, wide).unwrap();
                assert_eq!(loss.shape(), [1]);
                assert_close(&loss.to_vec().unwrap(), &[want], 1e-5, &format!("xent [{n}, {c}] wide={wide}"));
                let probs = softmax_rows(&gx, wide).unwrap();
                assert_close(&probs.to_vec().unwrap(), &cpu::softmax(&x, c), 1e-5, &format!("softmax [{n}, {c}] wide={wide}"));
            }
            let (loss, _) = softmax_cross_entropy(&gx, &gy).unwrap();
            assert_close(&loss.to_vec().unwrap(), &[want], 1e-5, &format!("xent [{n}, {c}]"));
        }
    }

    #[test]
    fn large_logits_stay_finite() {
        let dev = device();
        for eps in [0.0f32, 0.2] {
            for (c, wide) in [(3, false), (3, true), (100, false), (100, true)] {
                let mut x = vec![0.0; 2 * c];
                x[..3].copy_from_slice(&[1000.0, -1000.0, 999.0]);
                x[c..c + 3].copy_from_slice(&[0.0, 88.0, 89.0]);
                let y = [0u32, 1];
                let labels = Tensor::from_u32(&dev, &y, &[2]).unwrap();
                let (loss, _) = softmax_cross_entropy_rows(&tensor(&dev, &x, &[2, c]), &labels, eps, wide).unwrap();
                let what = format!("xent large logits [2, {c}] wide={wide} smoothing {eps}");
                assert_close(&loss.to_vec().unwrap(), &[cpu::softmax_cross_entropy_smoothed(&x, &y, c, eps as f64)], 1e-4, &what);
            }
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(62);
        for (n, c) in [(1, 1), (1, 5), (4, 3), (6, 7)] {
            let (x, y) = (logits(&mut rng, n * c), labels(&mut rng, n, c));
            let dloss = 0.7;
            // L = dloss * mean cross-entropy
            let num = numeric_grad(&x, |x| dloss * cpu::softmax_cross_entropy(x, &y, c));
            let got = cpu::softmax_cross_entropy_backward(&x, &y, c, dloss);
            assert_close_f64(&got, &num, 1e-5, &format!("xent dlogits [{n}, {c}]"));
        }
    }

    #[test]
    fn backward_matches_reference() {
        let dev = device();
        let mut rng = rng(63);
        for (case, (n, c)) in shapes(&mut rng).into_iter().enumerate() {
            let (x, y) = (logits(&mut rng, n * c), labels(&mut rng, n, c));
            let dloss = rand_vec(&mut rng, 1);
            let wide = case % 2 == 1; // the probabilities come from either forward kernel
            let (_, bw) =
                softmax_cross_entropy_rows(&tensor(&dev, &x, &[n, c]), &Tensor::from_u32(&dev, &y, &[n]).unwrap(), 0.0, wide).unwrap();
            let grads = bw.backward(&tensor(&dev, &dloss, &[1])).unwrap();
            assert!(grads.len() == 2 && grads[1].is_none());
            let want = cpu::softmax_cross_entropy_backward(&x, &y, c, dloss[0]);
            let what = format!("xent dlogits [{n}, {c}] wide={wide}");
            assert_close(&grads[0].as_ref().unwrap().to_vec().unwrap(), &want, 1e-4, &what);
        }
    }

    #[test]
    fn count_correct_adds_counts_and_losses() {
        let dev = device();
        let mut rng = rng(64);
        for (n, c) in shapes(&mut rng) {
            let x = logits(&mut rng, n * c);
            // Labels mostly equal to the argmax, so the count is neither 0 nor n.
            let mut y = labels(&mut rng, n, c);
            for (r, row) in x.chunks(c).enumerate() {
                if rng.random_bool(0.6) {
                    y[r] = row.iter().enumerate().fold(0, |b, (j, v)| if *v > row[b] { j } else { b }) as u32;
                }
            }
            let gx = tensor(&dev, &x, &[n, c]);
            let gy = Tensor::from_u32(&dev, &y, &[n]).unwrap();
            let (count, loss_sum) = cpu::count_correct(&x, &y, c);
            let acc = tensor(&dev, &[3.0, 0.5], &[2]);
            count_correct(&gx, &gy, &acc).unwrap();
            count_correct(&gx, &gy, &acc).unwrap();
            let got = acc.to_vec().unwrap();
            assert_eq!(got[0] as f64, 3.0 + 2.0 * count, "count [{n}, {c}]");
            assert_close(&got[1..], &[0.5 + 2.0 * loss_sum], 1e-5, &format!("loss sum [{n}, {c}]"));
            // A one-element accumulator gets the count only.
            let acc1 = Tensor::zeros(&dev, &[1]).unwrap();
            count_correct(&gx, &gy, &acc1).unwrap();
            assert_eq!(acc1.to_vec().unwrap()[0] as f64, count);
        }
    }

    #[test]
    fn out_of_range_labels_give_nan_loss_without_reading_out_of_bounds() {
        let dev = device();
        let x = [0.1, 0.2, 0.3, 0.5, -0.5, 0.0];
        let y = [1u32, 7];
        let gx = tensor(&dev, &x, &[2, 3]);
        let gy = Tensor::from_u32(&dev, &y, &[2]).unwrap();
        let (loss, bw) = softmax_cross_entropy(&gx, &gy).unwrap();
        assert!(loss.to_vec().unwrap()[0].is_nan());
        let g = bw.backward(&tensor(&dev, &[1.0], &[1])).unwrap().remove(0).unwrap();
        assert_close(&g.to_vec().unwrap(), &cpu::softmax_cross_entropy_backward(&x, &y, 3, 1.0), 1e-5, "xent dlogits, bad label");
        let acc = Tensor::zeros(&dev, &[2]).unwrap();
        count_correct(&gx, &gy, &acc).unwrap();
        let acc = acc.to_vec().unwrap();
        assert_eq!(acc[0], 0.0);
        assert!(acc[1].is_nan());
        assert!(check_labels(&y, 3).unwrap_err().to_string().contains("label 7"));
        check_labels(&[0, 2, 1], 3).unwrap();
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let x = Tensor::zeros(&dev, &[4, 3]).unwrap();
        let y = Tensor::from_u32(&dev, &[0, 1, 2, 0, 1], &[5]).unwrap();
        let e = softmax_cross_entropy(&x, &y).err().unwrap().to_string();
        assert!(e.contains("[4, 3]") && e.contains("[5]"), "{e}");
        let e = count_correct(&x, &y, &Tensor::zeros(&dev, &[2]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("[4, 3]") && e.contains("[5]"), "{e}");
        let float_labels = Tensor::zeros(&dev, &[4]).unwrap();
        let e = softmax_cross_entropy(&x, &float_labels).err().unwrap().to_string();
        assert!(e.contains("F32"), "{e}");
        let e = softmax(&Tensor::zeros(&dev, &[2, 3, 4]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("[2, 3, 4]"), "{e}");
        let (_, bw) = softmax_cross_entropy(&x, &Tensor::from_u32(&dev, &[0, 1, 2, 0], &[4]).unwrap()).unwrap();
        let e = bw.backward(&Tensor::zeros(&dev, &[2]).unwrap()).err().unwrap().to_string();
        assert!(e.contains("[2]"), "{e}");
    }

    /// (n, c) for label smoothing: rows 1..=300 and classes 1..=1100, so both row kernels meet
    /// narrow and wide rows, sizes that fill no workgroup, and a single class (where q = onehot).
    fn smoothing_shapes(rng: &mut TestRng) -> Vec<(usize, usize)> {
        let mut out = vec![(1, 1), (5, 1), (1, 64), (7, 63), (66, 65), (300, 1100), (3, 1000)];
        while out.len() < 14 {
            out.push((rand_dim(rng, 1, 300), rand_dim(rng, 1, 1100)));
        }
        out
    }

    #[test]
    fn smoothed_reference_matches_the_closed_form_and_finite_differences() {
        let mut rng = rng(65);
        for (n, c) in [(1, 1), (1, 5), (4, 3), (6, 7), (3, 40)] {
            let (x, y) = (logits(&mut rng, n * c), labels(&mut rng, n, c));
            for eps in [0.0, 0.1, rng.random_range(0.0..1.0)] {
                // logsumexp(z) - (1 - eps) z_y - (eps / c) sum_k z_k, averaged over rows.
                let closed: f64 = x
                    .chunks(c)
                    .zip(&y)
                    .map(|(row, &l)| {
                        let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                        lse - (1.0 - eps) * row[l as usize] - eps / c as f64 * row.iter().sum::<f64>()
                    })
                    .sum::<f64>()
                    / n as f64;
                let got = cpu::softmax_cross_entropy_smoothed(&x, &y, c, eps);
                assert!((got - closed).abs() <= 1e-12 * closed.abs().max(1.0), "[{n}, {c}] eps {eps}: {got} vs {closed}");
                let dloss = 0.7;
                // L = dloss * mean smoothed cross-entropy
                let num = numeric_grad(&x, |x| dloss * cpu::softmax_cross_entropy_smoothed(x, &y, c, eps));
                let grad = cpu::softmax_cross_entropy_smoothed_backward(&x, &y, c, eps, dloss);
                assert_close_f64(&grad, &num, 1e-5, &format!("smoothed xent dlogits [{n}, {c}] eps {eps:.3}"));
            }
        }
    }

    #[test]
    fn smoothed_forward_and_backward_match_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(66);
        for (n, c) in smoothing_shapes(&mut rng) {
            let (x, y) = (logits(&mut rng, n * c), labels(&mut rng, n, c));
            let gx = tensor(&dev, &x, &[n, c]);
            let gy = Tensor::from_u32(&dev, &y, &[n]).unwrap();
            let dloss = rand_vec(&mut rng, 1);
            let gdloss = tensor(&dev, &dloss, &[1]);
            for eps in [0.0, 0.1, rng.random_range(0.0..1.0f32)] {
                let want_loss = cpu::softmax_cross_entropy_smoothed(&x, &y, c, eps as f64);
                let want_grad = cpu::softmax_cross_entropy_smoothed_backward(&x, &y, c, eps as f64, dloss[0]);
                // Both kernels on every shape, whichever this adapter would pick.
                for wide in [false, true] {
                    let what = format!("smoothed xent [{n}, {c}] eps {eps:.3} wide={wide}");
                    let (loss, bw) = softmax_cross_entropy_rows(&gx, &gy, eps, wide).unwrap();
                    assert_close(&loss.to_vec().unwrap(), &[want_loss], 1e-5, &what);
                    let grad = bw.backward(&gdloss).unwrap().remove(0).unwrap().to_vec().unwrap();
                    assert_close(&grad, &want_grad, 1e-4, &format!("{what} dlogits"));
                    if eps == 0.0 {
                        // Without smoothing the target is the one-hot row itself: (p - onehot) * g
                        // in f32, bit for bit, as before smoothing existed.
                        let g = dloss[0] as f32 * (1.0 / n as f32);
                        let probs = bw.probs.to_vec().unwrap();
                        let plain: Vec<f32> =
                            probs.iter().enumerate().map(|(i, &p)| (p - if y[i / c] as usize == i % c { 1.0 } else { 0.0 }) * g).collect();
                        assert!(grad.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: not bit for bit");
                    }
                }
            }
            let (loss, _) = softmax_cross_entropy_smoothed(&gx, &gy, 0.1).unwrap();
            let want = cpu::softmax_cross_entropy_smoothed(&x, &y, c, 0.1f32 as f64);
            assert_close(&loss.to_vec().unwrap(), &[want], 1e-5, &format!("smoothed xent [{n}, {c}], this adapter's kernel"));
        }
    }

    #[test]
    fn smoothed_out_of_range_labels_give_nan_loss_and_no_one_hot_term() {
        let dev = device();
        for c in [3, 70] {
            let mut rng = rng(67);
            let x = logits(&mut rng, 2 * c);
            let y = [1u32, c as u32 + 4];
            let gx = tensor(&dev, &x, &[2, c]);
            let gy = Tensor::from_u32(&dev, &y, &[2]).unwrap();
            for wide in [false, true] {
                let (loss, bw) = softmax_cross_entropy_rows(&gx, &gy, 0.3, wide).unwrap();
                assert!(loss.to_vec().unwrap()[0].is_nan(), "[2, {c}] wide={wide}");
                assert!(cpu::softmax_cross_entropy_smoothed(&x, &y, c, 0.3).is_nan());
                let g = bw.backward(&tensor(&dev, &[1.0], &[1])).unwrap().remove(0).unwrap();
                // The bad row's gradient is p - eps / c: finite, with no one-hot term.
                let want = cpu::softmax_cross_entropy_smoothed_backward(&x, &y, c, 0.3f32 as f64, 1.0);
                assert_close(&g.to_vec().unwrap(), &want, 1e-5, &format!("smoothed dlogits, bad label [2, {c}] wide={wide}"));
            }
        }
    }

    #[test]
    fn label_smoothing_outside_zero_to_one_is_refused() {
        let dev = device();
        let x = Tensor::zeros(&dev, &[2, 3]).unwrap();
        let y = Tensor::from_u32(&dev, &[0, 1], &[2]).unwrap();
        for bad in [-0.1, 1.0, 1.5, f32::NAN, f32::INFINITY] {
            let e = softmax_cross_entropy_smoothed(&x, &y, bad).err().unwrap().to_string();
            assert!(e.contains("label smoothing") && e.contains(&bad.to_string()), "{e}");
        }
        softmax_cross_entropy_smoothed(&x, &y, 0.999).unwrap();
    }

    #[test]
    fn shaders_validate() {
        validate_wgsl("softmax", include_str!("../../shaders/softmax.wgsl"));
        validate_wgsl("softmax_xent_backward", include_str!("../../shaders/softmax_xent_backward.wgsl"));
        validate_wgsl("softmax_count", include_str!("../../shaders/softmax_count.wgsl"));
    }
}
