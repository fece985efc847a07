//! Adam with bias correction and decoupled weight decay (AdamW when `weight_decay` > 0), as
//! PyTorch's AdamW defines it. The step count is kept per parameter, so a parameter that joins
//! late (after a morphism) gets the bias correction of its own first steps.

use super::{check_all, elementwise_grid, Optimizer, StateStore};
use crate::device::{Access, KernelSpec};
use crate::error::Result;
use crate::tensor::Tensor;

static ADAM: KernelSpec = KernelSpec {
    name: "adam",
    source: include_str!("../../shaders/adam.wgsl"),
    entry: "main",
    bindings: &[Access::ReadWrite, Access::Read, Access::ReadWrite, Access::ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    len: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
}

pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled: the parameter shrinks by `lr * weight_decay` each step, apart from the gradient.
    pub weight_decay: f32,
    /// Per parameter: [first moment, second moment] and its step count.
    state: StateStore,
}

impl Default for Adam {
    /// PyTorch defaults: learning rate 1e-3, betas (0.9, 0.999), epsilon 1e-8, no weight decay.
    fn default() -> Self {
        Adam::new(1e-3, 0.9, 0.999, 1e-8, 0.0)
    }
}

impl Adam {
    pub fn new(lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Self {
        Adam { lr, beta1, beta2, eps, weight_decay, state: StateStore::default() }
    }

    /// Number of parameters with state.
    pub fn tracked(&self) -> usize {
        self.state.len()
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &[(&Tensor, &Tensor)]) -> Result<()> {
        check_all("adam", params)?;
        for &(param, grad) in params {
            let slot = self.state.get(param, 2)?;
            slot.steps += 1;
            // Corrections in f64: 1 - 0.999^t loses digits in f32 for small t.
            let t = slot.steps as i32;
            let prm = AdamParams {
                len: param.len() as u32,
                lr: self.lr,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                weight_decay: self.weight_decay,
                bias_correction1: (1.0 - (self.beta1 as f64).powi(t)) as f32,
                bias_correction2: (1.0 - (self.beta2 as f64).powi(t)) as f32,
            };
            let bufs = [param.buffer(), grad.buffer(), slot.state[0].buffer(), slot.state[1].buffer()];
            param.device().dispatch(&ADAM, &[], &prm, &bufs, elementwise_grid(param.len()))?;
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
        format!("adam(lr={}, betas=({}, {}), eps={:e}, weight_decay={})", self.lr, self.beta1, self.beta2, self.eps, self.weight_decay)
    }
}

/// f64 CPU reference.
pub mod cpu {
    /// Step `t` (from 1) of Adam on `p` with moments `m` and `v`.
    #[allow(clippy::too_many_arguments)]
    pub fn step(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], t: i32, lr: f64, beta1: f64, beta2: f64, eps: f64, wd: f64) {
        let (bc1, bc2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
        for i in 0..p.len() {
            m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
            v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
            p[i] *= 1.0 - lr * wd;
            p[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
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
        let mut rng = rng(41);
        // (lr, beta1, beta2, eps, weight decay)
        let configs = [(1e-3, 0.9, 0.999, 1e-8, 0.0), (1e-2, 0.8, 0.99, 1e-6, 0.01), (5e-3, 0.9, 0.999, 1e-7, 0.1)];
        for case in 0..9 {
            let (lr, b1, b2, eps, wd) = configs[case % configs.len()];
            let n = if case == 0 { 1 } else { rand_dim(&mut rng, 2, 3000) };
            let mut opt = Adam::new(lr as f32, b1 as f32, b2 as f32, eps as f32, wd as f32);
            let mut p = rand_vec(&mut rng, n);
            let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
            let gp = tensor(&dev, &p, &[n]);
            for t in 1..=5 {
                let g = rand_vec(&mut rng, n);
                opt.step(&[(&gp, &tensor(&dev, &g, &[n]))]).unwrap();
                cpu::step(&mut p, &g, &mut m, &mut v, t, as_f32(lr), as_f32(b1), as_f32(b2), as_f32(eps), as_f32(wd));
            }
            assert_close(
                &gp.to_vec().unwrap(),
                &p,
                super::super::STEP_TOL,
                &format!("adam n={n} lr={lr} betas=({b1},{b2}) eps={eps} wd={wd}"),
            );
        }
    }

    #[test]
    fn state_and_step_count_are_per_parameter() {
        let dev = device();
        let mut rng = rng(42);
        let mut opt = Adam::new(1e-2, 0.9, 0.999, 1e-8, 0.0);
        let (n1, n2) = (700, 65);
        let (mut p1, mut p2) = (rand_vec(&mut rng, n1), rand_vec(&mut rng, n2));
        let (mut m1, mut v1, mut m2, mut v2) = (vec![0.0; n1], vec![0.0; n1], vec![0.0; n2], vec![0.0; n2]);
        let (t1, t2) = (tensor(&dev, &p1, &[n1]), tensor(&dev, &p2, &[n2]));
        let h = |x: f64| as_f32(x);
        for step in 1..=4 {
            let (g1, g2) = (rand_vec(&mut rng, n1), rand_vec(&mut rng, n2));
            // The second parameter joins at step 3: its moments start at zero and its own step 1 is
            // corrected as step 1.
            if step < 3 {
                opt.step(&[(&t1, &tensor(&dev, &g1, &[n1]))]).unwrap();
            } else {
                opt.step(&[(&t1, &tensor(&dev, &g1, &[n1])), (&t2, &tensor(&dev, &g2, &[n2]))]).unwrap();
                cpu::step(&mut p2, &g2, &mut m2, &mut v2, step - 2, h(1e-2), h(0.9), h(0.999), h(1e-8), 0.0);
            }
            cpu::step(&mut p1, &g1, &mut m1, &mut v1, step, h(1e-2), h(0.9), h(0.999), h(1e-8), 0.0);
        }
        assert_eq!(opt.tracked(), 2);
        assert_close(&t1.to_vec().unwrap(), &p1, 1e-5, "adam first param");
        assert_close(&t2.to_vec().unwrap(), &p2, 1e-5, "adam second param");
    }
}
