//! Matrix multiply: one strided, batched GEMM kernel (`shaders/matmul.wgsl`) that dense and conv
//! use in forward and backward, and the `matmul` op on 2-D tensors with optional transposes.

use super::Backward;
use crate::device::{Access, Device, GpuBuffer, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

static GEMM: KernelSpec = KernelSpec {
    name: "matmul",
    source: include_str!("../../shaders/matmul.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
};

pub const BIAS_N: u32 = 1;
pub const BIAS_M: u32 = 2;
pub const ACCUMULATE: u32 = 4;
pub const REDUCE_BATCH: u32 = 8;

/// Where an operand's elements are: element (row, col) of batch `b` is at
/// `offset + b * batch + row * row + col * col`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strides {
    pub row: u32,
    pub col: u32,
    pub batch: u32,
    pub offset: u32,
}

impl Strides {
    /// A row-major `rows x cols` matrix, or its transpose when `transposed`.
    pub fn matrix(rows: usize, cols: usize, transposed: bool) -> Strides {
        // `rows x cols` is the logical shape; storage is `cols x rows` when transposed.
        if transposed {
            Strides { row: 1, col: rows as u32, batch: (rows * cols) as u32, offset: 0 }
        } else {
            Strides { row: cols as u32, col: 1, batch: (rows * cols) as u32, offset: 0 }
        }
    }
    pub fn with_batch(self, batch: usize) -> Strides {
        Strides { batch: batch as u32, ..self }
    }
}

/// One GEMM launch: C (m x n) = A (m x k) * B (k x n), for `batch` matrices.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: Strides,
    pub b: Strides,
    pub c: Strides,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    sa_m: u32,
    sa_k: u32,
    sa_b: u32,
    a_off: u32,
    sb_k: u32,
    sb_n: u32,
    sb_b: u32,
    b_off: u32,
    sc_m: u32,
    sc_n: u32,
    sc_b: u32,
    c_off: u32,
    flags: u32,
    _pad: [u32; 3],
}

/// Register tile (rows x cols of C per invocation) and workgroup shape. Parameters, not constants:
/// lavapipe likes big register tiles, real GPUs may prefer others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub tm: u32,
    pub tn: u32,
    pub wg_x: u32,
    pub wg_y: u32,
}

impl Tiling {
    pub const fn new(tm: u32, tn: u32, wg_x: u32, wg_y: u32) -> Self {
        Tiling { tm, tn, wg_x, wg_y }
    }
    /// The tiling used unless one is given: NETMORPH_GEMM_TILING="TMxTN/WXxWY" overrides it.
    pub fn default_for(_device: &Device) -> Tiling {
        if let Ok(s) = std::env::var("NETMORPH_GEMM_TILING") {
            if let Some(t) = Tiling::parse(&s) {
                return t;
            }
        }
        Tiling::new(4, 4, 8, 8)
    }
    pub fn parse(s: &str) -> Option<Tiling> {
        let (t, w) = s.split_once('/')?;
        let (tm, tn) = t.split_once('x')?;
        let (wx, wy) = w.split_once('x')?;
        Some(Tiling::new(tm.parse().ok()?, tn.parse().ok()?, wx.parse().ok()?, wy.parse().ok()?))
    }
}

/// Records one GEMM. `bias` is required when `flags` has BIAS_N or BIAS_M.
pub fn gemm(device: &Device, g: &Gemm, a: &GpuBuffer, b: &GpuBuffer, bias: Option<&GpuBuffer>, c: &GpuBuffer) -> Result<()> {
    gemm_tiled(device, g, a, b, bias, c, Tiling::default_for(device))
}

pub fn gemm_tiled(
    device: &Device,
    g: &Gemm,
    a: &GpuBuffer,
    b: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    c: &GpuBuffer,
    t: Tiling,
) -> Result<()> {
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(());
    }
    if (g.flags & (BIAS_N | BIAS_M)) != 0 && bias.is_none() {
        return Err(Error::Invalid("gemm: bias flag without a bias buffer".into()));
    }
    let params = GemmParams {
        m: g.m as u32,
        n: g.n as u32,
        k: g.k as u32,
        batch: g.batch as u32,
        sa_m: g.a.row,
        sa_k: g.a.col,
        sa_b: g.a.batch,
        a_off: g.a.offset,
        sb_k: g.b.row,
        sb_n: g.b.col,
        sb_b: g.b.batch,
        b_off: g.b.offset,
        sc_m: g.c.row,
        sc_n: g.c.col,
        sc_b: g.c.batch,
        c_off: g.c.offset,
        flags: g.flags,
        _pad: [0; 3],
    };
    let z = if g.flags & REDUCE_BATCH != 0 { 1 } else { g.batch as u32 };
    let wg = [super::groups(g.n, (t.tn * t.wg_x) as usize), super::groups(g.m, (t.tm * t.wg_y) as usize), z];
    let consts = [("TM", t.tm), ("TN", t.tn), ("WG_X", t.wg_x), ("WG_Y", t.wg_y)];
    device.dispatch(&GEMM, &consts, &params, &[a, b, bias.unwrap_or(a), c], wg)
}

/// op(A) * op(B) for 2-D tensors, op = transpose where asked. A is `[m, k]` (`[k, m]` when
/// `trans_a`), B is `[k, n]` (`[n, k]` when `trans_b`).
pub fn matmul(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    let (m, k, n) = matmul_shape(a.shape(), b.shape(), trans_a, trans_b)?;
    let out = Tensor::uninit(a.device(), &[m, n], "matmul output")?;
    let g = Gemm {
        m,
        n,
        k,
        batch: 1,
        a: Strides::matrix(m, k, trans_a),
        b: Strides::matrix(k, n, trans_b),
        c: Strides::matrix(m, n, false),
        flags: 0,
    };
    gemm(a.device(), &g, a.buffer(), b.buffer(), None, out.buffer())?;
    Ok(out)
}

/// The shape rule: returns (m, k, n) or an error naming both shapes.
pub fn matmul_shape(a: &[usize], b: &[usize], trans_a: bool, trans_b: bool) -> Result<(usize, usize, usize)> {
    if a.len() != 2 || b.len() != 2 {
        return Err(Error::shape("matmul", format!("expects 2-D operands, got {a:?} and {b:?}")));
    }
    let (m, k) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let (k2, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("inner dimensions differ: {a:?}{} x {b:?}{}", if trans_a { "^T" } else { "" }, if trans_b { "^T" } else { "" }),
        ));
    }
    Ok((m, k, n))
}

/// Forward with its backward, for the tape.
pub fn matmul_op(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<(Tensor, MatmulBackward)> {
    let out = matmul(a, b, trans_a, trans_b)?;
    Ok((out, MatmulBackward { a: a.clone(), b: b.clone(), trans_a, trans_b }))
}

pub struct MatmulBackward {
    a: Tensor,
    b: Tensor,
    trans_a: bool,
    trans_b: bool,
}

impl Backward for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    // C = op(A) op(B):  dop(A) = dC op(B)^T,  dop(B) = op(A)^T dC.
    fn backward(&self, dc: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b, ta, tb) = (&self.a, &self.b, self.trans_a, self.trans_b);
        let da = if ta { matmul(b, dc, tb, true)? } else { matmul(dc, b, false, !tb)? };
        let db = if tb { matmul(dc, a, true, ta)? } else { matmul(a, dc, !ta, false)? };
        Ok(vec![Some(da), Some(db)])
    }
}

/// f64 CPU reference.
pub mod cpu {
    /// op(A) op(B) with A, B row-major as stored.
    pub fn matmul(a: &[f64], a_shape: [usize; 2], b: &[f64], b_shape: [usize; 2], ta: bool, tb: bool) -> Vec<f64> {
        let (m, k) = if ta { (a_shape[1], a_shape[0]) } else { (a_shape[0], a_shape[1]) };
        let n = if tb { b_shape[0] } else { b_shape[1] };
        let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
        let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn matmul_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(1);
        for case in 0..24 {
            let (m, k, n) =
                if case == 0 { (1, 1, 1) } else { (rand_dim(&mut rng, 1, 70), rand_dim(&mut rng, 1, 70), rand_dim(&mut rng, 1, 70)) };
            let ta = case % 2 == 1;
            let tb = case % 4 >= 2;
            let a_shape = if ta { [k, m] } else { [m, k] };
            let b_shape = if tb { [n, k] } else { [k, n] };
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let ga = tensor(&dev, &a, &a_shape);
            let gb = tensor(&dev, &b, &b_shape);
            let got = matmul(&ga, &gb, ta, tb).unwrap().to_vec().unwrap();
            let want = cpu::matmul(&a, a_shape, &b, b_shape, ta, tb);
            assert_close(&got, &want, 1e-4, &format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"));
        }
    }

    #[test]
    fn tilings_agree() {
        let dev = device();
        let mut rng = rng(2);
        let (m, k, n) = (37, 29, 53);
        let a = rand_vec(&mut rng, m * k);
        let b = rand_vec(&mut rng, k * n);
        let want = cpu::matmul(&a, [m, k], &b, [k, n], false, false);
        for t in [Tiling::new(1, 1, 16, 16), Tiling::new(4, 4, 8, 8), Tiling::new(8, 8, 8, 8), Tiling::new(2, 8, 16, 4)] {
            let ga = tensor(&dev, &a, &[m, k]);
            let gb = tensor(&dev, &b, &[k, n]);
            let out = Tensor::uninit(&dev, &[m, n], "out").unwrap();
            let g = Gemm {
                m,
                n,
                k,
                batch: 1,
                a: Strides::matrix(m, k, false),
                b: Strides::matrix(k, n, false),
                c: Strides::matrix(m, n, false),
                flags: 0,
            };
            gemm_tiled(&dev, &g, ga.buffer(), gb.buffer(), None, out.buffer(), t).unwrap();
            assert_close(&out.to_vec().unwrap(), &want, 1e-4, &format!("tiling {t:?}"));
        }
    }

    #[test]
    fn batched_reduce_bias_and_accumulate() {
        let dev = device();
        let mut rng = rng(3);
        let (bsz, m, k, n) = (3, 5, 7, 6);
        let a = rand_vec(&mut rng, bsz * m * k);
        let b = rand_vec(&mut rng, bsz * k * n);
        let bias = rand_vec(&mut rng, m);
        let c0 = rand_vec(&mut rng, m * n);
        let ga = tensor(&dev, &a, &[bsz, m, k]);
        let gb = tensor(&dev, &b, &[bsz, k, n]);
        let gbias = tensor(&dev, &bias, &[m]);
        let gc = tensor(&dev, &c0, &[m, n]);
        let g = Gemm {
            m,
            n,
            k,
            batch: bsz,
            a: Strides::matrix(m, k, false),
            b: Strides::matrix(k, n, false),
            c: Strides::matrix(m, n, false).with_batch(0),
            flags: REDUCE_BATCH | ACCUMULATE | BIAS_M,
        };
        gemm(&dev, &g, ga.buffer(), gb.buffer(), Some(gbias.buffer()), gc.buffer()).unwrap();
        let mut want = c0.clone();
        for bi in 0..bsz {
            let p = cpu::matmul(&a[bi * m * k..(bi + 1) * m * k], [m, k], &b[bi * k * n..(bi + 1) * k * n], [k, n], false, false);
            for (w, v) in want.iter_mut().zip(p) {
                *w += v;
            }
        }
        // The bias is added once per output element by the kernel.
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] += bias[i];
            }
        }
        assert_close(&gc.to_vec().unwrap(), &want, 1e-4, "reduce+accumulate+bias");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dev = device();
        let mut rng = rng(4);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (m, k, n) = (3, 4, 5);
            let a_shape = if ta { [k, m] } else { [m, k] };
            let b_shape = if tb { [n, k] } else { [k, n] };
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let w = rand_vec(&mut rng, m * n); // L = sum(w * C)
            let loss = |a: &[f64], b: &[f64]| dot(&cpu::matmul(a, a_shape, b, b_shape, ta, tb), &w);
            let num_da = numeric_grad(&a, |x| loss(x, &b));
            let num_db = numeric_grad(&b, |x| loss(&a, x));
            let (_, bw) = matmul_op(&tensor(&dev, &a, &a_shape), &tensor(&dev, &b, &b_shape), ta, tb).unwrap();
            let grads = bw.backward(&tensor(&dev, &w, &[m, n])).unwrap();
            assert_close(&grads[0].as_ref().unwrap().to_vec().unwrap(), &num_da, 1e-4, "dA");
            assert_close(&grads[1].as_ref().unwrap().to_vec().unwrap(), &num_db, 1e-4, "dB");
        }
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let a = Tensor::zeros(&dev, &[2, 3]).unwrap();
        let b = Tensor::zeros(&dev, &[4, 5]).unwrap();
        let e = matmul(&a, &b, false, false).unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    }
}
