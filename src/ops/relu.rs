//! ReLU, forward and backward (`shaders/relu.wgsl`). The backward keeps the output, not the input:
//! y > 0 exactly where x > 0.

use super::Backward;
use crate::device::{Access, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

const BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite];

static FORWARD: KernelSpec =
    KernelSpec { name: "relu", source: include_str!("../../shaders/relu.wgsl"), entry: "forward", bindings: BINDINGS };
static BACKWARD: KernelSpec =
    KernelSpec { name: "relu_backward", source: include_str!("../../shaders/relu.wgsl"), entry: "backward", bindings: BINDINGS };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReluParams {
    n: u32,
    _pad: [u32; 3],
}

/// Records one launch over `out`'s elements, four per vec4: bindings (a, b, out).
fn launch(kernel: &KernelSpec, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    let n = out.len().div_ceil(4);
    let params = ReluParams { n: n as u32, _pad: [0; 3] };
    a.device().dispatch(kernel, &super::ELEMENTWISE_CONSTS, &params, &[a.buffer(), b.buffer(), out.buffer()], super::elementwise_grid(n))
}

/// `max(x, 0)`, any shape.
pub fn relu(x: &Tensor) -> Result<(Tensor, ReluBackward)> {
    x.expect_f32("relu")?;
    let y = Tensor::uninit(x.device(), x.shape(), "relu output")?;
    launch(&FORWARD, x, x, &y)?;
    Ok((y.clone(), ReluBackward { y }))
}

pub struct ReluBackward {
    y: Tensor,
}

impl Backward for ReluBackward {
    fn name(&self) -> &'static str {
        "relu"
    }
    // d/dx relu(x) = 1 where x > 0 (equivalently y > 0), else 0.
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        dy.expect_f32("relu backward")?;
        if dy.shape() != self.y.shape() {
            return Err(Error::shape("relu backward", format!("gradient {:?} for an output of shape {:?}", dy.shape(), self.y.shape())));
        }
        let dx = Tensor::uninit(dy.device(), dy.shape(), "relu gradient")?;
        launch(&BACKWARD, &self.y, dy, &dx)?;
        Ok(vec![Some(dx)])
    }
}

/// f64 CPU reference.
pub mod cpu {
    pub fn relu(x: &[f64]) -> Vec<f64> {
        x.iter().map(|v| v.max(0.0)).collect()
    }
    pub fn relu_backward(x: &[f64], dy: &[f64]) -> Vec<f64> {
        x.iter().zip(dy).map(|(x, d)| if *x > 0.0 { *d } else { 0.0 }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn shapes(rng: &mut TestRng) -> Vec<Vec<usize>> {
        elementwise_shapes(rng, &[&[1, 1], &[1, 5, 7, 7], &[3, 257], &[2, 3, 29, 31]])
    }

    #[test]
    fn forward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(31);
        for shape in shapes(&mut rng) {
            let x = rand_vec(&mut rng, shape.iter().product());
            let (y, _) = relu(&tensor(&dev, &x, &shape)).unwrap();
            assert_close(&y.to_vec().unwrap(), &cpu::relu(&x), 1e-6, &format!("relu {shape:?}"));
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(32);
        // Keep inputs away from the kink at 0, where the derivative is undefined.
        let x: Vec<f64> = rand_vec(&mut rng, 40).into_iter().map(|v| if v.abs() < 0.05 { v + 0.1 } else { v }).collect();
        let w = rand_vec(&mut rng, x.len());
        // L = sum(w * relu(x))
        let num = numeric_grad(&x, |x| dot(&cpu::relu(x), &w));
        assert_close_f64(&cpu::relu_backward(&x, &w), &num, 1e-6, "relu dx");
    }

    #[test]
    fn backward_matches_reference() {
        let dev = device();
        let mut rng = rng(33);
        for shape in shapes(&mut rng) {
            let n = shape.iter().product();
            let (x, w) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
            let (_, bw) = relu(&tensor(&dev, &x, &shape)).unwrap();
            let dx = bw.backward(&tensor(&dev, &w, &shape)).unwrap().remove(0).unwrap();
            assert_close(&dx.to_vec().unwrap(), &cpu::relu_backward(&x, &w), 1e-6, &format!("relu dx {shape:?}"));
        }
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let (_, bw) = relu(&Tensor::zeros(&dev, &[2, 3]).unwrap()).unwrap();
        let e = bw.backward(&Tensor::zeros(&dev, &[3, 2]).unwrap()).err().unwrap().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    }

    #[test]
    fn shader_validates() {
        validate_wgsl("relu", include_str!("../../shaders/relu.wgsl"));
    }
}
