//! Image shift by whole pixels with zero fill (`shaders/shift.wgsl`): test-time augmentation runs a
//! network on shifted copies of its input. The backward is the opposite shift: a shift with zero
//! fill moves each value to one place or drops it, so its adjoint moves it back.

use super::Backward;
use crate::device::{Access, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

static SHIFT: KernelSpec = KernelSpec {
    name: "shift",
    source: include_str!("../../shaders/shift.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ShiftParams {
    n: u32,
    height: u32,
    width: u32,
    _pad0: u32,
    dx: i32,
    dy: i32,
    _pad1: [u32; 2],
}

/// The shape rule: an f32 `[n, c, h, w]` tensor, moved by less than its width and height (a larger
/// shift would leave nothing of the image).
pub fn shift_shape(x: &Tensor, [dx, dy]: [i32; 2]) -> Result<()> {
    x.expect_f32("shift")?;
    let &[_, _, h, w] = x.shape() else {
        return Err(Error::shape("shift", format!("needs images [n, c, h, w], got {:?}", x.shape())));
    };
    if dx.unsigned_abs() as usize >= w || dy.unsigned_abs() as usize >= h {
        return Err(Error::shape("shift", format!("a shift of [{dx}, {dy}] moves a {h}x{w} image out of its frame")));
    }
    Ok(())
}

fn launch(x: &Tensor, [dx, dy]: [i32; 2], label: &'static str) -> Result<Tensor> {
    let y = Tensor::uninit(x.device(), x.shape(), label)?;
    let params = ShiftParams { n: x.len() as u32, height: x.dim(2) as u32, width: x.dim(3) as u32, _pad0: 0, dx, dy, _pad1: [0; 2] };
    let wg = super::elementwise_grid(x.len());
    x.device().dispatch(&SHIFT, &super::ELEMENTWISE_CONSTS, &params, &[x.buffer(), y.buffer()], wg)?;
    Ok(y)
}

/// `x` `[n, c, h, w]` with every plane moved by `[dx, dy]` pixels (right and down for positive
/// values), the uncovered pixels zero.
pub fn shift(x: &Tensor, by: [i32; 2]) -> Result<(Tensor, ShiftBackward)> {
    shift_shape(x, by)?;
    Ok((launch(x, by, "shift output")?, ShiftBackward { by, shape: x.shape().to_vec() }))
}

pub struct ShiftBackward {
    by: [i32; 2],
    shape: Vec<usize>,
}

impl Backward for ShiftBackward {
    fn name(&self) -> &'static str {
        "shift"
    }
    // dL/dx[p] = dL/dy[p + d] where p + d is in the frame: the gradient shifted by -d.
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        dy.expect_f32("shift backward")?;
        if dy.shape() != self.shape.as_slice() {
            return Err(Error::shape("shift backward", format!("gradient {:?} for an output of shape {:?}", dy.shape(), self.shape)));
        }
        Ok(vec![Some(launch(dy, self.by.map(|d| -d), "shift gradient")?)])
    }
}

/// f64 CPU reference.
pub mod cpu {
    /// `x` `[n, c, h, w]` (as planes of `h` x `w`) moved by `[dx, dy]`, zero where uncovered.
    pub fn shift(x: &[f64], h: usize, w: usize, [dx, dy]: [i32; 2]) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for (plane_out, plane_in) in out.chunks_mut(h * w).zip(x.chunks(h * w)) {
            for y in 0..h {
                for xx in 0..w {
                    let (sy, sx) = (y as i64 - dy as i64, xx as i64 - dx as i64);
                    if (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx) {
                        plane_out[y * w + xx] = plane_in[sy as usize * w + sx as usize];
                    }
                }
            }
        }
        out
    }

    /// The gradient of `shift` with respect to its input, for the output gradient `dy`.
    pub fn shift_backward(dy: &[f64], h: usize, w: usize, by: [i32; 2]) -> Vec<f64> {
        shift(dy, h, w, by.map(|d| -d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use rand::Rng;

    /// Random image shapes (sizes not multiples of anything) with a shift that fits each.
    fn cases(rng: &mut TestRng) -> Vec<(Vec<usize>, [i32; 2])> {
        let mut out = vec![(vec![1, 1, 1, 1], [0, 0]), (vec![2, 3, 28, 28], [1, -1]), (vec![1, 2, 5, 9], [-8, 4])];
        while out.len() < 16 {
            let shape = vec![rand_dim(rng, 1, 4), rand_dim(rng, 1, 5), rand_dim(rng, 1, 23), rand_dim(rng, 1, 23)];
            let (h, w) = (shape[2] as i32, shape[3] as i32);
            out.push((shape, [rng.random_range(1 - w..w), rng.random_range(1 - h..h)]));
        }
        out
    }

    #[test]
    fn forward_and_backward_match_the_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(61);
        for (shape, by) in cases(&mut rng) {
            let n = shape.iter().product();
            let (h, w) = (shape[2], shape[3]);
            let (x, g) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
            let (y, bw) = shift(&tensor(&dev, &x, &shape), by).unwrap();
            assert_close(&y.to_vec().unwrap(), &cpu::shift(&x, h, w, by), 1e-7, &format!("shift {shape:?} by {by:?}"));
            let dx = bw.backward(&tensor(&dev, &g, &shape)).unwrap().remove(0).unwrap();
            assert_close(&dx.to_vec().unwrap(), &cpu::shift_backward(&g, h, w, by), 1e-7, &format!("shift dx {shape:?} by {by:?}"));
        }
    }

    #[test]
    fn the_reference_moves_pixels_right_and_down() {
        // A 2x3 plane moved one right and one down keeps only its top-left 1x2 corner.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(cpu::shift(&x, 2, 3, [1, 1]), vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0]);
        assert_eq!(cpu::shift(&x, 2, 3, [-1, 0]), vec![2.0, 3.0, 0.0, 5.0, 6.0, 0.0]);
        assert_eq!(cpu::shift(&x, 2, 3, [0, 0]), x.to_vec());
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(62);
        let (h, w) = (5, 7);
        let x = rand_vec(&mut rng, 2 * h * w);
        let g = rand_vec(&mut rng, x.len());
        for by in [[2, -1], [-3, 4], [0, 1]] {
            // L = sum(g * shift(x))
            let num = numeric_grad(&x, |x| dot(&cpu::shift(x, h, w, by), &g));
            assert_close_f64(&cpu::shift_backward(&g, h, w, by), &num, 1e-6, &format!("shift dx by {by:?}"));
        }
    }

    #[test]
    fn bad_shapes_and_shifts_are_named() {
        let dev = device();
        let flat = Tensor::zeros(&dev, &[2, 3]).unwrap();
        let e = shift(&flat, [1, 0]).err().unwrap().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[n, c, h, w]"), "{e}");
        let image = Tensor::zeros(&dev, &[1, 1, 4, 6]).unwrap();
        let e = shift(&image, [6, 0]).err().unwrap().to_string();
        assert!(e.contains("[6, 0]") && e.contains("4x6"), "{e}");
        assert!(shift(&image, [5, -3]).is_ok());
        let (_, bw) = shift(&image, [1, 1]).unwrap();
        let e = bw.backward(&Tensor::zeros(&dev, &[1, 1, 6, 4]).unwrap()).err().unwrap().to_string();
        assert!(e.contains("[1, 1, 6, 4]") && e.contains("[1, 1, 4, 6]"), "{e}");
    }

    #[test]
    fn shader_validates() {
        validate_wgsl("shift", include_str!("../../shaders/shift.wgsl"));
    }
}
