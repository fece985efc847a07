//! The convolution as GEMMs: im2col (or x itself, pointwise) and the forward product, the input
//! gradient's dcol product and col2im, the weight gradient's per-image products; the weight and
//! output gradient laid out for them; the batch in chunks whose col buffers fit a binding.

use super::direct::{row_constants, DIRECT_CO};
use super::{dispatch_rows, Conv2dBackward, ConvGemm, ConvGeometry, ConvParams, ConvPlan, WeightLayout, BINDINGS, SUM_BATCH, WG};
use crate::device::{Device, KernelSpec};
use crate::error::Result;
use crate::ops::matmul::{gemm, plan, Gemm, Strides, Tiling, BIAS_M, BIAS_N};
use crate::tensor::Tensor;

static IM2COL: KernelSpec =
    KernelSpec { name: "conv2d_im2col", source: include_str!("../../../shaders/conv2d.wgsl"), entry: "im2col", bindings: BINDINGS };
static COL2IM: KernelSpec =
    KernelSpec { name: "conv2d_col2im", source: include_str!("../../../shaders/conv2d.wgsl"), entry: "col2im", bindings: BINDINGS };
static COL2IM_S1: KernelSpec =
    KernelSpec { name: "conv2d_col2im", source: include_str!("../../../shaders/conv2d.wgsl"), entry: "col2im_s1", bindings: BINDINGS };
static TRANSPOSE_WEIGHT: KernelSpec = KernelSpec {
    name: "conv2d_transpose_weight",
    source: include_str!("../../../shaders/conv2d.wgsl"),
    entry: "transpose_weight",
    bindings: BINDINGS,
};
static TRANSPOSE_GRAD: KernelSpec = KernelSpec {
    name: "conv2d_transpose_grad",
    source: include_str!("../../../shaders/conv2d.wgsl"),
    entry: "transpose_grad",
    bindings: BINDINGS,
};

/// A run of consecutive images processed together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) first: usize,
    pub(super) images: usize,
}

/// Which way round a GEMM runs. `C = A B` and `C^T = B^T A^T` give the same C through its
/// strides, but the GEMM spreads C's columns over neighbouring invocations (SIMD lanes on
/// lavapipe, a warp's threads on GPUs), so the dimension that fills whole tiles belongs there:
/// conv1's weight gradient (c_out 32 x K 9) ran 2x faster as K x c_out. The forward and the
/// input gradient choose (`Auto`: transposed when the rows fill tiles clearly better than the
/// columns); the weight gradient has one layout (see `grad_weight_gemm`).
pub(super) use crate::device::ConvOrient as Orient;

/// Padded size over useful size when `n` columns are covered by tiles `width` wide.
fn waste(n: usize, width: usize) -> f64 {
    (n.div_ceil(width) * width) as f64 / n as f64
}

fn transposed(s: Strides) -> Strides {
    Strides { row: s.col, col: s.row, ..s }
}

/// Records `c = a b` (+ bias), run either way round (see [`Orient`]).
fn gemm_oriented(dev: &Device, g: &Gemm, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, c: &Tensor, orient: Orient) -> Result<()> {
    let flip = match orient {
        Orient::Normal => false,
        Orient::Transposed => true,
        Orient::Auto => {
            // The columns of the product as run go to the tile's width. A margin keeps near-equal
            // shapes in the natural layout.
            let t = Tiling::default_for(dev);
            let width = (t.tn * t.wg_x) as usize;
            waste(g.n, width) > 1.5 * waste(g.m, width)
        }
    };
    let bias = bias.map(|t| t.buffer());
    if !flip {
        return gemm(dev, g, a.buffer(), b.buffer(), bias, c.buffer());
    }
    // The bias runs along the other axis of the transposed product.
    let mut flags = g.flags & !(BIAS_M | BIAS_N);
    if g.flags & BIAS_M != 0 {
        flags |= BIAS_N;
    }
    if g.flags & BIAS_N != 0 {
        flags |= BIAS_M;
    }
    let gt = Gemm { m: g.n, n: g.m, k: g.k, batch: g.batch, a: transposed(g.b), b: transposed(g.a), c: transposed(g.c), flags };
    gemm(dev, &gt, b.buffer(), a.buffer(), bias, c.buffer())
}

/// Splits the batch so that each chunk's col, weight-gradient partials and transposed output
/// gradient fit in `max_bytes`, or says why one image's do not ([`ConvPlan::chunks`] makes that
/// the error of the passes that need them).
pub(super) fn chunks(g: &ConvGeometry, max_bytes: u64) -> std::result::Result<Vec<Chunk>, String> {
    let per_image = 4 * (g.k() * g.col_stride()).max(g.c_out * g.k()).max(g.p() * g.c_out.next_multiple_of(4)) as u64;
    if per_image > max_bytes {
        return Err(format!(
            "conv2d on input {:?} with weight {:?}: one image's im2col and gradient buffers need up to {per_image} bytes each, more than one storage binding allows ({max_bytes} bytes)",
            g.x_shape(),
            g.w_shape()
        ));
    }
    let per_chunk = ((max_bytes / per_image) as usize).min(g.n);
    Ok((0..g.n).step_by(per_chunk).map(|first| Chunk { first, images: per_chunk.min(g.n - first) }).collect())
}

/// Records im2col for one chunk of images into `col` (`[images, K, col_stride]`).
fn im2col(x: &Tensor, g: &ConvGeometry, chunk: &Chunk, col: &Tensor) -> Result<()> {
    dispatch_rows(x.device(), &IM2COL, &ConvParams::new(g, chunk), x, col, chunk.images * g.k())
}

/// Records col2im of one chunk's `dcol` into the input gradient `dx`.
pub(super) fn col2im(g: &ConvGeometry, chunk: &Chunk, dcol: &Tensor, dx: &Tensor) -> Result<()> {
    let (dev, params) = (dcol.device(), ConvParams::new(g, chunk));
    let rows = chunk.images * g.c_in * g.h;
    if g.stride == 1 {
        let [kernel_h, kernel_w, ..] = row_constants(g, g.w, DIRECT_CO);
        dev.dispatch(
            &COL2IM_S1,
            &[kernel_h, kernel_w],
            &params,
            &[dcol.buffer(), dx.buffer()],
            crate::ops::grid_1d(crate::ops::groups(rows, WG)),
        )
    } else {
        dispatch_rows(dev, &COL2IM, &params, dcol, dx, rows)
    }
}

/// col of one chunk: `x` itself for a pointwise convolution (with the chunk's element offset),
/// else a new im2col buffer (offset 0).
fn col_for(x: &Tensor, g: &ConvGeometry, chunk: &Chunk) -> Result<(Tensor, u32)> {
    if g.is_pointwise() {
        return Ok((x.clone(), (chunk.first * g.k() * g.p()) as u32));
    }
    let col = Tensor::uninit(x.device(), &[chunk.images, g.k(), g.col_stride()], "conv2d im2col")?;
    im2col(x, g, chunk, &col)?;
    Ok((col, 0))
}

/// The weight as a `[c_out, K]` matrix, with its row stride: `w` itself when K is a multiple of 4,
/// else a copy whose rows are padded (with zeros) to a multiple of 4. The vec4 GEMMs need every
/// stride but the contiguous one to be a multiple of 4; without the pad, conv1's K = 9 falls to
/// the scalar kernel in forward and backward-data.
pub(super) fn weight_matrix(w: &Tensor, g: &ConvGeometry) -> Result<(Tensor, usize)> {
    let k = g.k();
    if k.is_multiple_of(4) {
        return Ok((w.clone(), k));
    }
    let padded = k.next_multiple_of(4);
    let wp = Tensor::zeros(w.device(), &[g.c_out, padded])?;
    crate::ops::concat::copy_part(w, &wp, &[g.c_out, k], padded, 0, false)?;
    Ok((wp, padded))
}

/// The largest reduction whose input gradient reads the weight transposed ([`weight_transposed`]):
/// a product side this short gets a tile fitted to it, which the vec4 loads along m of the other
/// layout round up to a multiple of 4 (conv1's 9 rows ran as 12x4 tiles, now 9x8).
pub(super) const TRANSPOSED_WEIGHT_MAX_K: usize = 16;

/// The weight as a `[K, c_out]` matrix, rows padded with zeros to a multiple of 4, and that row
/// stride.
pub(super) fn weight_transposed(w: &Tensor, g: &ConvGeometry) -> Result<(Tensor, usize)> {
    let row = g.c_out.next_multiple_of(4);
    let wt = Tensor::uninit(w.device(), &[g.k(), row], "conv2d transposed weight")?;
    let whole = Chunk { first: 0, images: g.n };
    dispatch_rows(w.device(), &TRANSPOSE_WEIGHT, &ConvParams::new(g, &whole), w, &wt, g.k() * row)?;
    Ok((wt, row))
}

/// The forward's GEMM for one chunk: weight (`a`) times col into the NCHW output.
fn forward_gemm(g: &ConvGeometry, a: Strides, chunk: &Chunk, col_offset: u32, bias: bool) -> Gemm {
    let (k, p, cs) = (g.k(), g.p(), g.col_stride());
    Gemm {
        m: g.c_out,
        n: p,
        k,
        batch: chunk.images,
        a,
        b: Strides { row: cs as u32, col: 1, batch: (k * cs) as u32, offset: col_offset },
        c: Strides { row: p as u32, col: 1, batch: (g.c_out * p) as u32, offset: (chunk.first * g.c_out * p) as u32 },
        flags: if bias { BIAS_M } else { 0 },
    }
}

/// The weight as A stored `[K, c_out]` ([`weight_transposed`]'s layout).
fn transposed_weight_strides(g: &ConvGeometry) -> Strides {
    Strides { row: 1, col: g.c_out.next_multiple_of(4) as u32, batch: 0, offset: 0 }
}

/// Whether the subgroup GEMM would take the forward through the transposed weight: only then
/// does [`Settings::subgroup_forward`](super::Settings) pay (the plain A-along-m kernel has no
/// edge, nor the plain GEMMs over the direct kernel).
pub(super) fn subgroup_takes_forward(dev: &Device, g: &ConvGeometry) -> bool {
    let whole = Chunk { first: 0, images: g.n };
    plan(dev, &forward_gemm(g, transposed_weight_strides(g), &whole, 0, false)).0.is_subgroup()
}

/// What the GEMM forward leaves for the backward.
pub(super) struct ForwardKept {
    /// im2col of the whole batch, when the plan keeps it ([`ConvPlan::keeps_col`]).
    pub(super) col: Option<Tensor>,
    /// The weight matrix and its row stride, when the forward read it.
    pub(super) w_matrix: Option<(Tensor, usize)>,
}

/// Records the forward as im2col and the GEMM per chunk, reading the weight as `gemm` says.
pub(super) fn forward(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &ConvGeometry,
    out: &Tensor,
    plan: &ConvPlan,
    gemm: ConvGemm,
) -> Result<ForwardKept> {
    let chunks = plan.chunks()?;
    let keep_col = plan.keeps_col(g);
    let (wm, a) = match gemm.weight {
        WeightLayout::Transposed => (weight_transposed(w, g)?.0, transposed_weight_strides(g)),
        WeightLayout::Matrix => {
            let (wm, w_row) = weight_matrix(w, g)?;
            (wm, Strides { row: w_row as u32, col: 1, batch: 0, offset: 0 })
        }
    };
    let mut kept = ForwardKept { col: None, w_matrix: None };
    for chunk in chunks {
        let (col, col_offset) = col_for(x, g, chunk)?;
        gemm_oriented(x.device(), &forward_gemm(g, a, chunk, col_offset, b.is_some()), &wm, &col, b, out, gemm.orient)?;
        if keep_col {
            kept.col = Some(col);
        }
    }
    if gemm.weight == WeightLayout::Matrix {
        kept.w_matrix = Some((wm, a.row as usize));
    }
    Ok(kept)
}

impl Conv2dBackward {
    /// The output gradient with its planes `col_stride` apart: a zero-padded copy when that is
    /// not `p`, so that the input gradient's GEMM reads it as vec4s.
    fn padded_grad(&self, dout: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        let (p, cs) = (g.p(), g.col_stride());
        if cs == p {
            return Ok(dout.clone());
        }
        let padded = Tensor::zeros(dout.device(), &[g.n, g.c_out, cs])?;
        crate::ops::concat::copy_part(dout, &padded, &[g.n * g.c_out, p], cs, 0, false)?;
        Ok(padded)
    }

    /// [`grad_input`](Self::grad_input) as dcol = W^T dout (from [`padded_grad`](Self::padded_grad)'s
    /// output) by the GEMM, then col2im, per chunk.
    pub(super) fn grad_input_gemm(&self, dout: &Tensor, gemm: ConvGemm) -> Result<Tensor> {
        let dout = &self.padded_grad(dout)?;
        let g = &self.geometry;
        let dev = dout.device();
        let (k, p, cs) = (g.k(), g.p(), g.col_stride());
        let dx = Tensor::uninit(dev, &g.x_shape(), "conv2d input gradient")?;
        let transposed_weight;
        // W^T as the A operand: along the rows of the transposed copy, or across the weight
        // matrix's rows.
        let (wm, a) = match gemm.weight {
            WeightLayout::Transposed => {
                transposed_weight = weight_transposed(&self.w, g)?;
                (&transposed_weight.0, Strides { row: transposed_weight.1 as u32, col: 1, batch: 0, offset: 0 })
            }
            WeightLayout::Matrix => {
                let (wm, w_row) = self.weight_matrix()?;
                (wm, Strides { row: 1, col: *w_row as u32, batch: 0, offset: 0 })
            }
        };
        for chunk in self.plan.chunks()? {
            let dout_strides =
                Strides { row: cs as u32, col: 1, batch: (g.c_out * cs) as u32, offset: (chunk.first * g.c_out * cs) as u32 };
            let mut gm = Gemm {
                m: k,
                n: p,
                k: g.c_out,
                batch: chunk.images,
                a,
                b: dout_strides,
                c: Strides { row: cs as u32, col: 1, batch: (k * cs) as u32, offset: 0 },
                flags: 0,
            };
            if g.is_pointwise() {
                gm.c.offset = (chunk.first * k * p) as u32;
                gemm_oriented(dev, &gm, wm, dout, None, &dx, gemm.orient)?;
                continue;
            }
            let dcol = Tensor::uninit(dev, &[chunk.images, k, cs], "conv2d col gradient")?;
            gemm_oriented(dev, &gm, wm, dout, None, &dcol, gemm.orient)?;
            col2im(g, chunk, &dcol, &dx)?;
        }
        Ok(dx)
    }

    /// [`grad_weight`](Self::grad_weight) as per-image products `col[n] dt[n]` with the output
    /// gradient transposed to `dt[n]` (`[p, c_out]`): A along k and B along n, the GEMM's fastest
    /// layout, for the price of one pass over the output gradient (a fifth of col's size for the
    /// seed's conv2). The products come out transposed, `[K, c_out]`, and are stored as `[c_out, K]`.
    pub(super) fn grad_weight_gemm(&self, dout: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let (k, p, cs, co) = (g.k(), g.p(), g.col_stride(), g.c_out);
        let row = co.next_multiple_of(4);
        let dw = Tensor::uninit(dev, &g.w_shape(), "conv2d weight gradient")?;
        let chunks = self.plan.chunks()?;
        for (ci, chunk) in chunks.iter().enumerate() {
            let (col, col_offset) = match &self.col {
                Some(col) => (col.clone(), 0),
                None => col_for(&self.x, g, chunk)?,
            };
            let params = ConvParams::new(g, chunk);
            let dt = Tensor::uninit(dev, &[chunk.images, p, row], "conv2d transposed output gradient")?;
            dispatch_rows(dev, &TRANSPOSE_GRAD, &params, dout, &dt, chunk.images * p.div_ceil(4) * row / 4)?;
            let partials = Tensor::uninit(dev, &[chunk.images, co, k], "conv2d weight gradient partials")?;
            let gm = Gemm {
                m: k,
                n: co,
                k: p,
                batch: chunk.images,
                a: Strides { row: cs as u32, col: 1, batch: (k * cs) as u32, offset: col_offset },
                b: Strides { row: row as u32, col: 1, batch: (p * row) as u32, offset: 0 },
                c: Strides { row: 1, col: k as u32, batch: (co * k) as u32, offset: 0 },
                flags: 0,
            };
            // Not `gemm_oriented`: the transposed product would be both-along-k again.
            gemm(dev, &gm, col.buffer(), dt.buffer(), None, partials.buffer())?;
            let len = co * k;
            let params = ConvParams { len: len as u32, accumulate: (ci > 0) as u32, ..params };
            dispatch_rows(dev, &SUM_BATCH, &params, &partials, &dw, len)?;
        }
        Ok(dw)
    }
}
