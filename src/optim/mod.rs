//! Optimizers: they see only (parameter, gradient) pairs and their own state. Each update is one
//! fused elementwise kernel per parameter that rewrites the parameter and its accumulators in place.

pub mod adadelta;
pub mod adam;
pub mod sgd;

pub use adadelta::Adadelta;
pub use adam::Adam;
pub use sgd::Sgd;

use crate::device::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

pub trait Optimizer {
    /// Applies one update to every parameter from its gradient (recorded, not submitted).
    fn step(&mut self, params: &[(&Tensor, &Tensor)]) -> Result<()>;
    fn name(&self) -> String;
    /// The learning rate the next step uses.
    fn learning_rate(&self) -> f32;
    /// Changes the learning rate of the following steps (a schedule's lever); state is kept.
    fn set_learning_rate(&mut self, lr: f32);
}

/// Tolerance of the optimizer tests against their f64 references after a few steps: a parameter
/// that ends near zero has lost digits to cancellation (p0 - lr * sum of steps) at f32 precision,
/// which the error metric's floor (1e-3 of the largest value) magnifies up to ~1e-4.
#[cfg(test)]
const STEP_TOL: f64 = 1e-4;

/// Workgroup size of the optimizer kernels (`const WG` in their shaders).
const WG: usize = 256;

/// One parameter's accumulators. The entry keeps a clone of the parameter so its buffer (whose
/// address is the key) cannot be freed and reused by another tensor while the state lives.
struct Slot {
    _param: Tensor,
    state: Vec<Tensor>,
    steps: u64,
}

/// Per-parameter state, created zeroed on first sight and keyed by the parameter's buffer identity.
#[derive(Default)]
struct StateStore {
    slots: HashMap<usize, Slot>,
}

impl StateStore {
    /// The state of `param` (`count` zeroed tensors of its shape on first sight).
    fn get(&mut self, param: &Tensor, count: usize) -> Result<&mut Slot> {
        use std::collections::hash_map::Entry;
        match self.slots.entry(param.id()) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let state = (0..count).map(|_| Tensor::zeros(param.device(), param.shape())).collect::<Result<Vec<_>>>()?;
                Ok(e.insert(Slot { _param: param.clone(), state, steps: 0 }))
            }
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// A parameter and its gradient must be distinct f32 tensors of one shape.
fn check_pair(op: &'static str, param: &Tensor, grad: &Tensor) -> Result<()> {
    if param.shape() != grad.shape() {
        return Err(Error::shape(op, format!("parameter {:?} and gradient {:?} differ in shape", param.shape(), grad.shape())));
    }
    if param.dtype() != DType::F32 || grad.dtype() != DType::F32 {
        return Err(Error::shape(
            op,
            format!(
                "expects f32 parameter and gradient, got {:?} {:?} and {:?} {:?}",
                param.dtype(),
                param.shape(),
                grad.dtype(),
                grad.shape()
            ),
        ));
    }
    if param.id() == grad.id() {
        return Err(Error::Invalid(format!("{op}: the gradient of parameter {:?} is the parameter itself", param.shape())));
    }
    Ok(())
}

/// Checks every pair before any update is recorded, so a bad pair leaves all parameters untouched.
fn check_all(op: &'static str, params: &[(&Tensor, &Tensor)]) -> Result<()> {
    params.iter().try_for_each(|(p, g)| check_pair(op, p, g))
}

/// Workgroups for an elementwise kernel over `len` elements.
fn elementwise_grid(len: usize) -> [u32; 3] {
    crate::ops::grid_1d(crate::ops::groups(len, WG))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// Every optimizer rejects a gradient of another shape, naming both shapes.
    #[test]
    fn mismatched_shapes_are_errors_naming_both() {
        let dev = device();
        let p = Tensor::zeros(&dev, &[3, 4]).unwrap();
        let g = Tensor::zeros(&dev, &[4, 3]).unwrap();
        let mut opts: Vec<Box<dyn Optimizer>> = vec![Box::new(Adadelta::default()), Box::new(Sgd::new(0.1)), Box::new(Adam::default())];
        for opt in opts.iter_mut() {
            let e = opt.step(&[(&p, &g)]).unwrap_err().to_string();
            assert!(e.contains("[3, 4]") && e.contains("[4, 3]"), "{}: {e}", opt.name());
            let e = opt.step(&[(&p, &p)]).unwrap_err().to_string();
            assert!(e.contains("itself"), "{}: {e}", opt.name());
            // A bad pair anywhere in the list leaves every parameter untouched.
            let good = Tensor::full(&dev, &[5], 1.0).unwrap();
            let good_grad = Tensor::full(&dev, &[5], 0.5).unwrap();
            assert!(opt.step(&[(&good, &good_grad), (&p, &g)]).is_err());
            assert_eq!(good.to_vec().unwrap(), vec![1.0; 5], "{}", opt.name());
        }
    }
}
