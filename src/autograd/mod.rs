//! The tape: an arena of recorded ops. Recording order is already topological, so backward is a
//! reverse loop that adds each node's input gradients into a gradient store. A tensor that feeds
//! several ops (skip connections) gets the sum of their gradients.

mod functions;

use crate::error::{Error, Result};
use crate::ops::Backward;
use crate::tensor::Tensor;
use std::cell::RefCell;

/// A value on the tape: its tensor and its slot. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Var {
    id: usize,
    value: Tensor,
    needs_grad: bool,
}

impl Var {
    pub fn value(&self) -> &Tensor {
        &self.value
    }
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
    pub fn needs_grad(&self) -> bool {
        self.needs_grad
    }
}

struct Node {
    inputs: Vec<Option<usize>>, // var ids of the inputs that need a gradient
    output: usize,
    backward: Box<dyn Backward>,
}

/// Records ops while `recording`; a no-grad tape (evaluation, inference) records nothing and keeps
/// no saved tensors.
pub struct Tape {
    recording: bool,
    nodes: RefCell<Vec<Node>>,
    next_id: RefCell<usize>,
    /// Parameter tensors (by buffer identity) and their vars, so gradients can be looked up by tensor.
    params: RefCell<Vec<(usize, usize)>>,
}

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

impl Tape {
    pub fn new() -> Tape {
        Tape { recording: true, nodes: RefCell::default(), next_id: RefCell::new(0), params: RefCell::default() }
    }

    /// A tape that records nothing: forward only.
    pub fn no_grad() -> Tape {
        Tape { recording: false, ..Tape::new() }
    }

    pub fn is_recording(&self) -> bool {
        self.recording
    }

    fn fresh(&self, value: Tensor, needs_grad: bool) -> Var {
        let mut n = self.next_id.borrow_mut();
        *n += 1;
        Var { id: *n - 1, value, needs_grad: needs_grad && self.recording }
    }

    /// A value that needs no gradient (inputs, labels).
    pub fn constant(&self, value: Tensor) -> Var {
        self.fresh(value, false)
    }

    /// A trainable parameter: its gradient is kept by `backward`.
    pub fn param(&self, value: &Tensor) -> Var {
        let v = self.fresh(value.clone(), true);
        self.params.borrow_mut().push((value.id(), v.id));
        v
    }

    /// Records an op's output. Nothing is kept when no input needs a gradient.
    pub fn record(&self, inputs: &[Option<&Var>], output: Tensor, backward: impl Backward + 'static) -> Var {
        let needs = self.recording && inputs.iter().flatten().any(|v| v.needs_grad);
        let out = self.fresh(output, needs);
        if needs {
            let inputs = inputs.iter().map(|v| v.filter(|v| v.needs_grad).map(|v| v.id)).collect();
            self.nodes.borrow_mut().push(Node { inputs, output: out.id, backward: Box::new(backward) });
        }
        out
    }

    /// Runs backward from a scalar (one-element) loss, seeded with dL/dL = 1. Returns the gradient
    /// of every parameter the loss depends on.
    pub fn backward(&self, loss: &Var) -> Result<Gradients> {
        if loss.value.len() != 1 {
            return Err(Error::shape("backward", format!("needs a one-element loss, got {:?}", loss.shape())));
        }
        let seed = Tensor::full(loss.value.device(), loss.shape(), 1.0)?;
        self.backward_with(loss, seed)
    }

    /// Runs backward from `var` seeded with `grad` (same shape).
    pub fn backward_with(&self, var: &Var, grad: Tensor) -> Result<Gradients> {
        if !self.recording {
            return Err(Error::Invalid("backward on a no-grad tape".into()));
        }
        if grad.shape() != var.shape() {
            return Err(Error::shape("backward", format!("seed gradient {:?} for a value of shape {:?}", grad.shape(), var.shape())));
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; *self.next_id.borrow()];
        grads[var.id] = Some(grad);
        let nodes = self.nodes.borrow();
        for node in nodes.iter().rev() {
            let Some(g) = grads[node.output].take() else { continue };
            let needed: Vec<bool> = node.inputs.iter().map(Option::is_some).collect();
            let input_grads = node.backward.backward_needed(&g, &needed)?;
            if input_grads.len() != node.inputs.len() {
                return Err(Error::Other(format!(
                    "{}: backward returned {} gradients for {} inputs",
                    node.backward.name(),
                    input_grads.len(),
                    node.inputs.len()
                )));
            }
            for (slot, ig) in node.inputs.iter().zip(input_grads) {
                let (Some(id), Some(ig)) = (slot, ig) else { continue };
                accumulate(&mut grads[*id], ig)?;
            }
        }
        Ok(Gradients { grads, params: self.params.borrow().clone() })
    }
}

/// Adds a new gradient contribution into a slot.
fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    match slot {
        None => *slot = Some(g),
        Some(acc) => {
            if acc.shape() != g.shape() {
                return Err(Error::shape("backward", format!("gradient {:?} added to {:?}", g.shape(), acc.shape())));
            }
            // The first contribution may be a tensor an op still holds (e.g. add passes dy through);
            // copy before accumulating in place.
            let sum = crate::ops::add::add(acc, &g)?.0;
            *acc = sum;
        }
    }
    Ok(())
}

/// Gradients by variable, as returned by [`Tape::backward`].
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
    params: Vec<(usize, usize)>,
}

impl Gradients {
    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.grads.get(var.id).and_then(|g| g.as_ref())
    }

    /// The gradient of a parameter registered with [`Tape::param`], by its tensor. Register a
    /// parameter once per tape and reuse its `Var`: the gradients of all its uses add up.
    pub fn of(&self, param: &Tensor) -> Option<&Tensor> {
        let mut found = self.params.iter().filter(|(t, _)| *t == param.id()).filter_map(|(_, v)| self.grads[*v].as_ref());
        let first = found.next();
        debug_assert!(found.next().is_none(), "parameter registered twice on one tape");
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::cpu::matmul;
    use crate::testing::*;

    /// y = x W1 + relu(x W2): x feeds two ops, so its gradient is the sum of both paths.
    #[test]
    fn gradients_accumulate_over_several_uses() {
        let dev = device();
        let mut rng = rng(31);
        let (n, k, m) = (3, 4, 5);
        let (x, w1, w2, dy) = (rand_vec(&mut rng, n * k), rand_vec(&mut rng, k * m), rand_vec(&mut rng, k * m), rand_vec(&mut rng, n * m));
        let loss = |x: &[f64], w1: &[f64], w2: &[f64]| {
            let a = matmul(x, [n, k], w1, [k, m], false, false);
            let b = matmul(x, [n, k], w2, [k, m], false, false);
            a.iter().zip(&b).zip(&dy).map(|((a, b), d)| (a + b.max(0.0)) * d).sum::<f64>()
        };
        let tape = Tape::new();
        let xv = tape.param(&tensor(&dev, &x, &[n, k]));
        let w1v = tape.param(&tensor(&dev, &w1, &[k, m]));
        let w2v = tape.param(&tensor(&dev, &w2, &[k, m]));
        let a = tape.matmul(&xv, &w1v, false, false).unwrap();
        let b = tape.matmul(&xv, &w2v, false, false).unwrap();
        let b = tape.relu(&b).unwrap();
        let y = tape.add(&a, &b).unwrap();
        let grads = tape.backward_with(&y, tensor(&dev, &dy, &[n, m])).unwrap();
        let want_dx = numeric_grad(&x, |x| loss(x, &w1, &w2));
        let want_dw2 = numeric_grad(&w2, |w2| loss(&x, &w1, w2));
        assert_close(&grads.get(&xv).unwrap().to_vec().unwrap(), &want_dx, 1e-3, "dx through two paths");
        assert_close(&grads.of(w2v.value()).unwrap().to_vec().unwrap(), &want_dw2, 1e-3, "dW2 through relu");
    }

    #[test]
    fn no_grad_tape_records_nothing() {
        let dev = device();
        let tape = Tape::no_grad();
        let x = tape.param(&Tensor::full(&dev, &[2, 2], 1.0).unwrap());
        let y = tape.matmul(&x, &x, false, false).unwrap();
        assert!(!y.needs_grad());
        assert_eq!(tape.nodes.borrow().len(), 0);
        assert!(tape.backward(&tape.reshape(&y, &[4]).unwrap()).is_err());
        assert_eq!(y.value().to_vec().unwrap(), vec![2.0; 4]);
    }

    #[test]
    fn constants_get_no_gradient_and_backward_needs_a_scalar() {
        let dev = device();
        let tape = Tape::new();
        let x = tape.constant(Tensor::full(&dev, &[1, 2], 1.0).unwrap());
        let w = tape.param(&Tensor::full(&dev, &[2, 1], 3.0).unwrap());
        let y = tape.matmul(&x, &w, false, false).unwrap();
        let g = tape.backward(&y).unwrap();
        assert!(g.get(&x).is_none());
        assert_eq!(g.get(&w).unwrap().to_vec().unwrap(), vec![1.0, 1.0]);
        let wide = tape.matmul(&w, &x, false, false).unwrap();
        assert!(tape.backward(&wide).err().unwrap().to_string().contains("one-element"));
    }
}
