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
//! subgroups (any power of two from 4 to 128 lanes; planned at lavapipe's 4 and 8), such a layer
//! over planes of whole vec4s runs its forward and weight gradient in
//! `shaders/conv2d_subgroup.wgsl` instead, gathering col from x without storing it, and its input
//! gradient's dcol (or its row sums) there too (then col2im).
//! col's rows, and the output gradient's planes in backward-data, are padded with zeros to a multiple
//! of 4 values so that odd planes (7x7) still run the vec4 GEMMs; a small K's input gradient reads
//! a transposed copy of the weight.
//! A 1x1 stride-1 convolution uses `x` as its col. When col for the whole batch would exceed the
//! adapter's storage-binding limit, the batch is processed in chunks of images.
//!
//! Which of these runs each pass is decided once per convolution, in the forward, by a
//! `ConvPlan` that the backward keeps. Here: the API, the geometry and the plan; the kernels'
//! launchers by family in `im2col` (im2col, col2im and the GEMMs), `direct` and `subgroup`; the
//! f64 reference in [`cpu`].

mod direct;
mod im2col;
mod subgroup;
mod tuning;

pub mod cpu;
#[cfg(test)]
mod tests;

use super::matmul::{subgroup_lanes, subgroups_allowed};
use super::Backward;
use crate::device::{Access, Device, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use direct::{Direct, DIRECT_CO, DIRECT_FORWARD_ROWS, DIRECT_MAX_K};
use im2col::{chunks, subgroup_takes_forward, Chunk, Orient, TRANSPOSED_WEIGHT_MAX_K};
use std::sync::OnceLock;
use subgroup::subgroup_grad_col_max;

static SUM_BATCH: KernelSpec =
    KernelSpec { name: "conv2d_sum_batch", source: include_str!("../../../shaders/conv2d.wgsl"), entry: "sum_batch", bindings: BINDINGS };
const BINDINGS: &[Access] = &[Access::Read, Access::ReadWrite];
const WG: usize = 64;

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

/// Records `spec` over `rows` invocations (in workgroups of [`WG`]), reading `src` into `dst`.
fn dispatch_rows(device: &Device, spec: &KernelSpec, params: &ConvParams, src: &Tensor, dst: &Tensor, rows: usize) -> Result<()> {
    device.dispatch(spec, &[], params, &[src.buffer(), dst.buffer()], super::grid_1d(super::groups(rows, WG)))
}

/// How a convolution runs. The defaults come from the adapter and the environment; tests pin each
/// knob to reach every path.
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// The per-binding byte limit for the col buffers (a small one exercises chunking).
    max_bytes: u64,
    orient: Orient,
    /// Which direct kernel may serve small reductions.
    direct: Direct,
    /// Whether the forward may run as the subgroup GEMM, where that takes the product: reading the
    /// weight as `[K, c_out]` ([`WeightLayout::Transposed`]), since its A-along-m kernel outruns its
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

/// Whether the small-reduction kernels of `shaders/conv2d_subgroup.wgsl` can run on `dev`: at
/// any subgroup size the GEMM's subgroup kernels take (a power of two, 4 to 128), unless the
/// environment turns subgroups off. Tests and the tuner may use them wherever this holds.
pub(super) fn small_k_subgroups(dev: &Device) -> bool {
    subgroups_allowed(dev)
}

/// The subgroup sizes at which the rules plan the small-K kernels ([`small_k_subgroups`] only at
/// these): where they were measured faster than the direct kernels. On lavapipe, the seed's conv1
/// (examples/profile_conv, medians of 9 runs): at 8 lanes as before; at 4 (LP_NATIVE_VECTOR_WIDTH=128)
/// forward 4.6 ms against the direct kernel's 11.3, input gradient 5.1 against 9.3, weight
/// gradient 4.6 against 4.7. Other sizes, never measured, are left to the tuner.
const PLANNED_SMALL_K_LANES: [u32; 2] = [4, 8];

/// Whether the rules ([`Settings::for_device`]) plan the small-K subgroup kernels on `dev`.
pub(super) fn plans_small_k_subgroups(dev: &Device) -> bool {
    small_k_subgroups(dev) && subgroup_lanes(dev).is_some_and(|l| PLANNED_SMALL_K_LANES.contains(&l))
}

impl Settings {
    /// The device's: its binding limit, subgroups, and the knobs it opened with.
    fn for_device(dev: &Device) -> Settings {
        let knobs = dev.knobs();
        Settings {
            max_bytes: dev.max_binding_bytes(),
            orient: knobs.conv_orient,
            direct: knobs.conv_direct,
            subgroup_forward: subgroups_allowed(dev),
            subgroup_small_k: plans_small_k_subgroups(dev),
            row_channels: knobs.row_channels.map_or(DIRECT_CO, |c| c as usize),
            row_outputs: knobs.row_outputs.map_or(DIRECT_FORWARD_ROWS, |r| r as usize),
        }
    }
}

/// How each pass of one convolution runs: decided once, in the forward, from the geometry, the
/// [`Settings`] and the device, and kept by the backward.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ConvPlan {
    forward: ForwardPath,
    grad_input: GradInputPath,
    grad_weight: GradWeightPath,
    /// The batch in chunks whose col buffers fit one binding, or why one image's do not: an error
    /// only for the passes that make such buffers (a direct forward of a large image needs none).
    chunks: std::result::Result<Vec<Chunk>, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ForwardPath {
    /// `forward` of `shaders/conv2d_subgroup.wgsl`: no col, the kernel gathers it from x.
    SubgroupSmallK,
    /// `direct_rows`, `rows` output rows and `channels` output channels per invocation. The direct
    /// forwards make no col (a GEMM weight gradient makes its own) and no weight matrix (a GEMM
    /// input gradient makes it, when it is needed at all: a first layer's is not).
    DirectRows { rows: usize, channels: usize },
    /// `direct`: 4 outputs of a plane per invocation.
    DirectQuads,
    /// im2col (x itself when pointwise), then the GEMM per chunk.
    Gemm(ConvGemm),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GradInputPath {
    /// dcol's row sums by `grad_rowsum` (a lane per input channel and kernel row, so at most 8 of
    /// them; stride 1, rows of whole vec4s), then `col2im_rowsum`, per chunk.
    SubgroupRowSums,
    /// dcol by `grad_col` of `shaders/conv2d_subgroup.wgsl`, then col2im, per chunk.
    SubgroupCol,
    /// `direct_grad_input` (stride 1), `channels` per invocation: no dcol, no col2im.
    Direct { channels: usize },
    /// dcol = W^T dout by the GEMM, then col2im (none when pointwise: dcol is the gradient), per
    /// chunk.
    Gemm(ConvGemm),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GradWeightPath {
    /// `grad_weight` of `shaders/conv2d_subgroup.wgsl` (partials over the whole batch, col
    /// gathered from x), then `sum_batch`.
    Subgroup,
    /// `direct_grad_weight` (per-image partials, no col), `channels` per invocation, then
    /// `sum_batch`.
    Direct { channels: usize },
    /// Per-image GEMMs of col and the transposed output gradient per chunk, then `sum_batch`.
    Gemm,
}

/// How a GEMM pass (the forward or the input gradient) reads the weight, and which way round it
/// runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConvGemm {
    weight: WeightLayout,
    orient: Orient,
}

/// The copy of the weight a GEMM reads as its A operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WeightLayout {
    /// `[c_out, K]`, rows padded to a multiple of 4 ([`im2col::weight_matrix`]).
    Matrix,
    /// `[K, c_out]`, rows padded to a multiple of 4 ([`im2col::weight_transposed`]).
    Transposed,
}

impl ConvPlan {
    fn new(dev: &Device, g: &ConvGeometry, settings: &Settings) -> ConvPlan {
        // The small-K subgroup kernels' lane count (0: no subgroups, the kernels cannot run).
        let lanes = subgroup_lanes(dev).map_or(0, |l| l as usize);
        let small_k_subgroup = settings.subgroup_small_k && lanes > 0 && g.suits_subgroup();
        let direct_rows = settings.direct == Direct::Rows && g.suits_direct(Direct::Rows);
        let orient = settings.orient;
        // The subgroup GEMM is asked only when the small-K kernels do not take the layer (it plans
        // a GEMM, and logs it).
        let forward = if small_k_subgroup {
            ForwardPath::SubgroupSmallK
        } else if settings.subgroup_forward && subgroup_takes_forward(dev, g) {
            ForwardPath::Gemm(ConvGemm { weight: WeightLayout::Transposed, orient })
        } else if g.suits_direct(settings.direct) {
            match settings.direct {
                Direct::Rows => ForwardPath::DirectRows { rows: settings.row_outputs, channels: settings.row_channels },
                _ => ForwardPath::DirectQuads,
            }
        } else {
            ForwardPath::Gemm(ConvGemm { weight: WeightLayout::Matrix, orient })
        };
        // The subgroup dcol needs every output channel in one subgroup, its row sums a lane per
        // input channel and kernel row.
        let grad_input = if small_k_subgroup && g.c_out <= subgroup_grad_col_max(lanes) {
            if g.stride == 1 && g.c_in * g.kh <= lanes && g.w.is_multiple_of(4) {
                GradInputPath::SubgroupRowSums
            } else {
                GradInputPath::SubgroupCol
            }
        } else if direct_rows && g.stride == 1 {
            GradInputPath::Direct { channels: settings.row_channels }
        } else {
            // W^T as the A operand: read across the weight matrix's rows, or along the rows of a
            // transposed copy when K is small.
            let weight = if g.k() <= TRANSPOSED_WEIGHT_MAX_K { WeightLayout::Transposed } else { WeightLayout::Matrix };
            GradInputPath::Gemm(ConvGemm { weight, orient })
        };
        let grad_weight = if small_k_subgroup {
            GradWeightPath::Subgroup
        } else if direct_rows {
            GradWeightPath::Direct { channels: settings.row_channels }
        } else {
            GradWeightPath::Gemm
        };
        ConvPlan { forward, grad_input, grad_weight, chunks: chunks(g, settings.max_bytes) }
    }

    /// The chunks of the batch, or the error that one image's col buffers exceed a binding.
    fn chunks(&self) -> Result<&[Chunk]> {
        self.chunks.as_deref().map_err(|why| Error::Invalid(why.clone()))
    }

    /// Whether the GEMM forward keeps col for the weight gradient, saving its recomputation: only
    /// when one chunk holds it all, col is not x itself, and the weight gradient reads col.
    fn keeps_col(&self, g: &ConvGeometry) -> bool {
        matches!(self.chunks.as_deref(), Ok([_])) && !g.is_pointwise() && self.grad_weight == GradWeightPath::Gemm
    }
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
    let rules = Settings::for_device(x.device());
    // A shape error is conv2d_with's to report.
    let settings = match conv2d_geometry(x.shape(), w.shape(), cfg) {
        Ok(g) => tuning::settings(x, w, b, cfg, &g, rules)?,
        Err(_) => rules,
    };
    conv2d_with(x, w, b, cfg, settings)
}

/// [`conv2d`] with the given [`Settings`].
fn conv2d_with(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dConfig, settings: Settings) -> Result<(Tensor, Conv2dBackward)> {
    x.expect_f32("conv2d")?;
    w.expect_f32("conv2d")?;
    let g = conv2d_geometry(x.shape(), w.shape(), cfg)?;
    check_bias(b, &g)?;
    let out = Tensor::uninit(x.device(), &g.out_shape(), "conv2d output")?;
    let plan = ConvPlan::new(x.device(), &g, &settings);
    let w_matrix = OnceLock::new();
    let mut col = None;
    match plan.forward {
        ForwardPath::SubgroupSmallK => subgroup::forward(x, w, b, &g, &out)?,
        ForwardPath::DirectRows { rows, channels } => direct::forward_rows(x, w, b, &g, &out, rows, channels)?,
        ForwardPath::DirectQuads => direct::forward_quads(x, w, b, &g, &out)?,
        ForwardPath::Gemm(gemm) => {
            let kept = im2col::forward(x, w, b, &g, &out, &plan, gemm)?;
            col = kept.col;
            // Kept for the input gradient.
            if let Some(m) = kept.w_matrix {
                let _ = w_matrix.set(m);
            }
        }
    }
    let backward = Conv2dBackward { x: x.clone(), w: w.clone(), w_matrix, has_bias: b.is_some(), geometry: g, col, plan };
    Ok((out, backward))
}

pub struct Conv2dBackward {
    x: Tensor,
    w: Tensor,
    /// The weight as a matrix and its row stride (see [`im2col::weight_matrix`]): made by a GEMM
    /// forward that read it, else by the first input gradient of a large K (a small K's reads
    /// [`im2col::weight_transposed`]).
    w_matrix: OnceLock<(Tensor, usize)>,
    has_bias: bool,
    geometry: ConvGeometry,
    /// im2col of the whole batch, kept from forward when it fitted in one chunk.
    col: Option<Tensor>,
    /// The forward's: how each gradient runs.
    plan: ConvPlan,
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
        let m = im2col::weight_matrix(&self.w, &self.geometry)?;
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

    // dcol[n] = W^T dout[n];  dx = col2im(dcol) (each input sums the col entries it was copied to).
    pub fn grad_input(&self, dout: &Tensor) -> Result<Tensor> {
        self.check_grad(dout)?;
        match self.plan.grad_input {
            GradInputPath::SubgroupRowSums => self.grad_input_subgroup(dout, true),
            GradInputPath::SubgroupCol => self.grad_input_subgroup(dout, false),
            GradInputPath::Direct { channels } => self.grad_input_direct(dout, channels),
            GradInputPath::Gemm(gemm) => self.grad_input_gemm(dout, gemm),
        }
    }

    // dW = sum_n dout[n] col[n]^T (computed transposed: col[n] dout[n]^T).
    pub fn grad_weight(&self, dout: &Tensor) -> Result<Tensor> {
        self.check_grad(dout)?;
        match self.plan.grad_weight {
            GradWeightPath::Subgroup => self.grad_weight_subgroup(dout),
            GradWeightPath::Direct { channels } => self.grad_weight_direct(dout, channels),
            GradWeightPath::Gemm => self.grad_weight_gemm(dout),
        }
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
