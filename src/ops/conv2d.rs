//! 2-D convolution, NCHW f32, as im2col + the strided batched GEMM of `ops::matmul` (one GEMM
//! kernel for dense and conv), with a gather col2im for the input gradient.
//!
//! Forward, per image: `out[n] (c_out x P) = W (c_out x K) * col[n] (K x P) + bias`, where
//! `K = c_in*kh*kw`, `P = oh*ow`; the GEMM's C strides write NCHW directly. Backward-data:
//! `dcol[n] = W^T * dout[n]`, then col2im. Backward-weight: per-image products
//! `col[n] * dout[n]^T` (`K x c_out`, from a transposed copy of the output gradient, so that both
//! operands are read along their rows) summed over the batch (per-image partials keep every GEMM
//! wide enough to fill a GPU; a batch-reducing GEMM would have only `c_out*K/1024` workgroups).
//! A small reduction (a first layer's K = c_in*kh*kw of at most 32) runs its gradients, and its
//! forward unless the subgroup GEMM takes that, in direct kernels: no col. On adapters with
//! subgroups of 8 (lavapipe), such a layer over planes of whole vec4s runs its forward and weight
//! gradient in `shaders/conv2d_subgroup.wgsl` instead, gathering col from x without storing it,
//! and its input gradient's dcol there too (then col2im).
//! col's rows, and the output gradient's planes in backward-data, are padded with zeros to a multiple
//! of 4 values so that odd planes (7x7) still run the vec4 GEMMs; a small K's input gradient reads
//! a transposed copy of the weight.
//! A 1x1 stride-1 convolution uses `x` as its col. When col for the whole batch would exceed the
//! adapter's storage-binding limit, the batch is processed in chunks of images.

use super::matmul::{gemm, plan, subgroups_allowed, Gemm, Strides, Tiling, BIAS_M, BIAS_N};
use super::Backward;
use crate::device::{Access, Device, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::OnceLock;

static IM2COL: KernelSpec =
    KernelSpec { name: "conv2d_im2col", source: include_str!("../../shaders/conv2d.wgsl"), entry: "im2col", bindings: BINDINGS };
static COL2IM: KernelSpec =
    KernelSpec { name: "conv2d_col2im", source: include_str!("../../shaders/conv2d.wgsl"), entry: "col2im", bindings: BINDINGS };
static COL2IM_S1: KernelSpec =
    KernelSpec { name: "conv2d_col2im", source: include_str!("../../shaders/conv2d.wgsl"), entry: "col2im_s1", bindings: BINDINGS };
static DIRECT: KernelSpec = KernelSpec {
    name: "conv2d_direct",
    source: include_str!("../../shaders/conv2d.wgsl"),
    entry: "direct",
    // x, out, weight, bias.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read, Access::Read],
};
static DIRECT_ROWS: KernelSpec = KernelSpec {
    name: "conv2d_direct_rows",
    source: include_str!("../../shaders/conv2d.wgsl"),
    entry: "direct_rows",
    // x, out, weight, bias.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read, Access::Read],
};
static DIRECT_GRAD_WEIGHT: KernelSpec = KernelSpec {
    name: "conv2d_direct_grad_weight",
    source: include_str!("../../shaders/conv2d.wgsl"),
    entry: "direct_grad_weight",
    // x, per-image partials, output gradient.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
};
static DIRECT_GRAD_INPUT: KernelSpec = KernelSpec {
    name: "conv2d_direct_grad_input",
    source: include_str!("../../shaders/conv2d.wgsl"),
    entry: "direct_grad_input",
    // output gradient, input gradient, weight.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
};
static TRANSPOSE_WEIGHT: KernelSpec = KernelSpec {
    name: "conv2d_transpose_weight",
    source: include_str!("../../shaders/conv2d.wgsl"),
    entry: "transpose_weight",
    bindings: BINDINGS,
};
static TRANSPOSE_GRAD: KernelSpec = KernelSpec {
    name: "conv2d_transpose_grad",
    source: include_str!("../../shaders/conv2d.wgsl"),
    entry: "transpose_grad",
    bindings: BINDINGS,
};
const SUBGROUP_SOURCE: &str = include_str!("../../shaders/conv2d_subgroup.wgsl");
static SUBGROUP_FORWARD: KernelSpec = KernelSpec {
    name: "conv2d_subgroup_forward",
    source: SUBGROUP_SOURCE,
    entry: "forward",
    // x, out, weight, bias.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read, Access::Read],
};
static SUBGROUP_GRAD_COL: KernelSpec = KernelSpec {
    name: "conv2d_subgroup_grad_col",
    source: SUBGROUP_SOURCE,
    entry: "grad_col",
    // output gradient, dcol, weight.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
};
static SUBGROUP_GRAD_ROWSUM: KernelSpec = KernelSpec {
    name: "conv2d_subgroup_grad_rowsum",
    source: SUBGROUP_SOURCE,
    entry: "grad_rowsum",
    // output gradient, row sums, weight.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
};
static COL2IM_ROWSUM: KernelSpec =
    KernelSpec { name: "conv2d_col2im_rowsum", source: SUBGROUP_SOURCE, entry: "col2im_rowsum", bindings: BINDINGS };
static SUBGROUP_GRAD_WEIGHT: KernelSpec = KernelSpec {
    name: "conv2d_subgroup_grad_weight",
    source: SUBGROUP_SOURCE,
    entry: "grad_weight",
    // x, partials, output gradient.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
};
static SUM_BATCH: KernelSpec =
    KernelSpec { name: "conv2d_sum_batch", source: include_str!("../../shaders/conv2d.wgsl"), entry: "sum_batch", bindings: BINDINGS };
const BINDINGS: &[Access] = &[Access::Read, Access::ReadWrite];
const WG: usize = 64;
/// Output channels per invocation of the direct kernel (`const CO` in its shader).
const DIRECT_CO: usize = 8;
/// The largest reduction (c_in*kh*kw) the direct forward kernel takes: an RGB image's 3x3 (27)
/// or a grey one's 5x5 (25). Beyond it, the GEMM's register blocking reuses each loaded value
/// more than the direct kernel, whose gathers grow with K.
const DIRECT_MAX_K: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding: only windows that fit inside the input.
    Valid,
    /// Keras/TF 'same': `out = ceil(in / stride)`, the padding split with the extra row/column at
    /// the bottom/right.
    Same,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dConfig {
    pub stride: usize,
    pub padding: Padding,
}

impl Conv2dConfig {
    pub fn new(stride: usize, padding: Padding) -> Self {
        Conv2dConfig { stride, padding }
    }
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig { stride: 1, padding: Padding::Valid }
    }
}

/// Every size of one convolution, derived once from the shapes and the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeometry {
    /// GEMM inner size: one column of col.
    pub fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    /// Output pixels per image.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Values per row of col: `p` rounded up to a multiple of 4 (the pad zero), so that the vec4
    /// GEMMs read col, and the output gradient padded alike, when `p` is odd (a 7x7 plane would
    /// otherwise fall to the scalar kernel in all three passes). A pointwise convolution's col is
    /// `x` itself, unpadded.
    pub fn col_stride(&self) -> usize {
        if self.is_pointwise() {
            self.p()
        } else {
            self.p().next_multiple_of(4)
        }
    }
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
    pub fn w_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in, self.kh, self.kw]
    }
    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.oh, self.ow]
    }
    /// Multiply-adds counted twice, as GEMM FLOPs are; the same for each of the three passes.
    pub fn flops(&self) -> u64 {
        2 * (self.n * self.c_out * self.k() * self.p()) as u64
    }
    /// Small enough a reduction for a direct kernel (and, for `Quads`, whole vec4s of output per plane).
    fn suits_direct(&self, kind: Direct) -> bool {
        let small = self.k() <= DIRECT_MAX_K && !self.is_pointwise();
        match kind {
            Direct::Off => false,
            Direct::Quads => small && self.p().is_multiple_of(4),
            Direct::Rows => small,
        }
    }
    /// Whether `shaders/conv2d_subgroup.wgsl` can take the convolution: a small reduction, not
    /// pointwise, over planes of whole vec4s.
    fn suits_subgroup(&self) -> bool {
        self.suits_direct(Direct::Quads)
    }
    /// A 1x1 stride-1 unpadded convolution: x already is col.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad_top == 0 && self.pad_left == 0
    }
}

/// Output size and leading padding along one axis.
fn axis(input: usize, k: usize, stride: usize, padding: Padding) -> Option<(usize, usize)> {
    match padding {
        Padding::Valid => (k <= input).then(|| ((input - k) / stride + 1, 0)),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + k).saturating_sub(input);
            Some((out, total / 2))
        }
    }
}

/// The shape rule, with every derived size.
pub fn conv2d_geometry(x: &[usize], w: &[usize], cfg: Conv2dConfig) -> Result<ConvGeometry> {
    let err =
        |why: &str| Err(Error::shape("conv2d", format!("input {x:?} and weight {w:?} (stride {}, {:?}): {why}", cfg.stride, cfg.padding)));
    if x.len() != 4 || w.len() != 4 {
        return err("expects a 4-D NCHW input and a 4-D [c_out, c_in, kh, kw] weight");
    }
    if x.contains(&0) || w.contains(&0) {
        return err("zero-sized dimension");
    }
    if cfg.stride == 0 {
        return err("stride must be at least 1");
    }
    if x[1] != w[1] {
        return err(&format!("input has {} channels, the weight expects {}", x[1], w[1]));
    }
    let (Some((oh, pad_top)), Some((ow, pad_left))) =
        (axis(x[2], w[2], cfg.stride, cfg.padding), axis(x[3], w[3], cfg.stride, cfg.padding))
    else {
        return err("the kernel is larger than the input");
    };
    Ok(ConvGeometry {
        n: x[0],
        c_in: x[1],
        h: x[2],
        w: x[3],
        c_out: w[0],
        kh: w[2],
        kw: w[3],
        stride: cfg.stride,
        pad_top,
        pad_left,
        oh,
        ow,
    })
}

/// Output shape `[n, c_out, oh, ow]`, or an error naming both shapes.
pub fn conv2d_shape(x: &[usize], w: &[usize], cfg: Conv2dConfig) -> Result<Vec<usize>> {
    Ok(conv2d_geometry(x, w, cfg)?.out_shape().to_vec())
}

/// Mirrors `Params` in shaders/conv2d.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    c_in: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    oh: u32,
    ow: u32,
    images: u32,
    first_image: u32,
    len: u32,
    accumulate: u32,
    c_out: u32,
    has_bias: u32,
    col_stride: u32,
    _pad: [u32; 3],
}

impl ConvParams {
    fn new(g: &ConvGeometry, chunk: &Chunk) -> Self {
        ConvParams {
            c_in: g.c_in as u32,
            h: g.h as u32,
            w: g.w as u32,
            kh: g.kh as u32,
            kw: g.kw as u32,
            stride: g.stride as u32,
            pad_top: g.pad_top as u32,
            pad_left: g.pad_left as u32,
            oh: g.oh as u32,
            ow: g.ow as u32,
            images: chunk.images as u32,
            first_image: chunk.first as u32,
            len: 0,
            accumulate: 0,
            c_out: g.c_out as u32,
            has_bias: 0,
            col_stride: g.col_stride() as u32,
            _pad: [0; 3],
        }
    }
}

/// Records the direct forward (`direct` in `shaders/conv2d.wgsl`) of the whole batch into `out`.
fn conv2d_direct(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &ConvGeometry, out: &Tensor) -> Result<()> {
    let whole = Chunk { first: 0, images: g.n };
    let params = ConvParams { has_bias: b.is_some() as u32, ..ConvParams::new(g, &whole) };
    // Without a bias, any buffer fills its binding; the kernel does not read it.
    let bias = b.unwrap_or(w);
    let mut grid = super::grid_1d(super::groups(g.n * g.p() / 4, WG));
    grid[2] = g.c_out.div_ceil(DIRECT_CO) as u32;
    x.device().dispatch(&DIRECT, &[], &params, &[x.buffer(), out.buffer(), w.buffer(), bias.buffer()], grid)
}

/// Records the row-segment direct forward (`direct_rows` in `shaders/conv2d.wgsl`) of the whole
/// batch, `rows` output rows and `channels` output channels per invocation.
#[allow(clippy::too_many_arguments)]
fn conv2d_direct_rows(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &ConvGeometry,
    out: &Tensor,
    rows: usize,
    channels: usize,
) -> Result<()> {
    let whole = Chunk { first: 0, images: g.n };
    let params = ConvParams { has_bias: b.is_some() as u32, ..ConvParams::new(g, &whole) };
    let bias = b.unwrap_or(w);
    let mut grid = super::grid_1d(super::groups(g.n * g.oh.div_ceil(rows) * g.ow.div_ceil(row_segment(g.ow)), WG));
    grid[2] = g.c_out.div_ceil(channels) as u32;
    let [kernel_h, kernel_w, stride, segment, channels] = row_constants(g, g.ow, channels);
    let constants = [kernel_h, kernel_w, stride, segment, channels, ("FY", rows as u32)];
    x.device().dispatch(&DIRECT_ROWS, &constants, &params, &[x.buffer(), out.buffer(), w.buffer(), bias.buffer()], grid)
}

/// Values per row segment of the direct kernels along a row of `len`: at most 8, as even as the
/// row allows (26 = 4 x 7 - 2, not 4 x 8 - 6).
fn row_segment(len: usize) -> usize {
    len.div_ceil(len.div_ceil(DIRECT_ROW_OUTPUTS))
}

/// The kernel size, stride and segment (along rows of `len`) the direct kernels are specialised to,
/// and `channels` output channels per invocation ([`Tuning::row_channels`]).
fn row_constants(g: &ConvGeometry, len: usize, channels: usize) -> [(&'static str, u32); 5] {
    [("DKH", g.kh as u32), ("DKW", g.kw as u32), ("DS", g.stride as u32), ("XW", row_segment(len) as u32), ("CO", channels as u32)]
}

/// The most outputs along a row one invocation of `direct_rows` computes.
const DIRECT_ROW_OUTPUTS: usize = 8;
/// Output rows one invocation of `direct_rows` computes (`const FY`). Measured on lavapipe (conv1
/// of the seed, forward, two alternating rounds): 2 ran at 1.07x and 0.97x the rate of 1, within
/// the noise; 3 and 4 at 0.35x (their 168 and 224 accumulators fall off the register cliff).
const DIRECT_FORWARD_ROWS: usize = 1;
/// Rows of the input gradient one invocation of `direct_grad_input` computes (`const RY`).
const DIRECT_GRAD_INPUT_ROWS: usize = 4;

/// Which direct kernels serve small reductions, if any: `Off` (im2col + GEMM for every pass),
/// `Quads` (`direct`: 4 outputs of a plane per invocation, one gather per tap) or `Rows`
/// (`direct_rows`: a row segment per invocation, each input row's window loaded once; the
/// gradients by `direct_grad_weight` and, at stride 1, `direct_grad_input`).
use crate::device::ConvDirect as Direct;

/// A run of consecutive images processed together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunk {
    first: usize,
    images: usize,
}

/// Which way round a GEMM runs. `C = A B` and `C^T = B^T A^T` give the same C through its
/// strides, but the GEMM spreads C's columns over neighbouring invocations (SIMD lanes on
/// lavapipe, a warp's threads on GPUs), so the dimension that fills whole tiles belongs there:
/// conv1's weight gradient (c_out 32 x K 9) ran 2x faster as K x c_out. The forward and the
/// input gradient choose (`Auto`: transposed when the rows fill tiles clearly better than the
/// columns); the weight gradient has one layout (see `grad_weight_gemm`).
use crate::device::ConvOrient as Orient;

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
/// gradient fit in `max_bytes`.
fn chunks(g: &ConvGeometry, max_bytes: u64) -> Result<Vec<Chunk>> {
    let per_image = 4 * (g.k() * g.col_stride()).max(g.c_out * g.k()).max(g.p() * g.c_out.next_multiple_of(4)) as u64;
    if per_image > max_bytes {
        return Err(Error::Invalid(format!(
            "conv2d on input {:?} with weight {:?}: one image's im2col and gradient buffers need up to {per_image} bytes each, more than one storage binding allows ({max_bytes} bytes)",
            g.x_shape(),
            g.w_shape()
        )));
    }
    let per_chunk = ((max_bytes / per_image) as usize).min(g.n);
    Ok((0..g.n).step_by(per_chunk).map(|first| Chunk { first, images: per_chunk.min(g.n - first) }).collect())
}

fn dispatch_rows(device: &Device, spec: &KernelSpec, params: &ConvParams, src: &Tensor, dst: &Tensor, rows: usize) -> Result<()> {
    device.dispatch(spec, &[], params, &[src.buffer(), dst.buffer()], super::grid_1d(super::groups(rows, WG)))
}

/// Records im2col for one chunk of images into `col` (`[images, K, col_stride]`).
fn im2col(x: &Tensor, g: &ConvGeometry, chunk: &Chunk, col: &Tensor) -> Result<()> {
    dispatch_rows(x.device(), &IM2COL, &ConvParams::new(g, chunk), x, col, chunk.images * g.k())
}

/// Records col2im of one chunk's `dcol` into the input gradient `dx`.
fn col2im(g: &ConvGeometry, chunk: &Chunk, dcol: &Tensor, dx: &Tensor) -> Result<()> {
    let (dev, params) = (dcol.device(), ConvParams::new(g, chunk));
    let rows = chunk.images * g.c_in * g.h;
    if g.stride == 1 {
        let [kernel_h, kernel_w, ..] = row_constants(g, g.w, DIRECT_CO);
        dev.dispatch(&COL2IM_S1, &[kernel_h, kernel_w], &params, &[dcol.buffer(), dx.buffer()], super::grid_1d(super::groups(rows, WG)))
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
fn weight_matrix(w: &Tensor, g: &ConvGeometry) -> Result<(Tensor, usize)> {
    let k = g.k();
    if k.is_multiple_of(4) {
        return Ok((w.clone(), k));
    }
    let padded = k.next_multiple_of(4);
    let wp = Tensor::zeros(w.device(), &[g.c_out, padded])?;
    super::concat::copy_part(w, &wp, &[g.c_out, k], padded, 0, false)?;
    Ok((wp, padded))
}

/// The largest reduction whose input gradient reads the weight transposed ([`weight_transposed`]):
/// a product side this short gets a tile fitted to it, which the vec4 loads along m of the other
/// layout round up to a multiple of 4 (conv1's 9 rows ran as 12x4 tiles, now 9x8).
const TRANSPOSED_WEIGHT_MAX_K: usize = 16;

/// The weight as a `[K, c_out]` matrix, rows padded with zeros to a multiple of 4, and that row
/// stride.
fn weight_transposed(w: &Tensor, g: &ConvGeometry) -> Result<(Tensor, usize)> {
    let row = g.c_out.next_multiple_of(4);
    let wt = Tensor::uninit(w.device(), &[g.k(), row], "conv2d transposed weight")?;
    let whole = Chunk { first: 0, images: g.n };
    dispatch_rows(w.device(), &TRANSPOSE_WEIGHT, &ConvParams::new(g, &whole), w, &wt, g.k() * row)?;
    Ok((wt, row))
}

fn check_bias(b: Option<&Tensor>, g: &ConvGeometry) -> Result<()> {
    match b {
        Some(b) if b.shape() != [g.c_out] => {
            Err(Error::shape("conv2d", format!("bias {:?} does not match weight {:?}: expected [{}]", b.shape(), g.w_shape(), g.c_out)))
        }
        _ => Ok(()),
    }
}

/// Forward, with the backward the tape keeps. `b`, when given, is `[c_out]`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dConfig) -> Result<(Tensor, Conv2dBackward)> {
    conv2d_tuned(x, w, b, cfg, Tuning::for_device(x.device()))
}

/// How a convolution runs. The defaults come from the adapter and the environment; tests pin each
/// knob to reach every path.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    /// The per-binding byte limit for the col buffers (a small one exercises chunking).
    max_bytes: u64,
    orient: Orient,
    /// Which direct kernel may serve small reductions.
    direct: Direct,
    /// Whether the forward may run as the subgroup GEMM, where that takes the product: reading the
    /// weight as `[K, c_out]` ([`weight_transposed`]), since its A-along-m kernel outruns its
    /// A-along-k one (the seed's conv2 forward: 1.2x), and in place of the direct kernel for a
    /// small reduction that `subgroup_small_k` leaves to it (conv1's forward: 10.9 against 5.0
    /// GFLOP/s, before the small-K kernels).
    subgroup_forward: bool,
    /// Whether a small reduction's forward, weight gradient and input gradient's dcol may run as
    /// the subgroup kernels of `shaders/conv2d_subgroup.wgsl` (ahead of the subgroup GEMM and the
    /// direct kernels: the seed's conv1 forward at 42–44 GFLOP/s against 10–13, its weight
    /// gradient at 38–42 against 8–10, its input gradient at 34–37 against 12–13).
    subgroup_small_k: bool,
    /// Output channels per invocation of the direct row kernels: [`DIRECT_CO`] (on lavapipe, conv1
    /// of the seed: 4 ran its forward at 0.55x the rate of 8, 16 at 0.45x), or NETMORPH_ROW_CO.
    row_channels: usize,
    /// Output rows per invocation of `direct_rows`: [`DIRECT_FORWARD_ROWS`], or NETMORPH_ROW_FY.
    row_outputs: usize,
}

impl Tuning {
    /// The device's: its binding limit, subgroups, and the knobs it opened with.
    fn for_device(dev: &Device) -> Tuning {
        let knobs = dev.knobs();
        Tuning {
            max_bytes: dev.max_binding_bytes(),
            orient: knobs.conv_orient,
            direct: knobs.conv_direct,
            subgroup_forward: subgroups_allowed(dev),
            subgroup_small_k: subgroups_allowed(dev),
            row_channels: knobs.row_channels.map_or(DIRECT_CO, |c| c as usize),
            row_outputs: knobs.row_outputs.map_or(DIRECT_FORWARD_ROWS, |r| r as usize),
        }
    }
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
/// does [`Tuning::subgroup_forward`] pay (the plain A-along-m kernel has no edge, nor the plain
/// GEMMs over the direct kernel).
fn subgroup_takes_forward(dev: &Device, g: &ConvGeometry) -> bool {
    let whole = Chunk { first: 0, images: g.n };
    plan(dev, &forward_gemm(g, transposed_weight_strides(g), &whole, 0, false)).0.is_subgroup()
}

/// Output channels per lane of the subgroup kernels: the fewest blocks of at most 32 channels (8
/// lanes x 4), split evenly (48 as two blocks of 24, not 32 + 16 with half a block idle). Each
/// channel adds a vec4 load (or store) and K multiply-adds per step to a lane's gathered taps and
/// their shuffles; past 4, its K sums or weights each would crowd the registers.
fn subgroup_channels_per_lane(c_out: usize) -> usize {
    c_out.div_ceil(8 * c_out.div_ceil(SUBGROUP_BLOCK))
}

/// The most output channels one workgroup of the subgroup kernels takes.
const SUBGROUP_BLOCK: usize = 32;
/// The most output channels `grad_col` takes, all in one workgroup (8 per lane): its sums run
/// over every channel, and its per-lane registers (the channels' weights and gradients) grow with
/// them. The search's CNN generator's first layer at width 48: 1.8x the direct input gradient.
const SUBGROUP_GRAD_COL_MAX: usize = 64;

/// Workgroups (and partial sums) of the subgroup weight gradient: each sums every 32nd image of
/// the batch, so that `sum_batch` adds 32 partials, not one per image (the seed's conv1: 0.17 ms for
/// 128), while 32 workgroups still keep every thread of lavapipe busy.
const SUBGROUP_WEIGHT_PARTIALS: usize = 32;

/// Records one of `shaders/conv2d_subgroup.wgsl`'s kernels over a chunk of images, `groups`
/// workgroups along x, `cpl` channels per lane; `buffers` are its bindings 1, 2, ....
fn subgroup_pass(
    kernel: &KernelSpec,
    g: &ConvGeometry,
    chunk: &Chunk,
    has_bias: bool,
    buffers: &[&Tensor],
    groups: usize,
    cpl: usize,
) -> Result<()> {
    let params = ConvParams { has_bias: has_bias as u32, ..ConvParams::new(g, chunk) };
    let constants = [("KK", g.k() as u32), ("CPL", cpl as u32)];
    let grid = [groups as u32, g.c_out.div_ceil(8 * cpl) as u32, 1];
    let dev = buffers[0].device();
    let buffers: Vec<_> = buffers.iter().map(|t| t.buffer()).collect();
    dev.dispatch(kernel, &constants, &params, &buffers, grid)
}

/// [`conv2d`] with the given [`Tuning`].
fn conv2d_tuned(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dConfig, tuning: Tuning) -> Result<(Tensor, Conv2dBackward)> {
    let Tuning { max_bytes, orient, direct, subgroup_forward, subgroup_small_k, .. } = tuning;
    x.expect_f32("conv2d")?;
    w.expect_f32("conv2d")?;
    let g = conv2d_geometry(x.shape(), w.shape(), cfg)?;
    check_bias(b, &g)?;
    let out = Tensor::uninit(x.device(), &g.out_shape(), "conv2d output")?;
    let w_matrix = OnceLock::new();
    let mut saved_col = None;
    let small_k_subgroup = subgroup_small_k && g.suits_subgroup();
    // Asked only when the small-K kernels do not take the layer (it plans a GEMM, and logs it).
    let subgroup_forward = !small_k_subgroup && subgroup_forward && subgroup_takes_forward(x.device(), &g);
    if small_k_subgroup {
        // No col: the kernel gathers it from x (and so does the weight gradient's).
        let whole = Chunk { first: 0, images: g.n };
        subgroup_pass(&SUBGROUP_FORWARD, &g, &whole, b.is_some(), &[x, &out, w, b.unwrap_or(w)], g.n, subgroup_channels_per_lane(g.c_out))?;
    } else if g.suits_direct(direct) && !subgroup_forward {
        // No col (the weight gradient makes its own) and no weight matrix (the input gradient
        // makes it, when it is needed at all: a first layer's is not).
        match direct {
            Direct::Rows => conv2d_direct_rows(x, w, b, &g, &out, tuning.row_outputs, tuning.row_channels)?,
            _ => conv2d_direct(x, w, b, &g, &out)?,
        }
    } else {
        let chunks = chunks(&g, max_bytes)?;
        // The direct weight gradient makes no use of col.
        let keep_col = chunks.len() == 1 && !g.is_pointwise() && !(direct == Direct::Rows && g.suits_direct(Direct::Rows));
        let (wm, a) = if subgroup_forward {
            (weight_transposed(w, &g)?.0, transposed_weight_strides(&g))
        } else {
            let (wm, w_row) = weight_matrix(w, &g)?;
            (wm, Strides { row: w_row as u32, col: 1, batch: 0, offset: 0 })
        };
        for chunk in &chunks {
            let (col, col_offset) = col_for(x, &g, chunk)?;
            gemm_oriented(x.device(), &forward_gemm(&g, a, chunk, col_offset, b.is_some()), &wm, &col, b, &out, orient)?;
            // Keeping col saves recomputing it for the weight gradient; only possible when one chunk holds it all.
            if keep_col {
                saved_col = Some(col);
            }
        }
        // Kept for the input gradient.
        if !subgroup_forward {
            let _ = w_matrix.set((wm, a.row as usize));
        }
    }
    let backward = Conv2dBackward { x: x.clone(), w: w.clone(), w_matrix, has_bias: b.is_some(), geometry: g, col: saved_col, tuning };
    Ok((out, backward))
}

pub struct Conv2dBackward {
    x: Tensor,
    w: Tensor,
    /// The weight as a matrix and its row stride (see [`weight_matrix`]): made by a GEMM forward
    /// that read it, else by the first input gradient of a large K (a small K's reads [`weight_transposed`]).
    w_matrix: OnceLock<(Tensor, usize)>,
    has_bias: bool,
    geometry: ConvGeometry,
    /// im2col of the whole batch, kept from forward when it fitted in one chunk.
    col: Option<Tensor>,
    /// The forward's; its direct kernel `Rows` also serves a small reduction's weight gradient and,
    /// at stride 1, its input gradient.
    tuning: Tuning,
}

impl Conv2dBackward {
    pub fn geometry(&self) -> &ConvGeometry {
        &self.geometry
    }

    /// The weight matrix and its row stride, made on first need.
    fn weight_matrix(&self) -> Result<&(Tensor, usize)> {
        if let Some(m) = self.w_matrix.get() {
            return Ok(m);
        }
        let m = weight_matrix(&self.w, &self.geometry)?;
        Ok(self.w_matrix.get_or_init(|| m))
    }

    fn check_grad(&self, dout: &Tensor) -> Result<()> {
        let want = self.geometry.out_shape();
        if dout.shape() != want {
            return Err(Error::shape(
                "conv2d backward",
                format!("output gradient {:?} does not match the output {want:?} of input {:?}", dout.shape(), self.geometry.x_shape()),
            ));
        }
        Ok(())
    }

    /// The output gradient with its planes `col_stride` apart: a zero-padded copy when that is
    /// not `p`, so that the input gradient's GEMM reads it as vec4s.
    fn padded_grad(&self, dout: &Tensor) -> Result<Tensor> {
        self.check_grad(dout)?;
        let g = &self.geometry;
        let (p, cs) = (g.p(), g.col_stride());
        if cs == p {
            return Ok(dout.clone());
        }
        let padded = Tensor::zeros(dout.device(), &[g.n, g.c_out, cs])?;
        super::concat::copy_part(dout, &padded, &[g.n * g.c_out, p], cs, 0, false)?;
        Ok(padded)
    }

    // dcol[n] = W^T dout[n];  dx = col2im(dcol) (each input sums the col entries it was copied to).
    pub fn grad_input(&self, dout: &Tensor) -> Result<Tensor> {
        if self.subgroup_input_gradient() {
            self.check_grad(dout)?;
            return self.grad_input_subgroup(dout);
        }
        if self.direct_input_gradient() {
            self.check_grad(dout)?;
            return self.grad_input_direct(dout);
        }
        self.grad_input_padded(&self.padded_grad(dout)?)
    }

    /// Whether `shaders/conv2d_subgroup.wgsl` takes the input gradient: it needs every output
    /// channel in one subgroup.
    fn subgroup_input_gradient(&self) -> bool {
        let g = &self.geometry;
        self.tuning.subgroup_small_k && g.suits_subgroup() && g.c_out <= SUBGROUP_GRAD_COL_MAX
    }

    /// [`grad_input`](Self::grad_input) per chunk: at stride 1 as dcol's row sums by
    /// `grad_rowsum` (a lane per input channel and kernel row, so at most 8 of them; rows of whole
    /// vec4s for `col2im_rowsum`), else as dcol by `grad_col` and then col2im.
    fn grad_input_subgroup(&self, dout: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let dx = Tensor::uninit(dev, &g.x_shape(), "conv2d input gradient")?;
        let groups = g.c_in * g.kh;
        let rowsum = g.stride == 1 && groups <= 8 && g.w.is_multiple_of(4);
        for chunk in chunks(g, self.tuning.max_bytes)? {
            if rowsum {
                let srow = Tensor::uninit(dev, &[chunk.images, groups, g.oh, g.w], "conv2d row sums of dcol")?;
                let params = ConvParams::new(g, &chunk);
                let constants = [("KK", g.k() as u32), ("CPL", g.c_out.div_ceil(8) as u32), ("RW", g.kw as u32)];
                dev.dispatch(
                    &SUBGROUP_GRAD_ROWSUM,
                    &constants,
                    &params,
                    &[dout.buffer(), srow.buffer(), self.w.buffer()],
                    [chunk.images as u32, 1, 1],
                )?;
                let rows = chunk.images * g.c_in * g.h;
                let grid = super::grid_1d(super::groups(rows, 64));
                dev.dispatch(&COL2IM_ROWSUM, &[("RH", g.kh as u32)], &params, &[srow.buffer(), dx.buffer()], grid)?;
                continue;
            }
            let dcol = Tensor::uninit(dev, &[chunk.images, g.k(), g.col_stride()], "conv2d col gradient")?;
            subgroup_pass(&SUBGROUP_GRAD_COL, g, &chunk, false, &[dout, &dcol, &self.w], chunk.images, g.c_out.div_ceil(8))?;
            col2im(g, &chunk, &dcol, &dx)?;
        }
        Ok(dx)
    }

    fn direct_input_gradient(&self) -> bool {
        self.tuning.direct == Direct::Rows && self.geometry.stride == 1 && self.geometry.suits_direct(Direct::Rows)
    }

    /// [`grad_input`](Self::grad_input) by `direct_grad_input`: no dcol, no col2im.
    fn grad_input_direct(&self, dout: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let dx = Tensor::uninit(dev, &g.x_shape(), "conv2d input gradient")?;
        let params = ConvParams::new(g, &Chunk { first: 0, images: g.n });
        let invocations = g.n * g.h.div_ceil(DIRECT_GRAD_INPUT_ROWS) * g.w.div_ceil(row_segment(g.w));
        let mut grid = super::grid_1d(super::groups(invocations, WG));
        grid[2] = g.c_in as u32;
        dev.dispatch(
            &DIRECT_GRAD_INPUT,
            &row_constants(g, g.w, self.tuning.row_channels),
            &params,
            &[dout.buffer(), dx.buffer(), self.w.buffer()],
            grid,
        )?;
        Ok(dx)
    }

    /// [`grad_input`](Self::grad_input) from [`padded_grad`](Self::padded_grad)'s output.
    fn grad_input_padded(&self, dout: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let (k, p, cs) = (g.k(), g.p(), g.col_stride());
        let dx = Tensor::uninit(dev, &g.x_shape(), "conv2d input gradient")?;
        let transposed_weight;
        // W^T as the A operand: read across the weight matrix's rows, or along the rows of a
        // transposed copy when K is small.
        let (wm, a) = if k <= TRANSPOSED_WEIGHT_MAX_K {
            transposed_weight = weight_transposed(&self.w, g)?;
            (&transposed_weight.0, Strides { row: transposed_weight.1 as u32, col: 1, batch: 0, offset: 0 })
        } else {
            let (wm, w_row) = self.weight_matrix()?;
            (wm, Strides { row: 1, col: *w_row as u32, batch: 0, offset: 0 })
        };
        for chunk in chunks(g, self.tuning.max_bytes)? {
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
                gemm_oriented(dev, &gm, wm, dout, None, &dx, self.tuning.orient)?;
                continue;
            }
            let dcol = Tensor::uninit(dev, &[chunk.images, k, cs], "conv2d col gradient")?;
            gemm_oriented(dev, &gm, wm, dout, None, &dcol, self.tuning.orient)?;
            col2im(g, &chunk, &dcol, &dx)?;
        }
        Ok(dx)
    }

    // dW = sum_n dout[n] col[n]^T (computed transposed: col[n] dout[n]^T).
    pub fn grad_weight(&self, dout: &Tensor) -> Result<Tensor> {
        if self.tuning.subgroup_small_k && self.geometry.suits_subgroup() {
            self.check_grad(dout)?;
            return self.grad_weight_subgroup(dout);
        }
        if self.direct_weight_gradient() {
            self.check_grad(dout)?;
            return self.grad_weight_direct(dout);
        }
        self.grad_weight_gemm(dout)
    }

    fn direct_weight_gradient(&self) -> bool {
        self.tuning.direct == Direct::Rows && self.geometry.suits_direct(Direct::Rows)
    }

    /// [`grad_weight`](Self::grad_weight) by `direct_grad_weight` (per-image partials, no col)
    /// and `sum_batch`.
    fn grad_weight_direct(&self, dout: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let len = g.c_out * g.k();
        let partials = Tensor::uninit(dev, &[g.n, len], "conv2d weight gradient partials")?;
        let whole = Chunk { first: 0, images: g.n };
        let params = ConvParams::new(g, &whole);
        let mut grid = super::grid_1d(super::groups(g.n, WG));
        grid[2] = g.c_out.div_ceil(self.tuning.row_channels) as u32;
        dev.dispatch(
            &DIRECT_GRAD_WEIGHT,
            &row_constants(g, g.ow, self.tuning.row_channels),
            &params,
            &[self.x.buffer(), partials.buffer(), dout.buffer()],
            grid,
        )?;
        let dw = Tensor::uninit(dev, &g.w_shape(), "conv2d weight gradient")?;
        let params = ConvParams { len: len as u32, accumulate: 0, ..params };
        dispatch_rows(dev, &SUM_BATCH, &params, &partials, &dw, len)?;
        Ok(dw)
    }

    /// [`grad_weight`](Self::grad_weight) by `shaders/conv2d_subgroup.wgsl`'s `grad_weight`
    /// (partials over the whole batch, col gathered from x) and `sum_batch`.
    fn grad_weight_subgroup(&self, dout: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let len = g.c_out * g.k();
        let parts = g.n.min(SUBGROUP_WEIGHT_PARTIALS);
        let partials = Tensor::uninit(dev, &[parts, len], "conv2d weight gradient partials")?;
        let whole = Chunk { first: 0, images: g.n };
        subgroup_pass(&SUBGROUP_GRAD_WEIGHT, g, &whole, false, &[&self.x, &partials, dout], parts, subgroup_channels_per_lane(g.c_out))?;
        let dw = Tensor::uninit(dev, &g.w_shape(), "conv2d weight gradient")?;
        let params = ConvParams { len: len as u32, images: parts as u32, ..ConvParams::new(g, &whole) };
        dispatch_rows(dev, &SUM_BATCH, &params, &partials, &dw, len)?;
        Ok(dw)
    }

    /// [`grad_weight`](Self::grad_weight) as per-image products `col[n] dt[n]` with the output
    /// gradient transposed to `dt[n]` (`[p, c_out]`): A along k and B along n, the GEMM's fastest
    /// layout, for the price of one pass over the output gradient (a fifth of col's size for the
    /// seed's conv2). The products come out transposed, `[K, c_out]`, and are stored as `[c_out, K]`.
    fn grad_weight_gemm(&self, dout: &Tensor) -> Result<Tensor> {
        self.check_grad(dout)?;
        let g = &self.geometry;
        let dev = dout.device();
        let (k, p, cs, co) = (g.k(), g.p(), g.col_stride(), g.c_out);
        let row = co.next_multiple_of(4);
        let dw = Tensor::uninit(dev, &g.w_shape(), "conv2d weight gradient")?;
        let chunks = chunks(g, self.tuning.max_bytes)?;
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

    // db[c] = sum_{n,y,x} dout[n][c][y][x].
    pub fn grad_bias(&self, dout: &Tensor) -> Result<Tensor> {
        self.check_grad(dout)?;
        super::reduce::sum_per_channel(dout)
    }
}

impl Backward for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn backward(&self, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward_needed(dout, &[true, true, true])
    }
    fn backward_needed(&self, dout: &Tensor, needed: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let want = |i: usize| needed.get(i).copied().unwrap_or(true);
        let dx = if want(0) { Some(self.grad_input(dout)?) } else { None };
        let dw = if want(1) { Some(self.grad_weight(dout)?) } else { None };
        let db = if self.has_bias && want(2) { Some(self.grad_bias(dout)?) } else { None };
        Ok(vec![dx, dw, db])
    }
}

/// f64 CPU reference, direct loops over NCHW.
pub mod cpu {
    use super::ConvGeometry;

    /// Calls `f(x index, w index, out index)` for every multiply-add of the convolution.
    fn for_each_tap(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize)) {
        for n in 0..g.n {
            for co in 0..g.c_out {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = ((n * g.c_out + co) * g.oh + oy) * g.ow + ox;
                        for ci in 0..g.c_in {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let y = (oy * g.stride + i) as isize - g.pad_top as isize;
                                    let x = (ox * g.stride + j) as isize - g.pad_left as isize;
                                    if y < 0 || x < 0 || y >= g.h as isize || x >= g.w as isize {
                                        continue;
                                    }
                                    let xi = ((n * g.c_in + ci) * g.h + y as usize) * g.w + x as usize;
                                    let wi = ((co * g.c_in + ci) * g.kh + i) * g.kw + j;
                                    f(xi, wi, o);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn conv2d(x: &[f64], w: &[f64], b: Option<&[f64]>, g: &ConvGeometry) -> Vec<f64> {
        let mut out = vec![0.0; g.n * g.c_out * g.p()];
        if let Some(b) = b {
            for (o, v) in out.iter_mut().enumerate() {
                *v = b[(o / g.p()) % g.c_out];
            }
        }
        for_each_tap(g, |xi, wi, o| out[o] += x[xi] * w[wi]);
        out
    }

    /// Returns (dx, dw, db).
    // out = sum x*w + b:  dx += dout*w,  dw += dout*x,  db = sum dout.
    pub fn conv2d_backward(x: &[f64], w: &[f64], dout: &[f64], g: &ConvGeometry) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; g.c_out];
        for_each_tap(g, |xi, wi, o| {
            dx[xi] += dout[o] * w[wi];
            dw[wi] += dout[o] * x[xi];
        });
        for (o, d) in dout.iter().enumerate() {
            db[(o / g.p()) % g.c_out] += d;
        }
        (dx, dw, db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// A random geometry. Cases 0..24 cover every combination of kernel (1, 3, 5, 7, 2, 4),
    /// stride (1, 2) and padding; some kernels are not square, some batches are 1, some channel
    /// counts exceed one GEMM tile (32 rows).
    fn random_case(rng: &mut TestRng, case: usize) -> ([usize; 4], [usize; 4], Conv2dConfig) {
        let ks = [1, 3, 5, 7, 2, 4];
        let kh = ks[case % ks.len()];
        let kw = if case % 5 == 4 { ks[(case / 2) % ks.len()] } else { kh };
        let stride = 1 + (case / 6) % 2;
        let padding = if (case / 12).is_multiple_of(2) { Padding::Valid } else { Padding::Same };
        let n = if case.is_multiple_of(4) { 1 } else { rand_dim(rng, 1, 3) };
        let c_in = rand_dim(rng, 1, 5);
        let c_out = if case % 7 == 3 { rand_dim(rng, 30, 40) } else { rand_dim(rng, 1, 9) };
        let h = rand_dim(rng, kh, kh + 8);
        let w = rand_dim(rng, kw, kw + 8);
        ([n, c_in, h, w], [c_out, c_in, kh, kw], Conv2dConfig::new(stride, padding))
    }

    /// f32 sums of up to ~250 products (K = 5 * 7 * 7) lose a little more than 1e-4 near zero.
    const TOL: f64 = 3e-4;

    #[test]
    fn same_padding_follows_keras() {
        // TF: in 7, k 3, stride 2 -> out 4, pad_total = 3*2 + 3 - 7 = 2, pad_top = 1.
        let g = conv2d_geometry(&[1, 1, 7, 8], &[1, 1, 3, 4], Conv2dConfig::new(2, Padding::Same)).unwrap();
        assert_eq!((g.oh, g.pad_top, g.ow, g.pad_left), (4, 1, 4, 1));
        let g = conv2d_geometry(&[1, 1, 5, 5], &[1, 1, 1, 1], Conv2dConfig::new(2, Padding::Same)).unwrap();
        assert_eq!((g.oh, g.pad_top), (3, 0));
        let g = conv2d_geometry(&[1, 1, 28, 28], &[32, 1, 3, 3], Conv2dConfig::default()).unwrap();
        assert_eq!(g.out_shape(), [1, 32, 26, 26]);
    }

    #[test]
    fn forward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(21);
        for case in 0..26 {
            let (xs, ws, cfg) = random_case(&mut rng, case);
            let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
            let x = rand_vec(&mut rng, xs.iter().product());
            let w = rand_vec(&mut rng, ws.iter().product());
            let b = rand_vec(&mut rng, ws[0]);
            let with_bias = case % 2 == 0;
            let gb = tensor(&dev, &b, &[ws[0]]);
            let (out, _) = conv2d(&tensor(&dev, &x, &xs), &tensor(&dev, &w, &ws), with_bias.then_some(&gb), cfg).unwrap();
            assert_eq!(out.shape(), g.out_shape());
            let want = cpu::conv2d(&x, &w, with_bias.then_some(&b[..]), &g);
            assert_close(&out.to_vec().unwrap(), &want, TOL, &format!("conv2d forward x{xs:?} w{ws:?} {cfg:?}"));
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(22);
        // A spread of kernels (1, 7, 4, 2, 3, 7, 5, 4), strides and both paddings.
        for case in [0, 3, 5, 10, 13, 15, 20, 23] {
            let (mut xs, mut ws, cfg) = random_case(&mut rng, case);
            // Small enough for finite differences over every input and weight.
            xs[0] = xs[0].min(2);
            xs[1] = xs[1].min(2);
            ws[1] = xs[1];
            ws[0] = ws[0].min(3);
            let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
            let x = rand_vec(&mut rng, xs.iter().product());
            let w = rand_vec(&mut rng, ws.iter().product());
            let b = rand_vec(&mut rng, ws[0]);
            let r = rand_vec(&mut rng, g.out_shape().iter().product()); // L = sum(r * out)
            let (dx, dw, db) = cpu::conv2d_backward(&x, &w, &r, &g);
            let what = format!("x{xs:?} w{ws:?} {cfg:?}");
            assert_close_f64(&dx, &numeric_grad(&x, |x| dot(&cpu::conv2d(x, &w, Some(&b), &g), &r)), 1e-5, &format!("conv2d dx {what}"));
            assert_close_f64(&dw, &numeric_grad(&w, |w| dot(&cpu::conv2d(&x, w, Some(&b), &g), &r)), 1e-5, &format!("conv2d dw {what}"));
            assert_close_f64(&db, &numeric_grad(&b, |b| dot(&cpu::conv2d(&x, &w, Some(b), &g), &r)), 1e-5, &format!("conv2d db {what}"));
        }
    }

    /// Every knob fixed at the default path (whatever the device's knobs).
    fn pinned(dev: &Device) -> Tuning {
        Tuning {
            max_bytes: dev.max_binding_bytes(),
            orient: Orient::Auto,
            direct: Direct::Rows,
            subgroup_forward: subgroups_allowed(dev),
            subgroup_small_k: subgroups_allowed(dev),
            row_channels: DIRECT_CO,
            row_outputs: DIRECT_FORWARD_ROWS,
        }
    }

    /// im2col + GEMM for every pass.
    fn gemm_only(dev: &Device) -> Tuning {
        Tuning { direct: Direct::Off, subgroup_small_k: false, ..pinned(dev) }
    }

    fn check_gpu_backward(dev: &Device, rng: &mut TestRng, xs: [usize; 4], ws: [usize; 4], cfg: Conv2dConfig, tuning: Tuning) {
        let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
        let x = rand_vec(rng, xs.iter().product());
        let w = rand_vec(rng, ws.iter().product());
        let b = rand_vec(rng, ws[0]);
        let r = rand_vec(rng, g.out_shape().iter().product());
        let gb = tensor(dev, &b, &[ws[0]]);
        let (out, bw) = conv2d_tuned(&tensor(dev, &x, &xs), &tensor(dev, &w, &ws), Some(&gb), cfg, tuning).unwrap();
        let what = format!("x{xs:?} w{ws:?} {cfg:?} {tuning:?}");
        assert_close(&out.to_vec().unwrap(), &cpu::conv2d(&x, &w, Some(&b), &g), TOL, &format!("conv2d forward {what}"));
        let grads = bw.backward(&tensor(dev, &r, &g.out_shape())).unwrap();
        let (dx, dw, db) = cpu::conv2d_backward(&x, &w, &r, &g);
        assert_eq!(grads.len(), 3);
        assert_close(&grads[0].as_ref().unwrap().to_vec().unwrap(), &dx, TOL, &format!("conv2d dx {what}"));
        assert_close(&grads[1].as_ref().unwrap().to_vec().unwrap(), &dw, TOL, &format!("conv2d dw {what}"));
        assert_close(&grads[2].as_ref().unwrap().to_vec().unwrap(), &db, TOL, &format!("conv2d db {what}"));
    }

    #[test]
    fn gpu_backward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(23);
        for case in 0..22 {
            let (xs, ws, cfg) = random_case(&mut rng, case);
            check_gpu_backward(&dev, &mut rng, xs, ws, cfg, pinned(&dev));
        }
    }

    #[test]
    fn both_gemm_orientations_match_reference() {
        let dev = device();
        let mut rng = rng(25);
        for (xs, ws, cfg) in [
            ([2, 1, 9, 8], [33, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
            // K = 9 with P = 64: the vec4 GEMMs through the padded weight matrix.
            ([2, 1, 10, 10], [33, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
            ([3, 4, 7, 6], [5, 4, 3, 2], Conv2dConfig::new(2, Padding::Same)),
            ([2, 3, 5, 5], [7, 3, 1, 1], Conv2dConfig::new(1, Padding::Valid)),
        ] {
            for orient in [Orient::Normal, Orient::Transposed] {
                // The forward reads the weight matrix or its transpose.
                for subgroup_forward in [false, true] {
                    check_gpu_backward(&dev, &mut rng, xs, ws, cfg, Tuning { orient, subgroup_forward, ..gemm_only(&dev) });
                }
            }
        }
    }

    #[test]
    fn a_weight_with_k_not_a_multiple_of_4_still_gets_the_vec4_gemm() {
        // A device of its own: a profile sees every dispatch on its device, other tests' included.
        let dev = crate::testing::own_device();
        let (xs, ws) = ([2, 1, 10, 10], [8, 1, 3, 3]);
        let x = Tensor::zeros(&dev, &xs).unwrap();
        let w = Tensor::zeros(&dev, &ws).unwrap();
        dev.start_profile().unwrap();
        let (out, bw) = conv2d_tuned(&x, &w, None, Conv2dConfig::default(), gemm_only(&dev)).unwrap();
        bw.grad_input(&out).unwrap();
        bw.grad_weight(&out).unwrap();
        dev.sync().unwrap();
        let kernels: Vec<&str> = dev.finish_profile().iter().map(|t| t.kernel).collect();
        assert!(kernels.contains(&"matmul_vec4") && !kernels.contains(&"matmul"), "K = 9 ran {kernels:?}");
        // A small K's input gradient reads a transposed weight, its rows padded when c_out is
        // not a multiple of 4; a large K's reads the weight matrix as it is.
        let mut rng = rng(27);
        for (xs, ws, transposes) in
            [([2, 1, 10, 10], [5, 1, 3, 3], true), ([1, 4, 6, 7], [6, 4, 2, 2], true), ([1, 2, 6, 6], [3, 2, 3, 3], false)]
        {
            dev.start_profile().unwrap();
            check_gpu_backward(&dev, &mut rng, xs, ws, Conv2dConfig::new(1, Padding::Same), gemm_only(&dev));
            let profile = dev.finish_profile();
            let kernels: Vec<&str> = profile.iter().map(|t| t.kernel).collect();
            // (Products this small keep the forward on the weight matrix.)
            let calls = profile.iter().find(|t| t.kernel == "conv2d_transpose_weight").map_or(0, |t| t.calls);
            assert_eq!(calls, transposes as u64, "w{ws:?} ran {kernels:?}");
            assert!(!kernels.contains(&"matmul"), "w{ws:?} ran {kernels:?}");
        }
    }

    #[test]
    fn the_weight_gradient_reads_a_transposed_output_gradient() {
        // c_out not a multiple of 4 (the transposed rows' pad), planes not a multiple of 4 (the
        // last 4x4 block's missing positions), a pointwise col, and chunks of images.
        let dev = crate::testing::own_device();
        let mut rng = rng(28);
        for (xs, ws, cfg, max_bytes) in [
            ([3, 5, 7, 5], [5, 5, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
            ([2, 8, 6, 6], [9, 8, 3, 3], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
            ([2, 12, 5, 4], [6, 12, 1, 1], Conv2dConfig::default(), dev.max_binding_bytes()),
            ([5, 6, 9, 9], [7, 6, 3, 3], Conv2dConfig::new(2, Padding::Same), 13000),
        ] {
            dev.start_profile().unwrap();
            check_gpu_backward(&dev, &mut rng, xs, ws, cfg, Tuning { max_bytes, ..pinned(&dev) });
            let kernels: Vec<&str> = dev.finish_profile().iter().map(|t| t.kernel).collect();
            assert!(kernels.contains(&"conv2d_transpose_grad"), "x{xs:?} w{ws:?} ran {kernels:?}");
        }
    }

    #[test]
    fn the_subgroup_gemms_serve_all_three_passes() {
        let dev = crate::testing::own_device();
        if !subgroups_allowed(&dev) {
            eprintln!("{}: no subgroups of 8, nothing to check", dev.name());
            return;
        }
        // Products of at least 32 x 32 in every pass: the forward through the transposed weight.
        let mut rng = rng(29);
        for (xs, ws, cfg) in [
            ([2, 8, 10, 10], [40, 8, 3, 3], Conv2dConfig::new(1, Padding::Same)),
            ([3, 6, 9, 11], [33, 6, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
        ] {
            dev.start_profile().unwrap();
            check_gpu_backward(&dev, &mut rng, xs, ws, cfg, pinned(&dev));
            let profile = dev.finish_profile();
            let calls = |kernel: &str| profile.iter().find(|t| t.kernel == kernel).map_or(0, |t| t.calls);
            assert_eq!(calls("matmul_subgroup"), 3, "x{xs:?} w{ws:?} ran {profile:?}");
            assert_eq!(calls("conv2d_transpose_weight"), 1, "x{xs:?} w{ws:?} ran {profile:?}");
        }
    }

    #[test]
    fn the_small_k_subgroup_kernels_match_reference() {
        let dev = crate::testing::own_device();
        if !has_subgroups_of_8(&dev) {
            return;
        }
        let mut rng = rng(30);
        // K from 2 to 32, c_out around the blocks of 8 lanes and the 1..4 channels per lane (5,
        // 8, 13, 32; 40 and 64 in two blocks, of 3 and 4 channels per lane), batch 1,
        // stride 2, both paddings (taps gathered from outside the input); chunks of images for
        // the input gradient's dcol; and a batch past the weight gradient's partials.
        for (xs, ws, cfg, max_bytes) in [
            ([3, 1, 28, 28], [32, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
            ([1, 1, 6, 6], [5, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
            ([2, 3, 8, 8], [13, 3, 3, 3], Conv2dConfig::new(2, Padding::Same), dev.max_binding_bytes()),
            ([2, 1, 12, 10], [40, 1, 5, 5], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
            ([1, 8, 6, 6], [8, 8, 2, 2], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
            ([2, 2, 7, 8], [64, 2, 1, 2], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
            ([5, 1, 10, 10], [9, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), 6500),
            // Output rows of 2 and 1: each step of 4 positions wraps rows more than once.
            ([2, 1, 6, 4], [4, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
            ([1, 2, 6, 3], [3, 2, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
            // Row sums of dcol with 'same' padding (taps off both edges) and in chunks.
            ([2, 1, 8, 12], [7, 1, 3, 3], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
            ([5, 1, 12, 12], [9, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), 6500),
            // More images than the weight gradient's 32 partials: some workgroups sum two.
            ([37, 1, 6, 6], [6, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
        ] {
            let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
            assert!(g.suits_subgroup(), "{xs:?} {ws:?} {cfg:?}");
            if max_bytes < dev.max_binding_bytes() {
                assert!(chunks(&g, max_bytes).unwrap().len() > 1, "{xs:?}: one chunk");
            }
            dev.start_profile().unwrap();
            // Pinned on, whatever NETMORPH_GEMM_SUBGROUP says: the adapter has the subgroups.
            check_gpu_backward(&dev, &mut rng, xs, ws, cfg, Tuning { max_bytes, subgroup_small_k: true, ..pinned(&dev) });
            let profile = dev.finish_profile();
            let calls = |kernel: &str| profile.iter().find(|t| t.kernel == kernel).map_or(0, |t| t.calls);
            // Forward and weight gradient in one pass each, gathering col from x: no im2col.
            assert_eq!(calls("conv2d_subgroup_forward"), 1, "x{xs:?} w{ws:?} ran {profile:?}");
            assert_eq!(calls("conv2d_subgroup_grad_weight"), 1, "x{xs:?} w{ws:?} ran {profile:?}");
            assert_eq!(calls("conv2d_im2col"), 0, "x{xs:?} w{ws:?} ran {profile:?}");
            // The input gradient needs every channel in one subgroup: per chunk, the row sums of
            // dcol at stride 1 (a lane per kernel row and input channel, rows of whole vec4s),
            // else dcol itself.
            let chunks = if ws[0] <= SUBGROUP_GRAD_COL_MAX { chunks(&g, max_bytes).unwrap().len() as u64 } else { 0 };
            let rowsum = cfg.stride == 1 && xs[1] * ws[2] <= 8 && xs[3].is_multiple_of(4);
            assert_eq!(calls("conv2d_subgroup_grad_rowsum"), if rowsum { chunks } else { 0 }, "x{xs:?} w{ws:?} ran {profile:?}");
            assert_eq!(calls("conv2d_subgroup_grad_col"), if rowsum { 0 } else { chunks }, "x{xs:?} w{ws:?} ran {profile:?}");
        }
        // Planes not of whole vec4s and large reductions keep the other kernels.
        assert!(!conv2d_geometry(&[1, 1, 7, 7], &[4, 1, 3, 3], Conv2dConfig::default()).unwrap().suits_subgroup());
        assert!(!conv2d_geometry(&[1, 32, 6, 6], &[4, 32, 3, 3], Conv2dConfig::default()).unwrap().suits_subgroup());
    }

    #[test]
    fn odd_output_planes_pad_col_and_keep_the_vec4_gemms() {
        // The CNN generator's third conv works on a 7x7 plane; 3x3 and 5x3 planes come from
        // deeper children, 5x5 from a strided one. Zeros in the pads must not leak into any pass.
        let dev = crate::testing::own_device();
        let mut rng = rng(26);
        for (xs, ws, cfg) in [
            ([3, 8, 7, 7], [8, 8, 3, 3], Conv2dConfig::new(1, Padding::Same)),
            ([2, 4, 3, 3], [12, 4, 3, 3], Conv2dConfig::new(1, Padding::Same)),
            ([1, 4, 7, 5], [4, 4, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
            ([2, 5, 9, 9], [6, 5, 1, 1], Conv2dConfig::new(2, Padding::Same)),
        ] {
            let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
            assert!(!g.p().is_multiple_of(4) && g.col_stride() == g.p().next_multiple_of(4), "{g:?}");
            dev.start_profile().unwrap();
            check_gpu_backward(&dev, &mut rng, xs, ws, cfg, pinned(&dev));
            let kernels: Vec<&str> = dev.finish_profile().iter().map(|t| t.kernel).collect();
            assert!(kernels.contains(&"matmul_vec4") && !kernels.contains(&"matmul"), "x{xs:?} w{ws:?} ran {kernels:?}");
        }
        // A pointwise convolution reads x as col: no pad.
        let g = conv2d_geometry(&[1, 3, 7, 7], &[2, 3, 1, 1], Conv2dConfig::default()).unwrap();
        assert_eq!(g.col_stride(), 49);
    }

    #[test]
    fn the_direct_forwards_match_reference_and_the_gemm_path() {
        let dev = crate::testing::own_device();
        let mut rng = rng(26);
        // K <= 32; channel counts around the block of 8, batch 1, strides, both paddings, rows
        // that the 4 outputs of a `direct` invocation wrap, rows of 26 (4 segments of 7, the
        // last one short), 9 and 5 outputs, kernels from 1x2 to 5x5.
        let mut subgroup_forwards = 0;
        for (xs, ws, cfg) in [
            ([3, 1, 28, 28], [32, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
            ([1, 1, 6, 7], [5, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
            ([2, 3, 8, 8], [13, 3, 3, 3], Conv2dConfig::new(2, Padding::Same)),
            ([2, 1, 12, 10], [9, 1, 5, 5], Conv2dConfig::new(1, Padding::Same)),
            ([1, 2, 10, 8], [17, 2, 4, 4], Conv2dConfig::new(2, Padding::Valid)),
            ([2, 2, 7, 8], [3, 2, 2, 3], Conv2dConfig::new(1, Padding::Same)),
            ([2, 1, 7, 7], [4, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
            ([1, 3, 9, 17], [10, 3, 3, 3], Conv2dConfig::new(2, Padding::Same)),
            ([3, 1, 11, 9], [7, 1, 1, 2], Conv2dConfig::new(1, Padding::Same)),
        ] {
            let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
            assert!(g.suits_direct(Direct::Rows), "{xs:?} {ws:?} {cfg:?}");
            let x = rand_vec(&mut rng, xs.iter().product());
            let w = rand_vec(&mut rng, ws.iter().product());
            let b = rand_vec(&mut rng, ws[0]);
            let (xt, wt, bt) = (tensor(&dev, &x, &xs), tensor(&dev, &w, &ws), tensor(&dev, &b, &[ws[0]]));
            for bias in [true, false] {
                let want = cpu::conv2d(&x, &w, bias.then_some(&b[..]), &g);
                for direct in [Direct::Rows, Direct::Quads, Direct::Off] {
                    dev.start_profile().unwrap();
                    let tuning = Tuning { direct, subgroup_forward: false, subgroup_small_k: false, ..pinned(&dev) };
                    let (out, _) = conv2d_tuned(&xt, &wt, bias.then_some(&bt), cfg, tuning).unwrap();
                    let got = out.to_vec().unwrap();
                    let ran: Vec<_> = dev.finish_profile().iter().map(|t| t.kernel).collect();
                    let expected = match direct {
                        Direct::Rows => Some("conv2d_direct_rows"),
                        Direct::Quads if g.p().is_multiple_of(4) => Some("conv2d_direct"),
                        _ => None,
                    };
                    match expected {
                        Some(kernel) => assert_eq!(ran, vec![kernel], "{direct:?} {xs:?} {ws:?}"),
                        None => assert!(ran.contains(&"conv2d_im2col"), "{direct:?} {xs:?} {ws:?}: {ran:?}"),
                    }
                    assert_close(&got, &want, TOL, &format!("conv2d forward {direct:?} bias={bias} x{xs:?} w{ws:?} {cfg:?}"));
                }
                // Every block height of `direct_rows`, including ones that overhang the plane.
                for rows in 1..=4 {
                    let out = Tensor::uninit(&dev, &g.out_shape(), "out").unwrap();
                    conv2d_direct_rows(&xt, &wt, bias.then_some(&bt), &g, &out, rows, DIRECT_CO).unwrap();
                    assert_close(
                        &out.to_vec().unwrap(),
                        &want,
                        TOL,
                        &format!("direct_rows {rows} rows bias={bias} x{xs:?} w{ws:?} {cfg:?}"),
                    );
                }
            }
            // Where the subgroup GEMM takes the product, it runs the forward instead of the direct kernel.
            if subgroups_allowed(&dev) && subgroup_takes_forward(&dev, &g) {
                dev.start_profile().unwrap();
                let tuning = Tuning { subgroup_small_k: false, ..pinned(&dev) };
                let (out, _) = conv2d_tuned(&xt, &wt, Some(&bt), cfg, tuning).unwrap();
                let got = out.to_vec().unwrap();
                let ran: Vec<_> = dev.finish_profile().iter().map(|t| t.kernel).collect();
                assert!(ran.contains(&"matmul_subgroup") && !ran.contains(&"conv2d_direct_rows"), "{xs:?} {ws:?}: {ran:?}");
                assert_close(&got, &cpu::conv2d(&x, &w, Some(&b), &g), TOL, &format!("conv2d subgroup forward x{xs:?} w{ws:?}"));
                subgroup_forwards += 1;
            }
            // The gradients: direct with `Rows` (the input's at stride 1 only), the GEMMs' otherwise.
            let r = rand_vec(&mut rng, g.out_shape().iter().product());
            let (want_dx, want_dw, _) = cpu::conv2d_backward(&x, &w, &r, &g);
            let rt = tensor(&dev, &r, &g.out_shape());
            for direct in [Direct::Rows, Direct::Off] {
                let tuning = Tuning { direct, subgroup_small_k: false, ..pinned(&dev) };
                let (_, bw) = conv2d_tuned(&xt, &wt, None, cfg, tuning).unwrap();
                for (i, kernel, want, direct_here) in [
                    (0, "conv2d_direct_grad_input", &want_dx, direct == Direct::Rows && g.stride == 1),
                    (1, "conv2d_direct_grad_weight", &want_dw, direct == Direct::Rows),
                ] {
                    dev.start_profile().unwrap();
                    let needed: Vec<bool> = (0..3).map(|j| j == i).collect();
                    let got = bw.backward_needed(&rt, &needed).unwrap()[i].as_ref().unwrap().to_vec().unwrap();
                    let ran: Vec<_> = dev.finish_profile().iter().map(|t| t.kernel).collect();
                    assert_eq!(ran.contains(&kernel), direct_here, "{direct:?} {xs:?} {ws:?}: {ran:?}");
                    assert_close(&got, want, TOL, &format!("conv2d gradient {i} {direct:?} x{xs:?} w{ws:?} {cfg:?}"));
                }
            }
        }
        assert!(subgroup_forwards >= 1 || !subgroups_allowed(&dev), "the 28x28 case takes the subgroup GEMM");
        // An odd output plane (5x5) keeps im2col + GEMM with `direct`.
        assert!(!conv2d_geometry(&[1, 1, 7, 7], &[4, 1, 3, 3], Conv2dConfig::default()).unwrap().suits_direct(Direct::Quads));
        // A large reduction and a pointwise convolution keep it with either.
        for kind in [Direct::Quads, Direct::Rows] {
            assert!(!conv2d_geometry(&[1, 32, 6, 6], &[4, 32, 3, 3], Conv2dConfig::default()).unwrap().suits_direct(kind));
            assert!(!conv2d_geometry(&[1, 3, 6, 6], &[4, 3, 1, 1], Conv2dConfig::default()).unwrap().suits_direct(kind));
        }
    }

    #[test]
    fn chunked_batches_match_reference() {
        let dev = device();
        let mut rng = rng(24);
        // One image's col is 2*9 rows of 25 values padded to 28: 2016 bytes. A 4100-byte limit
        // gives chunks of 2, 2, 1 images.
        let (xs, ws, cfg) = ([5, 2, 7, 7], [3, 2, 3, 3], Conv2dConfig::new(1, Padding::Valid));
        let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
        assert_eq!(
            chunks(&g, 4100).unwrap(),
            vec![Chunk { first: 0, images: 2 }, Chunk { first: 2, images: 2 }, Chunk { first: 4, images: 1 }]
        );
        check_gpu_backward(&dev, &mut rng, xs, ws, cfg, Tuning { max_bytes: 4100, direct: Direct::Off, ..pinned(&dev) });
        // Pointwise: x is col, chunks address it by offset.
        check_gpu_backward(
            &dev,
            &mut rng,
            [3, 4, 5, 3],
            [6, 4, 1, 1],
            Conv2dConfig::new(1, Padding::Same),
            Tuning { max_bytes: 1000, orient: Orient::Transposed, direct: Direct::Off, ..pinned(&dev) },
        );
        check_gpu_backward(
            &dev,
            &mut rng,
            [3, 3, 6, 5],
            [2, 3, 5, 5],
            Conv2dConfig::new(2, Padding::Same),
            Tuning { max_bytes: 6000, orient: Orient::Normal, direct: Direct::Off, ..pinned(&dev) },
        );
        let e = chunks(&g, 1000).unwrap_err().to_string();
        assert!(e.contains("[5, 2, 7, 7]") && e.contains("[3, 2, 3, 3]"), "{e}");
    }

    #[test]
    fn backward_without_bias_has_no_bias_gradient() {
        let dev = device();
        let x = Tensor::full(&dev, &[1, 1, 3, 3], 1.0).unwrap();
        let w = Tensor::full(&dev, &[2, 1, 3, 3], 1.0).unwrap();
        let (out, bw) = conv2d(&x, &w, None, Conv2dConfig::default()).unwrap();
        assert_eq!(out.to_vec().unwrap(), vec![9.0, 9.0]);
        let grads = bw.backward(&Tensor::full(&dev, &[1, 2, 1, 1], 1.0).unwrap()).unwrap();
        assert!(grads[2].is_none());
        assert_eq!(grads[0].as_ref().unwrap().to_vec().unwrap(), vec![2.0; 9]);
    }

    #[test]
    fn shaders_validate() {
        validate_wgsl("conv2d", include_str!("../../shaders/conv2d.wgsl"));
        validate_wgsl("conv2d_subgroup", SUBGROUP_SOURCE);
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let cfg = Conv2dConfig::default();
        let cases: [(&[usize], &[usize], &str, &str); 4] = [
            (&[1, 3, 8, 8], &[4, 2, 3, 3], "[1, 3, 8, 8]", "[4, 2, 3, 3]"),
            (&[1, 3, 2, 8], &[4, 3, 3, 3], "[1, 3, 2, 8]", "[4, 3, 3, 3]"),
            (&[3, 8, 8], &[4, 3, 3, 3], "[3, 8, 8]", "[4, 3, 3, 3]"),
            (&[1, 3, 8, 8], &[4, 3, 3], "[1, 3, 8, 8]", "[4, 3, 3]"),
        ];
        for (xs, ws, xn, wn) in cases {
            let e = conv2d_shape(xs, ws, cfg).unwrap_err().to_string();
            assert!(e.contains(xn) && e.contains(wn), "{e}");
        }
        let e = conv2d_shape(&[1, 3, 8, 8], &[4, 3, 3, 3], Conv2dConfig::new(0, Padding::Same)).unwrap_err().to_string();
        assert!(e.contains("stride"), "{e}");
        let x = Tensor::zeros(&dev, &[1, 3, 8, 8]).unwrap();
        let w = Tensor::zeros(&dev, &[4, 3, 3, 3]).unwrap();
        let b = Tensor::zeros(&dev, &[5]).unwrap();
        let e = conv2d(&x, &w, Some(&b), cfg).err().unwrap().to_string();
        assert!(e.contains("[5]") && e.contains("[4, 3, 3, 3]"), "{e}");
        let (_, bw) = conv2d(&x, &w, None, cfg).unwrap();
        let e = bw.backward(&Tensor::zeros(&dev, &[1, 4, 5, 6]).unwrap()).err().unwrap().to_string();
        assert!(e.contains("[1, 4, 5, 6]") && e.contains("[1, 4, 6, 6]"), "{e}");
    }
}
