//! Adadelta in its Keras 2 form (the seed's optimizer): the learning rate multiplies the
//! unit-corrected step, and epsilon sits inside both square roots.

use super::{check_all, elementwise_grid, Optimizer, StateStore};
use crate::device::{Access, KernelSpec};
use crate::error::Result;
use crate::tensor::Tensor;

static ADADELTA: KernelSpec = KernelSpec {
    name: "adadelta",
    source: include_str!("../../shaders/adadelta.wgsl"),
    entry: "main",
    bindings: &[Access::ReadWrite, Access::Read, Access::ReadWrite, Access::ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdadeltaParams {
    len: u32,
    lr: f32,
    rho: f32,
    eps: f32,
}

pub struct Adadelta {
    pub lr: f32,
    pub rho: f32,
    pub eps: f32,
    /// Per parameter: [mean square gradient, mean square update].
    state: StateStore,
}

impl Default for Adadelta {
    /// Keras 2 defaults: learning rate 1.0, rho 0.95, epsilon 1e-7.
    fn default() -> Self {
        Adadelta::new(1.0, 0.95, 1e-7)
    }
}

impl Adadelta {
    pub fn new(lr: f32, rho: f32, eps: f32) -> Self {
        Adadelta { lr, rho, eps, state: StateStore::default() }
    }

    /// Number of parameters with state.
    pub fn tracked(&self) -> usize {
        self.state.len()
    }

    #[cfg(test)]
    fn state_of(&mut self, param: &Tensor) -> Vec<Tensor> {
        self.state.get(param, 2).unwrap().state.clone()
    }
}

impl Optimizer for Adadelta {
    fn step(&mut self, params: &[(&Tensor, &Tensor)]) -> Result<()> {
        check_all("adadelta", params)?;
        for &(param, grad) in params {
            let slot = self.state.get(param, 2)?;
            slot.steps += 1;
            let prm = AdadeltaParams { len: param.len() as u32, lr: self.lr, rho: self.rho, eps: self.eps };
            let bufs = [param.buffer(), grad.buffer(), slot.state[0].buffer(), slot.state[1].buffer()];
            param.device().dispatch(&ADADELTA, &[], &prm, &bufs, elementwise_grid(param.len()))?;
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
        format!("adadelta(lr={}, rho={}, eps={:e})", self.lr, self.rho, self.eps)
    }
}

/// f64 CPU reference.
pub mod cpu {
    /// One Adadelta step on `p` with accumulators `a` (squared gradients) and `d` (squared updates).
    pub fn step(p: &mut [f64], g: &[f64], a: &mut [f64], d: &mut [f64], lr: f64, rho: f64, eps: f64) {
        for i in 0..p.len() {
            a[i] = rho * a[i] + (1.0 - rho) * g[i] * g[i];
            let u = g[i] * (d[i] + eps).sqrt() / (a[i] + eps).sqrt();
            p[i] -= lr * u;
            d[i] = rho * d[i] + (1.0 - rho) * u * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// The hyperparameters the kernel sees, for the f64 reference.
    fn as_f32(x: f64) -> f64 {
        x as f32 as f64
    }

    #[test]
    fn steps_match_reference_on_random_sizes() {
        let dev = device();
        let mut rng = rng(21);
        for case in 0..8 {
            let n = if case == 0 { 1 } else { rand_dim(&mut rng, 2, 3000) };
            let (lr, rho, eps) = if case % 2 == 0 { (1.0, 0.95, 1e-7) } else { (0.5, 0.9, 1e-6) };
            let mut opt = Adadelta::new(lr as f32, rho as f32, eps as f32);
            let mut p = rand_vec(&mut rng, n);
            let (mut a, mut d) = (vec![0.0; n], vec![0.0; n]);
            let gp = tensor(&dev, &p, &[n]);
            for _ in 0..5 {
                let g = rand_vec(&mut rng, n);
                opt.step(&[(&gp, &tensor(&dev, &g, &[n]))]).unwrap();
                cpu::step(&mut p, &g, &mut a, &mut d, as_f32(lr), as_f32(rho), as_f32(eps));
            }
            let s = opt.state_of(&gp);
            assert_close(&gp.to_vec().unwrap(), &p, super::super::STEP_TOL, &format!("adadelta param n={n}"));
            assert_close(&s[0].to_vec().unwrap(), &a, super::super::STEP_TOL, &format!("adadelta accum_grad n={n}"));
            assert_close(&s[1].to_vec().unwrap(), &d, super::super::STEP_TOL, &format!("adadelta accum_update n={n}"));
        }
    }

    #[test]
    fn state_is_per_parameter() {
        let dev = device();
        let mut rng = rng(22);
        let mut opt = Adadelta::default();
        let (n1, n2) = (300, 257);
        let (mut p1, mut p2) = (rand_vec(&mut rng, n1), rand_vec(&mut rng, n2));
        let (mut a1, mut d1, mut a2, mut d2) = (vec![0.0; n1], vec![0.0; n1], vec![0.0; n2], vec![0.0; n2]);
        let (t1, t2) = (tensor(&dev, &p1, &[n1]), tensor(&dev, &p2, &[n2]));
        for step in 0..4 {
            let (g1, g2) = (rand_vec(&mut rng, n1), rand_vec(&mut rng, n2));
            // The second parameter joins at step 2: its state must start at zero, not at the first's.
            if step < 2 {
                opt.step(&[(&t1, &tensor(&dev, &g1, &[n1]))]).unwrap();
            } else {
                opt.step(&[(&t1, &tensor(&dev, &g1, &[n1])), (&t2, &tensor(&dev, &g2, &[n2]))]).unwrap();
                cpu::step(&mut p2, &g2, &mut a2, &mut d2, 1.0, as_f32(0.95), as_f32(1e-7));
            }
            cpu::step(&mut p1, &g1, &mut a1, &mut d1, 1.0, as_f32(0.95), as_f32(1e-7));
        }
        assert_eq!(opt.tracked(), 2);
        assert_close(&t1.to_vec().unwrap(), &p1, 1e-5, "adadelta first param");
        assert_close(&t2.to_vec().unwrap(), &p2, 1e-5, "adadelta second param");
    }
}
