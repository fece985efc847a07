//! Stochastic gradient descent with momentum, L2 weight decay and Nesterov momentum, as PyTorch
//! defines them (no dampening).

use super::{check_all, elementwise_grid, Optimizer, StateStore};
use crate::device::{Access, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

static SGD: KernelSpec = KernelSpec {
    name: "sgd",
    source: include_str!("../../shaders/sgd.wgsl"),
    entry: "main",
    bindings: &[Access::ReadWrite, Access::Read, Access::ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    len: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: u32,
    use_velocity: u32,
    _pad: [u32; 2],
}

pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// Per parameter: [velocity] (only with momentum).
    state: StateStore,
    /// Bound in place of a velocity when there is no momentum (the kernel never reads it).
    placeholder: Option<Tensor>,
}

impl Sgd {
    /// Plain SGD.
    pub fn new(lr: f32) -> Self {
        Sgd { lr, momentum: 0.0, weight_decay: 0.0, nesterov: false, state: StateStore::default(), placeholder: None }
    }
    pub fn with_momentum(self, momentum: f32, nesterov: bool) -> Self {
        Sgd { momentum, nesterov, ..self }
    }
    pub fn with_weight_decay(self, weight_decay: f32) -> Self {
        Sgd { weight_decay, ..self }
    }

    /// Number of parameters with state.
    pub fn tracked(&self) -> usize {
        self.state.len()
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &[(&Tensor, &Tensor)]) -> Result<()> {
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::Invalid("sgd: Nesterov momentum needs a momentum above zero".into()));
        }
        check_all("sgd", params)?;
        let use_velocity = self.momentum != 0.0;
        for &(param, grad) in params {
            let prm = SgdParams {
                len: param.len() as u32,
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                nesterov: self.nesterov as u32,
                use_velocity: use_velocity as u32,
                _pad: [0; 2],
            };
            let velocity = if use_velocity {
                let slot = self.state.get(param, 1)?;
                slot.steps += 1;
                slot.state[0].clone()
            } else {
                match &self.placeholder {
                    Some(t) => t.clone(),
                    None => self.placeholder.insert(Tensor::zeros(param.device(), &[1])?).clone(),
                }
            };
            param.device().dispatch(&SGD, &[], &prm, &[param.buffer(), grad.buffer(), velocity.buffer()], elementwise_grid(param.len()))?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f32 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn name(&self) -> String {
        format!("sgd(lr={}, momentum={}, weight_decay={}, nesterov={})", self.lr, self.momentum, self.weight_decay, self.nesterov)
    }
}

/// f64 CPU reference.
pub mod cpu {
    /// One SGD step on `p` with velocity `v` (ignored without momentum).
    pub fn step(p: &mut [f64], g: &[f64], v: &mut [f64], lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) {
        for i in 0..p.len() {
            let g = g[i] + weight_decay * p[i];
            let step = if momentum != 0.0 {
                v[i] = momentum * v[i] + g;
                if nesterov {
                    g + momentum * v[i]
                } else {
                    v[i]
                }
            } else {
                g
            };
            p[i] -= lr * step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn as_f32(x: f64) -> f64 {
        x as f32 as f64
    }

    #[test]
    fn steps_match_reference_on_random_sizes() {
        let dev = device();
        let mut rng = rng(31);
        // (lr, momentum, weight decay, nesterov): plain, momentum, Nesterov, with and without decay.
        let configs =
            [(0.1, 0.0, 0.0, false), (0.05, 0.9, 0.0, false), (0.05, 0.9, 1e-2, true), (0.2, 0.5, 1e-3, false), (0.01, 0.0, 0.1, false)];
        for (case, &(lr, momentum, wd, nesterov)) in configs.iter().chain(configs.iter()).enumerate() {
            let n = if case == 0 { 1 } else { rand_dim(&mut rng, 2, 3000) };
            let mut opt = Sgd::new(lr as f32).with_momentum(momentum as f32, nesterov).with_weight_decay(wd as f32);
            let mut p = rand_vec(&mut rng, n);
            let mut v = vec![0.0; n];
            let gp = tensor(&dev, &p, &[n]);
            for _ in 0..5 {
                let g = rand_vec(&mut rng, n);
                opt.step(&[(&gp, &tensor(&dev, &g, &[n]))]).unwrap();
                cpu::step(&mut p, &g, &mut v, as_f32(lr), as_f32(momentum), as_f32(wd), nesterov);
            }
            assert_close(
                &gp.to_vec().unwrap(),
                &p,
                super::super::STEP_TOL,
                &format!("sgd n={n} lr={lr} momentum={momentum} wd={wd} nesterov={nesterov}"),
            );
            assert_eq!(opt.tracked(), if momentum != 0.0 { 1 } else { 0 });
        }
    }

    #[test]
    fn state_is_per_parameter() {
        let dev = device();
        let mut rng = rng(32);
        let mut opt = Sgd::new(0.1).with_momentum(0.9, false);
        let n = 513;
        let (mut p1, mut p2) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
        let (mut v1, mut v2) = (vec![0.0; n], vec![0.0; n]);
        let (t1, t2) = (tensor(&dev, &p1, &[n]), tensor(&dev, &p2, &[n]));
        for step in 0..4 {
            let (g1, g2) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
            // The second parameter joins at step 2 with a zero velocity of its own.
            if step < 2 {
                opt.step(&[(&t1, &tensor(&dev, &g1, &[n]))]).unwrap();
            } else {
                opt.step(&[(&t2, &tensor(&dev, &g2, &[n])), (&t1, &tensor(&dev, &g1, &[n]))]).unwrap();
                cpu::step(&mut p2, &g2, &mut v2, as_f32(0.1), as_f32(0.9), 0.0, false);
            }
            cpu::step(&mut p1, &g1, &mut v1, as_f32(0.1), as_f32(0.9), 0.0, false);
        }
        assert_eq!(opt.tracked(), 2);
        assert_close(&t1.to_vec().unwrap(), &p1, 1e-5, "sgd first param");
        assert_close(&t2.to_vec().unwrap(), &p2, 1e-5, "sgd second param");
    }

    #[test]
    fn nesterov_without_momentum_is_an_error() {
        let dev = device();
        let p = Tensor::zeros(&dev, &[4]).unwrap();
        let g = Tensor::zeros(&dev, &[4]).unwrap();
        let e = Sgd::new(0.1).with_momentum(0.0, true).step(&[(&p, &g)]).unwrap_err().to_string();
        assert!(e.contains("Nesterov"), "{e}");
    }
}
