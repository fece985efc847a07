//! Dense (fully connected) layer: y = x W + b, with x `[batch, in]`, W `[in, out]` (Keras layout),
//! b `[out]`. The bias add is fused into the GEMM.

use super::matmul::{gemm, matmul, Gemm, Strides, BIAS_N};
use super::Backward;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub fn dense_shape(x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<Vec<usize>> {
    if x.len() != 2 || w.len() != 2 || x[1] != w[0] {
        return Err(Error::shape("dense", format!("input {x:?} does not fit weights {w:?} (want [batch, in] and [in, out])")));
    }
    if let Some(b) = b {
        if b != [w[1]] {
            return Err(Error::shape("dense", format!("bias {b:?} does not fit weights {w:?}")));
        }
    }
    Ok(vec![x[0], w[1]])
}

pub fn dense(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<(Tensor, DenseBackward)> {
    let shape = dense_shape(x.shape(), w.shape(), b.map(|b| b.shape()))?;
    let (n, k, m) = (x.dim(0), x.dim(1), w.dim(1));
    let out = Tensor::uninit(x.device(), &shape, "dense output")?;
    let g = Gemm {
        m: n,
        n: m,
        k,
        batch: 1,
        a: Strides::matrix(n, k, false),
        b: Strides::matrix(k, m, false),
        c: Strides::matrix(n, m, false),
        flags: if b.is_some() { BIAS_N } else { 0 },
    };
    gemm(x.device(), &g, x.buffer(), w.buffer(), b.map(|b| b.buffer()), out.buffer())?;
    Ok((out, DenseBackward { x: x.clone(), w: w.clone(), has_bias: b.is_some() }))
}

pub struct DenseBackward {
    x: Tensor,
    w: Tensor,
    has_bias: bool,
}

impl Backward for DenseBackward {
    fn name(&self) -> &'static str {
        "dense"
    }
    // dx = dy W^T,  dW = x^T dy,  db = sum over the batch of dy.
    fn backward(&self, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dx = matmul(dy, &self.w, false, true)?;
        let dw = matmul(&self.x, dy, true, false)?;
        let db = if self.has_bias { Some(super::reduce::sum_keep_axis(dy, dy.dim(0), dy.dim(1), 1)?) } else { None };
        Ok(vec![Some(dx), Some(dw), db])
    }
}

pub mod cpu {
    /// y = x W + b.
    pub fn dense(x: &[f64], w: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
        let mut y = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                y[i * m + j] = b[j] + (0..k).map(|p| x[i * k + p] * w[p * m + j]).sum::<f64>();
            }
        }
        y
    }
    /// (dx, dW, db) for upstream gradient dy.
    pub fn dense_backward(x: &[f64], w: &[f64], dy: &[f64], n: usize, k: usize, m: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut dx = vec![0.0; n * k];
        let mut dw = vec![0.0; k * m];
        let mut db = vec![0.0; m];
        for i in 0..n {
            for j in 0..m {
                let g = dy[i * m + j];
                db[j] += g;
                for p in 0..k {
                    dx[i * k + p] += g * w[p * m + j];
                    dw[p * m + j] += g * x[i * k + p];
                }
            }
        }
        (dx, dw, db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn forward_and_backward_match_reference() {
        let dev = device();
        let mut rng = rng(21);
        for case in 0..20 {
            let n = if case == 0 { 1 } else { rand_dim(&mut rng, 1, 40) };
            let (k, m) = (rand_dim(&mut rng, 1, 70), rand_dim(&mut rng, 1, 50));
            let (x, w, b, dy) = (rand_vec(&mut rng, n * k), rand_vec(&mut rng, k * m), rand_vec(&mut rng, m), rand_vec(&mut rng, n * m));
            let (y, bw) = dense(&tensor(&dev, &x, &[n, k]), &tensor(&dev, &w, &[k, m]), Some(&tensor(&dev, &b, &[m]))).unwrap();
            assert_close(&y.to_vec().unwrap(), &cpu::dense(&x, &w, &b, n, k, m), 1e-4, &format!("dense fwd {n}x{k}->{m}"));
            let g = bw.backward(&tensor(&dev, &dy, &[n, m])).unwrap();
            let (dx, dw, db) = cpu::dense_backward(&x, &w, &dy, n, k, m);
            assert_close(&g[0].as_ref().unwrap().to_vec().unwrap(), &dx, 1e-4, "dense dx");
            assert_close(&g[1].as_ref().unwrap().to_vec().unwrap(), &dw, 1e-4, "dense dW");
            assert_close(&g[2].as_ref().unwrap().to_vec().unwrap(), &db, 1e-4, "dense db");
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(22);
        let (n, k, m) = (3, 5, 4);
        let (x, w, b, dy) = (rand_vec(&mut rng, n * k), rand_vec(&mut rng, k * m), rand_vec(&mut rng, m), rand_vec(&mut rng, n * m));
        let (dx, dw, db) = cpu::dense_backward(&x, &w, &dy, n, k, m);
        assert_close_f64(&dx, &numeric_grad(&x, |x| dot(&cpu::dense(x, &w, &b, n, k, m), &dy)), 1e-6, "dense dx");
        assert_close_f64(&dw, &numeric_grad(&w, |w| dot(&cpu::dense(&x, w, &b, n, k, m), &dy)), 1e-6, "dense dW");
        assert_close_f64(&db, &numeric_grad(&b, |b| dot(&cpu::dense(&x, &w, b, n, k, m), &dy)), 1e-6, "dense db");
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let x = Tensor::zeros(&dev, &[2, 3]).unwrap();
        let w = Tensor::zeros(&dev, &[4, 5]).unwrap();
        let e = dense(&x, &w, None).err().unwrap().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    }
}
