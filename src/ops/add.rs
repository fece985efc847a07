//! Element-wise addition of two same-shaped tensors (residual connections), in-place accumulation
//! (the tape sums gradients with it) and scaling by a constant. Kernels: `shaders/add.wgsl`.

use super::Backward;
use crate::device::{Access, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

const BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite];

static SUM: KernelSpec = KernelSpec { name: "add", source: include_str!("../../shaders/add.wgsl"), entry: "sum", bindings: BINDINGS };
static ACCUMULATE: KernelSpec =
    KernelSpec { name: "add_into", source: include_str!("../../shaders/add.wgsl"), entry: "accumulate", bindings: BINDINGS };
static SCALE: KernelSpec = KernelSpec { name: "scale", source: include_str!("../../shaders/add.wgsl"), entry: "scale", bindings: BINDINGS };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AddParams {
    n: u32,
    s: f32,
    _pad: [u32; 2],
}

/// Records one launch over `out`'s elements: bindings (a, b, out).
fn launch(kernel: &KernelSpec, a: &Tensor, b: &Tensor, out: &Tensor, s: f32) -> Result<()> {
    // vec4s (see shaders/add.wgsl).
    let n = out.len().div_ceil(4);
    let params = AddParams { n: n as u32, s, _pad: [0; 2] };
    let wg = super::elementwise_grid(n);
    a.device().dispatch(kernel, &super::ELEMENTWISE_CONSTS, &params, &[a.buffer(), b.buffer(), out.buffer()], wg)
}

/// The shape rule: both operands f32 with the same shape.
pub fn add_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    a.expect_f32(op)?;
    b.expect_f32(op)?;
    if a.shape() != b.shape() {
        return Err(Error::shape(op, format!("shapes differ: {:?} and {:?}", a.shape(), b.shape())));
    }
    Ok(())
}

/// `a + b` for tensors of the same shape.
pub fn add(a: &Tensor, b: &Tensor) -> Result<(Tensor, AddBackward)> {
    add_shape("add", a, b)?;
    let out = Tensor::uninit(a.device(), a.shape(), "add output")?;
    launch(&SUM, a, b, &out, 0.0)?;
    Ok((out, AddBackward))
}

/// `acc += x` in place (same shape). `x` may be `acc` itself (then `acc` is doubled).
pub fn add_into(acc: &Tensor, x: &Tensor) -> Result<()> {
    add_shape("add_into", acc, x)?;
    if acc.id() == x.id() {
        // One buffer cannot be bound both read-only and read-write in one dispatch: add a copy.
        let copy = x.deep_clone()?;
        return launch(&ACCUMULATE, &copy, &copy, acc, 0.0);
    }
    launch(&ACCUMULATE, x, x, acc, 0.0)
}

/// `x * s` in a new tensor.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    x.expect_f32("scale")?;
    let out = Tensor::uninit(x.device(), x.shape(), "scale output")?;
    launch(&SCALE, x, x, &out, s)?;
    Ok(out)
}

/// `x * s` with its backward, for the tape (the mean of test-time copies).
pub fn scale_op(x: &Tensor, s: f32) -> Result<(Tensor, ScaleBackward)> {
    Ok((scale(x, s)?, ScaleBackward { s }))
}

pub struct ScaleBackward {
    s: f32,
}

impl Backward for ScaleBackward {
    fn name(&self) -> &'static str {
        "scale"
    }
    // d/dx (x * s) = s.
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(scale(dy, self.s)?)])
    }
}

/// Backward of `add`. The two gradients it returns share `dy`'s buffer: callers that accumulate
/// must do so out of place (the tape adds with [`add`]) or copy first.
pub struct AddBackward;

impl Backward for AddBackward {
    fn name(&self) -> &'static str {
        "add"
    }
    // d/da (a + b) = d/db (a + b) = 1: both gradients are dy.
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(dy.clone()), Some(dy.clone())])
    }
}

/// f64 CPU reference.
pub mod cpu {
    pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| x + y).collect()
    }
    /// Gradients of `add` for `dy`: (da, db).
    pub fn add_backward(dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        (dy.to_vec(), dy.to_vec())
    }
    pub fn scale(x: &[f64], s: f64) -> Vec<f64> {
        x.iter().map(|v| v * s).collect()
    }
    /// Gradient of `scale` for `dy`.
    pub fn scale_backward(dy: &[f64], s: f64) -> Vec<f64> {
        scale(dy, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// Random shapes of 1 to 4 dimensions, batch 1 first, sizes that are not multiples of 256.
    fn shapes(rng: &mut TestRng) -> Vec<Vec<usize>> {
        elementwise_shapes(rng, &[&[1, 1], &[1, 7, 3, 3], &[3, 300], &[2, 5, 13, 11]])
    }

    #[test]
    fn forward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(21);
        for shape in shapes(&mut rng) {
            let n = shape.iter().product();
            let (a, b) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
            let (y, _) = add(&tensor(&dev, &a, &shape), &tensor(&dev, &b, &shape)).unwrap();
            assert_close(&y.to_vec().unwrap(), &cpu::add(&a, &b), 1e-4, &format!("add {shape:?}"));
            let s = rng_scale(&mut rng);
            let scaled = scale(&tensor(&dev, &a, &shape), s as f32).unwrap();
            assert_close(&scaled.to_vec().unwrap(), &cpu::scale(&a, s as f32 as f64), 1e-4, &format!("scale {shape:?}"));
        }
    }

    fn rng_scale(rng: &mut TestRng) -> f64 {
        rand_vec(rng, 1)[0] * 3.0
    }

    #[test]
    fn add_into_accumulates_in_place() {
        let dev = device();
        let mut rng = rng(22);
        for shape in shapes(&mut rng) {
            let n = shape.iter().product();
            let (a, b) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
            let acc = tensor(&dev, &a, &shape);
            add_into(&acc, &tensor(&dev, &b, &shape)).unwrap();
            assert_close(&acc.to_vec().unwrap(), &cpu::add(&a, &b), 1e-4, &format!("add_into {shape:?}"));
            // Accumulating a tensor into itself doubles it.
            add_into(&acc, &acc.clone()).unwrap();
            assert_close(&acc.to_vec().unwrap(), &cpu::scale(&cpu::add(&a, &b), 2.0), 1e-4, &format!("add_into self {shape:?}"));
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(23);
        let n = 17;
        let (a, b, w) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n), rand_vec(&mut rng, n));
        // L = sum(w * (a + b))
        let num_da = numeric_grad(&a, |x| dot(&cpu::add(x, &b), &w));
        let num_db = numeric_grad(&b, |x| dot(&cpu::add(&a, x), &w));
        let (da, db) = cpu::add_backward(&w);
        assert_close_f64(&da, &num_da, 1e-6, "add da");
        assert_close_f64(&db, &num_db, 1e-6, "add db");
        // L = sum(w * (a * s))
        let s = rng_scale(&mut rng);
        let num_scale = numeric_grad(&a, |x| dot(&cpu::scale(x, s), &w));
        assert_close_f64(&cpu::scale_backward(&w, s), &num_scale, 1e-6, "scale dx");
    }

    #[test]
    fn backward_matches_reference() {
        let dev = device();
        let mut rng = rng(24);
        for shape in shapes(&mut rng) {
            let n = shape.iter().product();
            let (a, b, w) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n), rand_vec(&mut rng, n));
            let (_, bw) = add(&tensor(&dev, &a, &shape), &tensor(&dev, &b, &shape)).unwrap();
            let grads = bw.backward(&tensor(&dev, &w, &shape)).unwrap();
            let (da, db) = cpu::add_backward(&w);
            assert_eq!(grads.len(), 2);
            assert_close(&grads[0].as_ref().unwrap().to_vec().unwrap(), &da, 1e-4, &format!("add da {shape:?}"));
            assert_close(&grads[1].as_ref().unwrap().to_vec().unwrap(), &db, 1e-4, &format!("add db {shape:?}"));
            let s = rng_scale(&mut rng) as f32;
            let (_, bw) = scale_op(&tensor(&dev, &a, &shape), s).unwrap();
            let dx = bw.backward(&tensor(&dev, &w, &shape)).unwrap().remove(0).unwrap();
            assert_close(&dx.to_vec().unwrap(), &cpu::scale_backward(&w, s as f64), 1e-4, &format!("scale dx {shape:?}"));
        }
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let a = Tensor::zeros(&dev, &[2, 3]).unwrap();
        let b = Tensor::zeros(&dev, &[3, 2]).unwrap();
        let e = add(&a, &b).err().unwrap().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        let e = add_into(&a, &b).unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    }

    #[test]
    fn shader_validates() {
        validate_wgsl("add", include_str!("../../shaders/add.wgsl"));
    }
}
