//! Concatenation along the channel axis (axis 1) of `[n, c_i, h, w]` or `[n, c_i]` tensors (concat
//! skip connections). One copy kernel (`shaders/concat.wgsl`) scatters each input into its channel
//! range; the backward gathers each input's slice of dy.

use super::Backward;
use crate::device::{Access, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

static CONCAT: KernelSpec = KernelSpec {
    name: "concat",
    source: include_str!("../../shaders/concat.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConcatParams {
    outer: u32,
    c_part: u32,
    inner: u32,
    c_total: u32,
    c_off: u32,
    gather: u32,
    _pad: [u32; 2],
}

/// The shape rule: at least one input, all with the same rank (>= 2) and the same dimensions
/// except axis 1. Returns the output shape.
pub fn concat_shape(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let Some(first) = shapes.first() else {
        return Err(Error::shape("concat_channels", "needs at least one input"));
    };
    let compatible = |s: &&[usize]| s.len() == first.len() && s.len() >= 2 && s[0] == first[0] && s[2..] == first[2..];
    if !shapes.iter().all(compatible) {
        return Err(Error::shape(
            "concat_channels",
            format!("inputs must agree on every dimension but axis 1 (rank >= 2), got {shapes:?}"),
        ));
    }
    let mut out = first.to_vec();
    out[1] = shapes.iter().map(|s| s[1]).sum();
    Ok(out)
}

/// Records one part copy: scatter `src` (the part) into `dst` (the whole), or gather the part
/// from the whole when `gather`. Conv also uses it to pad a weight's rows.
pub(crate) fn copy_part(src: &Tensor, dst: &Tensor, part_shape: &[usize], c_total: usize, c_off: usize, gather: bool) -> Result<()> {
    let (outer, c_part, inner) = (part_shape[0], part_shape[1], part_shape[2..].iter().product::<usize>());
    let params = ConcatParams {
        outer: outer as u32,
        c_part: c_part as u32,
        inner: inner as u32,
        c_total: c_total as u32,
        c_off: c_off as u32,
        gather: gather as u32,
        _pad: [0; 2],
    };
    let wg = super::elementwise_grid(outer * c_part * inner);
    src.device().dispatch(&CONCAT, &super::ELEMENTWISE_CONSTS, &params, &[src.buffer(), dst.buffer()], wg)
}

/// `xs` concatenated along axis 1.
pub fn concat_channels(xs: &[&Tensor]) -> Result<(Tensor, ConcatBackward)> {
    let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    let out_shape = concat_shape(&shapes)?;
    for x in xs {
        x.expect_f32("concat_channels")?;
    }
    let y = Tensor::uninit(xs[0].device(), &out_shape, "concat output")?;
    let mut c_off = 0;
    for x in xs {
        copy_part(x, &y, x.shape(), out_shape[1], c_off, false)?;
        c_off += x.dim(1);
    }
    Ok((y, ConcatBackward { shapes: shapes.iter().map(|s| s.to_vec()).collect(), out_shape }))
}

pub struct ConcatBackward {
    shapes: Vec<Vec<usize>>,
    out_shape: Vec<usize>,
}

impl Backward for ConcatBackward {
    fn name(&self) -> &'static str {
        "concat_channels"
    }
    // d/dx_i concat(x_1..x_k) = the slice of dy at x_i's channels.
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        dy.expect_f32("concat_channels backward")?;
        if dy.shape() != self.out_shape {
            return Err(Error::shape(
                "concat_channels backward",
                format!("gradient {:?} for an output of shape {:?}", dy.shape(), self.out_shape),
            ));
        }
        let mut c_off = 0;
        let mut grads = Vec::with_capacity(self.shapes.len());
        for shape in &self.shapes {
            let dx = Tensor::uninit(dy.device(), shape, "concat gradient")?;
            copy_part(dy, &dx, shape, self.out_shape[1], c_off, true)?;
            c_off += shape[1];
            grads.push(Some(dx));
        }
        Ok(grads)
    }
}

/// f64 CPU reference.
pub mod cpu {
    /// Concatenates row-major parts along axis 1.
    pub fn concat_channels(xs: &[Vec<f64>], shapes: &[Vec<usize>]) -> Vec<f64> {
        let outer = shapes[0][0];
        let inner: usize = shapes[0][2..].iter().product();
        let mut out = Vec::new();
        for o in 0..outer {
            for (x, s) in xs.iter().zip(shapes) {
                let part = s[1] * inner;
                out.extend_from_slice(&x[o * part..(o + 1) * part]);
            }
        }
        out
    }

    /// Splits dy back into the parts' gradients.
    pub fn concat_channels_backward(dy: &[f64], shapes: &[Vec<usize>]) -> Vec<Vec<f64>> {
        let outer = shapes[0][0];
        let inner: usize = shapes[0][2..].iter().product();
        let mut grads: Vec<Vec<f64>> = shapes.iter().map(|_| Vec::new()).collect();
        let mut at = 0;
        for _ in 0..outer {
            for (g, s) in grads.iter_mut().zip(shapes) {
                let part = s[1] * inner;
                g.extend_from_slice(&dy[at..at + part]);
                at += part;
            }
        }
        grads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// Random groups of 1 to 4 compatible shapes, 2-D and 4-D, batch 1 included.
    fn cases(rng: &mut TestRng) -> Vec<Vec<Vec<usize>>> {
        (0..22)
            .map(|case| {
                let n = if case < 3 { 1 } else { rand_dim(rng, 1, 5) };
                let rest: Vec<usize> = if case % 2 == 0 { vec![] } else { vec![rand_dim(rng, 1, 9), rand_dim(rng, 1, 9)] };
                let parts = rand_dim(rng, 1, 4);
                (0..parts)
                    .map(|_| {
                        let mut s = vec![n, rand_dim(rng, 1, 70)];
                        s.extend(&rest);
                        s
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn forward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(51);
        for shapes in cases(&mut rng) {
            let data: Vec<Vec<f64>> = shapes.iter().map(|s| rand_vec(&mut rng, s.iter().product())).collect();
            let ts: Vec<Tensor> = data.iter().zip(&shapes).map(|(d, s)| tensor(&dev, d, s)).collect();
            let (y, _) = concat_channels(&ts.iter().collect::<Vec<_>>()).unwrap();
            let want = cpu::concat_channels(&data, &shapes);
            assert_eq!(y.shape(), concat_shape(&shapes.iter().map(|s| s.as_slice()).collect::<Vec<_>>()).unwrap());
            assert_close(&y.to_vec().unwrap(), &want, 1e-6, &format!("concat {shapes:?}"));
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(52);
        let shapes = vec![vec![2, 3, 2, 2], vec![2, 1, 2, 2], vec![2, 2, 2, 2]];
        let data: Vec<Vec<f64>> = shapes.iter().map(|s| rand_vec(&mut rng, s.iter().product())).collect();
        let w = rand_vec(&mut rng, 2 * 6 * 4);
        let grads = cpu::concat_channels_backward(&w, &shapes);
        for i in 0..shapes.len() {
            // L = sum(w * concat(x_1..x_k)), varying x_i
            let num = numeric_grad(&data[i], |x| {
                let mut parts = data.clone();
                parts[i] = x.to_vec();
                dot(&cpu::concat_channels(&parts, &shapes), &w)
            });
            assert_close_f64(&grads[i], &num, 1e-6, &format!("concat dx{i}"));
        }
    }

    #[test]
    fn backward_matches_reference() {
        let dev = device();
        let mut rng = rng(53);
        for shapes in cases(&mut rng) {
            let ts: Vec<Tensor> = shapes.iter().map(|s| tensor(&dev, &rand_vec(&mut rng, s.iter().product()), s)).collect();
            let (y, bw) = concat_channels(&ts.iter().collect::<Vec<_>>()).unwrap();
            let w = rand_vec(&mut rng, y.len());
            let grads = bw.backward(&tensor(&dev, &w, y.shape())).unwrap();
            let want = cpu::concat_channels_backward(&w, &shapes);
            assert_eq!(grads.len(), shapes.len());
            for (i, (g, wv)) in grads.iter().zip(&want).enumerate() {
                let g = g.as_ref().unwrap();
                assert_eq!(g.shape(), shapes[i].as_slice());
                assert_close(&g.to_vec().unwrap(), wv, 1e-6, &format!("concat dx{i} {shapes:?}"));
            }
        }
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let a = Tensor::zeros(&dev, &[2, 3, 4, 4]).unwrap();
        let b = Tensor::zeros(&dev, &[2, 5, 4, 3]).unwrap();
        let e = concat_channels(&[&a, &b]).err().unwrap().to_string();
        assert!(e.contains("[2, 3, 4, 4]") && e.contains("[2, 5, 4, 3]"), "{e}");
        let c = Tensor::zeros(&dev, &[3, 5]).unwrap();
        let e = concat_channels(&[&a, &c]).err().unwrap().to_string();
        assert!(e.contains("[3, 5]"), "{e}");
        assert!(concat_channels(&[]).is_err());
    }

    #[test]
    fn shader_validates() {
        validate_wgsl("concat", include_str!("../../shaders/concat.wgsl"));
    }
}
