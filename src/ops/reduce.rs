//! Sum over all but one axis: a tensor viewed as `[outer, mid, inner]` reduces to `[mid]`.
//! Bias gradients (dense: `[batch, out, 1]`; conv: `[n, c, h*w]`) and batch statistics use it.

use crate::device::{Access, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

static REDUCE: KernelSpec = KernelSpec {
    name: "reduce",
    source: include_str!("../../shaders/reduce.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    outer: u32,
    mid: u32,
    inner: u32,
    accumulate: u32,
}

/// `out[m] = sum_{o,i} x[o, m, i]` where `x` has `outer * mid * inner` elements.
pub fn sum_keep_axis(x: &Tensor, outer: usize, mid: usize, inner: usize) -> Result<Tensor> {
    if outer * mid * inner != x.len() {
        return Err(Error::shape("sum_keep_axis", format!("{:?} is not [{outer}, {mid}, {inner}]", x.shape())));
    }
    let out = Tensor::uninit(x.device(), &[mid], "sum output")?;
    let params = ReduceParams { outer: outer as u32, mid: mid as u32, inner: inner as u32, accumulate: 0 };
    x.device().dispatch(&REDUCE, &[], &params, &[x.buffer(), out.buffer()], super::grid_1d(mid as u32))?;
    Ok(out)
}

/// Sum over axis 1's complement for an NCHW (or `[n, c]`) tensor: one value per channel.
pub fn sum_per_channel(x: &Tensor) -> Result<Tensor> {
    if x.dims() < 2 {
        return Err(Error::shape("sum_per_channel", format!("needs at least 2 dimensions, got {:?}", x.shape())));
    }
    let s = x.shape();
    sum_keep_axis(x, s[0], s[1], s[2..].iter().product())
}

pub mod cpu {
    pub fn sum_keep_axis(x: &[f64], outer: usize, mid: usize, inner: usize) -> Vec<f64> {
        let mut out = vec![0.0; mid];
        for o in 0..outer {
            for (m, acc) in out.iter_mut().enumerate() {
                for i in 0..inner {
                    *acc += x[(o * mid + m) * inner + i];
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn sums_match_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(11);
        for case in 0..20 {
            let (o, m, i) =
                if case == 0 { (1, 1, 1) } else { (rand_dim(&mut rng, 1, 9), rand_dim(&mut rng, 1, 70), rand_dim(&mut rng, 1, 40)) };
            let x = rand_vec(&mut rng, o * m * i);
            let got = sum_keep_axis(&tensor(&dev, &x, &[o, m, i]), o, m, i).unwrap().to_vec().unwrap();
            assert_close(&got, &cpu::sum_keep_axis(&x, o, m, i), 1e-4, &format!("sum [{o},{m},{i}]"));
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let dev = device();
        let x = Tensor::zeros(&dev, &[2, 3]).unwrap();
        assert!(sum_keep_axis(&x, 2, 2, 2).unwrap_err().to_string().contains("[2, 3]"));
    }
}
