//! The direct kernels of `shaders/conv2d.wgsl` for small reductions: no col. The forward as
//! `direct` (4 outputs of a plane per invocation) or `direct_rows` (a row segment per
//! invocation), the weight gradient as `direct_grad_weight` and, at stride 1, the input gradient
//! as `direct_grad_input`.

use super::{dispatch_rows, Chunk, Conv2dBackward, ConvGeometry, ConvParams, SUM_BATCH, WG};
use crate::device::{Access, KernelSpec};
use crate::error::Result;
use crate::tensor::Tensor;

static DIRECT: KernelSpec = KernelSpec {
    name: "conv2d_direct",
    source: include_str!("../../../shaders/conv2d.wgsl"),
    entry: "direct",
    // x, out, weight, bias.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read, Access::Read],
};
static DIRECT_ROWS: KernelSpec = KernelSpec {
    name: "conv2d_direct_rows",
    source: include_str!("../../../shaders/conv2d.wgsl"),
    entry: "direct_rows",
    // x, out, weight, bias.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read, Access::Read],
};
static DIRECT_GRAD_WEIGHT: KernelSpec = KernelSpec {
    name: "conv2d_direct_grad_weight",
    source: include_str!("../../../shaders/conv2d.wgsl"),
    entry: "direct_grad_weight",
    // x, per-image partials, output gradient.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
};
static DIRECT_GRAD_INPUT: KernelSpec = KernelSpec {
    name: "conv2d_direct_grad_input",
    source: include_str!("../../../shaders/conv2d.wgsl"),
    entry: "direct_grad_input",
    // output gradient, input gradient, weight.
    bindings: &[Access::Read, Access::ReadWrite, Access::Read],
};

/// Output channels per invocation of the direct kernel (`const CO` in its shader).
pub(super) const DIRECT_CO: usize = 8;
/// The largest reduction (c_in*kh*kw) the direct forward kernel takes: an RGB image's 3x3 (27)
/// or a grey one's 5x5 (25). Beyond it, the GEMM's register blocking reuses each loaded value
/// more than the direct kernel, whose gathers grow with K.
pub(super) const DIRECT_MAX_K: usize = 32;

/// Which direct kernels serve small reductions, if any: `Off` (im2col + GEMM for every pass),
/// `Quads` (`direct`: 4 outputs of a plane per invocation, one gather per tap) or `Rows`
/// (`direct_rows`: a row segment per invocation, each input row's window loaded once; the
/// gradients by `direct_grad_weight` and, at stride 1, `direct_grad_input`).
pub(super) use crate::device::ConvDirect as Direct;

/// The most outputs along a row one invocation of `direct_rows` computes.
const DIRECT_ROW_OUTPUTS: usize = 8;
/// Output rows one invocation of `direct_rows` computes (`const FY`). Measured on lavapipe (conv1
/// of the seed, forward, two alternating rounds): 2 ran at 1.07x and 0.97x the rate of 1, within
/// the noise; 3 and 4 at 0.35x (their 168 and 224 accumulators fall off the register cliff).
pub(super) const DIRECT_FORWARD_ROWS: usize = 1;
/// Rows of the input gradient one invocation of `direct_grad_input` computes (`const RY`).
const DIRECT_GRAD_INPUT_ROWS: usize = 4;

/// Records the direct forward (`direct` in `shaders/conv2d.wgsl`) of the whole batch into `out`.
pub(super) fn forward_quads(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &ConvGeometry, out: &Tensor) -> Result<()> {
    let whole = Chunk { first: 0, images: g.n };
    let params = ConvParams { has_bias: b.is_some() as u32, ..ConvParams::new(g, &whole) };
    // Without a bias, any buffer fills its binding; the kernel does not read it.
    let bias = b.unwrap_or(w);
    let mut grid = crate::ops::grid_1d(crate::ops::groups(g.n * g.p() / 4, WG));
    grid[2] = g.c_out.div_ceil(DIRECT_CO) as u32;
    x.device().dispatch(&DIRECT, &[], &params, &[x.buffer(), out.buffer(), w.buffer(), bias.buffer()], grid)
}

/// Records the row-segment direct forward (`direct_rows` in `shaders/conv2d.wgsl`) of the whole
/// batch, `rows` output rows and `channels` output channels per invocation.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_rows(
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
    let mut grid = crate::ops::grid_1d(crate::ops::groups(g.n * g.oh.div_ceil(rows) * g.ow.div_ceil(row_segment(g.ow)), WG));
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
/// and `channels` output channels per invocation ([`Settings::row_channels`](super::Settings)).
pub(super) fn row_constants(g: &ConvGeometry, len: usize, channels: usize) -> [(&'static str, u32); 5] {
    [("DKH", g.kh as u32), ("DKW", g.kw as u32), ("DS", g.stride as u32), ("XW", row_segment(len) as u32), ("CO", channels as u32)]
}

impl Conv2dBackward {
    /// [`grad_input`](Self::grad_input) by `direct_grad_input`, `channels` per invocation: no
    /// dcol, no col2im.
    pub(super) fn grad_input_direct(&self, dout: &Tensor, channels: usize) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let dx = Tensor::uninit(dev, &g.x_shape(), "conv2d input gradient")?;
        let params = ConvParams::new(g, &Chunk { first: 0, images: g.n });
        let invocations = g.n * g.h.div_ceil(DIRECT_GRAD_INPUT_ROWS) * g.w.div_ceil(row_segment(g.w));
        let mut grid = crate::ops::grid_1d(crate::ops::groups(invocations, WG));
        grid[2] = g.c_in as u32;
        dev.dispatch(&DIRECT_GRAD_INPUT, &row_constants(g, g.w, channels), &params, &[dout.buffer(), dx.buffer(), self.w.buffer()], grid)?;
        Ok(dx)
    }

    /// [`grad_weight`](Self::grad_weight) by `direct_grad_weight` (per-image partials, no col),
    /// `channels` per invocation, and `sum_batch`.
    pub(super) fn grad_weight_direct(&self, dout: &Tensor, channels: usize) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let len = g.c_out * g.k();
        let partials = Tensor::uninit(dev, &[g.n, len], "conv2d weight gradient partials")?;
        let whole = Chunk { first: 0, images: g.n };
        let params = ConvParams::new(g, &whole);
        let mut grid = crate::ops::grid_1d(crate::ops::groups(g.n, WG));
        grid[2] = g.c_out.div_ceil(channels) as u32;
        dev.dispatch(
            &DIRECT_GRAD_WEIGHT,
            &row_constants(g, g.ow, channels),
            &params,
            &[self.x.buffer(), partials.buffer(), dout.buffer()],
            grid,
        )?;
        let dw = Tensor::uninit(dev, &g.w_shape(), "conv2d weight gradient")?;
        let params = ConvParams { len: len as u32, accumulate: 0, ..params };
        dispatch_rows(dev, &SUM_BATCH, &params, &partials, &dw, len)?;
        Ok(dw)
    }
}
