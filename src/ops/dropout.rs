//! Inverted dropout (`shaders/dropout.wgsl`): in training each element is kept with probability
//! 1 - rate and scaled by 1 / (1 - rate), so evaluation is the identity. The mask is never stored
//! or uploaded: a counter-based hash of (seed, element index) decides each element in the shader,
//! and the backward recomputes the same mask from the seed.

use super::Backward;
use crate::device::{Access, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

static DROPOUT: KernelSpec = KernelSpec {
    name: "dropout",
    source: include_str!("../../shaders/dropout.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct DropoutParams {
    n: u32,
    threshold: u32,
    k1: u32,
    k2: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// The mask of one dropout application: the hash keys, the keep threshold and the scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mask {
    pub k1: u32,
    pub k2: u32,
    /// An element is kept when its hash is >= `threshold` (= rate * 2^32).
    pub threshold: u32,
    pub scale: f32,
}

impl Mask {
    pub fn new(rate: f32, seed: u64) -> Mask {
        let k1 = mix(seed as u32 ^ 0x9e37_79b9);
        let k2 = mix((seed >> 32) as u32 ^ k1);
        let threshold = ((rate as f64) * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        Mask { k1, k2, threshold, scale: 1.0 / (1.0 - rate) }
    }
    /// Whether element `i` is kept (the same function as the shader).
    pub fn keeps(&self, i: u32) -> bool {
        mix(mix(i.wrapping_add(self.k1)) ^ self.k2) >= self.threshold
    }
}

/// Chris Wellons' lowbias32, as in the shader.
fn mix(v: u32) -> u32 {
    let mut h = v;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// Checks the rate: dropout needs 0 <= rate < 1.
pub fn check_rate(rate: f32) -> Result<()> {
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::Invalid(format!("dropout rate must be in [0, 1), got {rate}")));
    }
    Ok(())
}

fn apply(x: &Tensor, mask: &Mask, what: &str) -> Result<Tensor> {
    let out = Tensor::uninit(x.device(), x.shape(), what)?;
    let n = x.len();
    let params = DropoutParams { n: n as u32, threshold: mask.threshold, k1: mask.k1, k2: mask.k2, scale: mask.scale, _pad: [0; 3] };
    x.device().dispatch(&DROPOUT, &super::ELEMENTWISE_CONSTS, &params, &[x.buffer(), out.buffer()], super::elementwise_grid(n))?;
    Ok(out)
}

/// Inverted dropout of `x` (any shape) with the mask of `seed`. In evaluation, or when `rate` is 0,
/// the output is `x` itself (same buffer) and the backward passes `dy` through.
pub fn dropout(x: &Tensor, rate: f32, seed: u64, training: bool) -> Result<(Tensor, DropoutBackward)> {
    check_rate(rate)?;
    x.expect_f32("dropout")?;
    if !training || rate == 0.0 {
        return Ok((x.clone(), DropoutBackward { mask: None, shape: x.shape().to_vec() }));
    }
    let mask = Mask::new(rate, seed);
    let y = apply(x, &mask, "dropout output")?;
    Ok((y, DropoutBackward { mask: Some(mask), shape: x.shape().to_vec() }))
}

pub struct DropoutBackward {
    mask: Option<Mask>,
    shape: Vec<usize>,
}

impl Backward for DropoutBackward {
    fn name(&self) -> &'static str {
        "dropout"
    }
    // d/dx (x * m * scale) = m * scale, with the forward's mask m.
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        dy.expect_f32("dropout backward")?;
        if dy.shape() != self.shape {
            return Err(Error::shape("dropout backward", format!("gradient {:?} for an output of shape {:?}", dy.shape(), self.shape)));
        }
        let dx = match &self.mask {
            Some(mask) => apply(dy, mask, "dropout gradient")?,
            None => dy.clone(),
        };
        Ok(vec![Some(dx)])
    }
}

/// f64 CPU reference (the mask from the same hash).
pub mod cpu {
    use super::Mask;

    pub fn dropout(x: &[f64], mask: &Mask) -> Vec<f64> {
        x.iter().enumerate().map(|(i, v)| if mask.keeps(i as u32) { v * mask.scale as f64 } else { 0.0 }).collect()
    }
    pub fn dropout_backward(dy: &[f64], mask: &Mask) -> Vec<f64> {
        dropout(dy, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn shapes(rng: &mut TestRng) -> Vec<Vec<usize>> {
        elementwise_shapes(rng, &[&[1, 1], &[1, 32, 12, 12], &[3, 257], &[2, 5, 13, 11]])
    }

    /// Positions the GPU kept (inputs are all non-zero).
    fn kept(y: &[f32]) -> Vec<bool> {
        y.iter().map(|v| *v != 0.0).collect()
    }

    #[test]
    fn forward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(41);
        for (case, shape) in shapes(&mut rng).into_iter().enumerate() {
            let rate = [0.25, 0.5, 0.1, 0.9][case % 4];
            let seed = 1000 + case as u64 * 0x1_0000_0001;
            let x = rand_vec(&mut rng, shape.iter().product());
            let (y, _) = dropout(&tensor(&dev, &x, &shape), rate, seed, true).unwrap();
            let want = cpu::dropout(&x, &Mask::new(rate, seed));
            assert_close(&y.to_vec().unwrap(), &want, 1e-6, &format!("dropout {shape:?} rate {rate}"));
        }
    }

    #[test]
    fn kept_fraction_is_close_to_one_minus_rate() {
        let dev = device();
        let n = 40_000;
        let x = Tensor::full(&dev, &[n], 1.0).unwrap();
        for rate in [0.1f32, 0.25, 0.5, 0.75] {
            let y = dropout(&x, rate, 7, true).unwrap().0.to_vec().unwrap();
            let frac = kept(&y).iter().filter(|k| **k).count() as f64 / n as f64;
            // The binomial standard deviation is below 0.0025 here; allow 4 of them.
            assert!((frac - (1.0 - rate as f64)).abs() < 0.01, "rate {rate}: kept {frac}");
            let scale = 1.0 / (1.0 - rate);
            assert!(y.iter().all(|v| *v == 0.0 || (v - scale).abs() < 1e-6), "kept values are scaled by 1/(1-rate)");
        }
    }

    #[test]
    fn masks_depend_on_the_seed_only() {
        let dev = device();
        let n = 10_000;
        let x = Tensor::full(&dev, &[n], 1.0).unwrap();
        let mask = |seed: u64| kept(&dropout(&x, 0.5, seed, true).unwrap().0.to_vec().unwrap());
        let a = mask(3);
        assert_eq!(a, mask(3), "same seed, same mask");
        // Seeds differing in the low or only in the high 32 bits give independent masks: about half
        // of the positions differ at rate 0.5.
        for other in [4, 3 | (1 << 40)] {
            let b = mask(other);
            let differ = a.iter().zip(&b).filter(|(p, q)| p != q).count() as f64 / n as f64;
            assert!((differ - 0.5).abs() < 0.05, "seed {other}: {differ} of positions differ");
        }
    }

    #[test]
    fn backward_uses_the_forward_mask() {
        let dev = device();
        let mut rng = rng(42);
        let n = 5_000;
        let x = tensor(&dev, &vec![1.0; n], &[n]);
        let dy = rand_vec(&mut rng, n);
        let (y, bw) = dropout(&x, 0.3, 99, true).unwrap();
        let dx = bw.backward(&tensor(&dev, &dy, &[n])).unwrap().remove(0).unwrap().to_vec().unwrap();
        let y = y.to_vec().unwrap();
        for i in 0..n {
            let want = if y[i] != 0.0 { dy[i] / 0.7 } else { 0.0 };
            assert!((dx[i] as f64 - want).abs() < 1e-5, "element {i}: dx {} y {} dy {}", dx[i], y[i], dy[i]);
        }
    }

    #[test]
    fn evaluation_and_rate_zero_are_the_identity() {
        let dev = device();
        let mut rng = rng(43);
        // Values exactly representable in f32, so the identity can be checked exactly.
        let v: Vec<f64> = rand_vec(&mut rng, 300).into_iter().map(|v| v as f32 as f64).collect();
        let x = tensor(&dev, &v, &[3, 100]);
        for (rate, training) in [(0.5, false), (0.0, true)] {
            let (y, bw) = dropout(&x, rate, 5, training).unwrap();
            assert_close(&y.to_vec().unwrap(), &v, 0.0, "dropout identity");
            let dx = bw.backward(&x).unwrap().remove(0).unwrap();
            assert_close(&dx.to_vec().unwrap(), &v, 0.0, "dropout identity backward");
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(44);
        let mask = Mask::new(0.4, 12345);
        let (x, w) = (rand_vec(&mut rng, 50), rand_vec(&mut rng, 50));
        // L = sum(w * dropout(x))
        let num = numeric_grad(&x, |x| dot(&cpu::dropout(x, &mask), &w));
        assert_close_f64(&cpu::dropout_backward(&w, &mask), &num, 1e-6, "dropout dx");
    }

    #[test]
    fn backward_matches_reference() {
        let dev = device();
        let mut rng = rng(45);
        for (case, shape) in shapes(&mut rng).into_iter().enumerate() {
            let n = shape.iter().product();
            let (x, w) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
            let seed = case as u64 * 77;
            let (_, bw) = dropout(&tensor(&dev, &x, &shape), 0.3, seed, true).unwrap();
            let dx = bw.backward(&tensor(&dev, &w, &shape)).unwrap().remove(0).unwrap();
            let want = cpu::dropout_backward(&w, &Mask::new(0.3, seed));
            assert_close(&dx.to_vec().unwrap(), &want, 1e-6, &format!("dropout dx {shape:?}"));
        }
    }

    #[test]
    fn bad_rates_and_shapes_are_errors() {
        let dev = device();
        let x = Tensor::zeros(&dev, &[2, 3]).unwrap();
        for rate in [1.0, -0.1, 1.5, f32::NAN] {
            let e = dropout(&x, rate, 0, true).err().unwrap().to_string();
            assert!(e.contains("rate"), "{e}");
        }
        let (_, bw) = dropout(&x, 0.5, 0, true).unwrap();
        let e = bw.backward(&Tensor::zeros(&dev, &[3, 2]).unwrap()).err().unwrap().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    }

    #[test]
    fn shader_validates() {
        validate_wgsl("dropout", include_str!("../../shaders/dropout.wgsl"));
    }
}
