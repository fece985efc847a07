//! The small-reduction kernels of `shaders/conv2d_subgroup.wgsl`, for adapters with subgroups of
//! any power of two from 4 to 128 (`LANES`, specialised): the forward and the weight gradient gather col from x without storing it; the input
//! gradient makes dcol (or, at stride 1, its row sums) per chunk for col2im.

use super::im2col::col2im;
use super::{dispatch_rows, Chunk, Conv2dBackward, ConvGeometry, ConvParams, BINDINGS, SUM_BATCH};
use crate::device::{Access, Device, KernelSpec};
use crate::error::Result;
use crate::tensor::Tensor;

pub(super) const SUBGROUP_SOURCE: &str = include_str!("../../../shaders/conv2d_subgroup.wgsl");
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

/// Output channels per lane of the subgroup kernels at `lanes` lanes: the fewest blocks of at
/// most [`SUBGROUP_CPL`] channels per lane (32 channels at 8 lanes), split evenly (at 8 lanes, 48
/// as two blocks of 24, not 32 + 16 with half a block idle). Each channel adds a vec4 load (or
/// store) and K multiply-adds per step to a lane's gathered taps and their shuffles; past 4, its
/// K sums or weights each would crowd the registers.
fn subgroup_channels_per_lane(c_out: usize, lanes: usize) -> usize {
    c_out.div_ceil(lanes * c_out.div_ceil(SUBGROUP_CPL * lanes))
}

/// The most output channels per lane of the forward and weight gradient.
const SUBGROUP_CPL: usize = 4;
/// The most output channels per lane of `grad_col` and `grad_rowsum`, which take every output
/// channel in one workgroup: their sums run over every channel, and the per-lane registers (the
/// channels' weights and gradients) grow with them. At 8 lanes, 64 channels: the search's CNN
/// generator's first layer at width 48 ran at 1.8x the direct input gradient.
const SUBGROUP_GRAD_COL_CPL: usize = 8;

/// The most output channels the subgroup input gradient takes at `lanes` lanes (64 at 8).
pub(super) fn subgroup_grad_col_max(lanes: usize) -> usize {
    SUBGROUP_GRAD_COL_CPL * lanes
}

/// The subgroup size the kernels are specialised for: the device's, which the plan (or a test)
/// has checked to be one they take.
pub(super) fn lanes(dev: &Device) -> usize {
    crate::ops::matmul::subgroup_lanes(dev).expect("the small-K subgroup kernels run only with subgroups of 4 to 128") as usize
}

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
    let dev = buffers[0].device();
    let lanes = lanes(dev);
    let constants = [("LANES", lanes as u32), ("KK", g.k() as u32), ("CPL", cpl as u32)];
    let grid = [groups as u32, g.c_out.div_ceil(lanes * cpl) as u32, 1];
    let buffers: Vec<_> = buffers.iter().map(|t| t.buffer()).collect();
    dev.dispatch(kernel, &constants, &params, &buffers, grid)
}

/// Records the forward of the whole batch into `out` by `forward`, which gathers col from x.
pub(super) fn forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &ConvGeometry, out: &Tensor) -> Result<()> {
    let whole = Chunk { first: 0, images: g.n };
    // Without a bias, any buffer fills its binding; the kernel does not read it.
    let cpl = subgroup_channels_per_lane(g.c_out, lanes(x.device()));
    subgroup_pass(&SUBGROUP_FORWARD, g, &whole, b.is_some(), &[x, out, w, b.unwrap_or(w)], g.n, cpl)
}

impl Conv2dBackward {
    /// [`grad_input`](Self::grad_input) per chunk: with `row_sums` (stride 1) as dcol's row sums
    /// by `grad_rowsum` (a lane per input channel and kernel row, so at most `LANES` of them; rows of
    /// whole vec4s for `col2im_rowsum`), else as dcol by `grad_col` and then col2im.
    pub(super) fn grad_input_subgroup(&self, dout: &Tensor, row_sums: bool) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let dx = Tensor::uninit(dev, &g.x_shape(), "conv2d input gradient")?;
        let groups = g.c_in * g.kh;
        let lanes = lanes(dev);
        for chunk in self.plan.chunks()? {
            if row_sums {
                let srow = Tensor::uninit(dev, &[chunk.images, groups, g.oh, g.w], "conv2d row sums of dcol")?;
                let params = ConvParams::new(g, chunk);
                let cpl = g.c_out.div_ceil(lanes) as u32;
                let constants = [("LANES", lanes as u32), ("KK", g.k() as u32), ("CPL", cpl), ("RW", g.kw as u32)];
                dev.dispatch(
                    &SUBGROUP_GRAD_ROWSUM,
                    &constants,
                    &params,
                    &[dout.buffer(), srow.buffer(), self.w.buffer()],
                    [chunk.images as u32, 1, 1],
                )?;
                let rows = chunk.images * g.c_in * g.h;
                let grid = crate::ops::grid_1d(crate::ops::groups(rows, 64));
                dev.dispatch(&COL2IM_ROWSUM, &[("RH", g.kh as u32)], &params, &[srow.buffer(), dx.buffer()], grid)?;
                continue;
            }
            let dcol = Tensor::uninit(dev, &[chunk.images, g.k(), g.col_stride()], "conv2d col gradient")?;
            subgroup_pass(&SUBGROUP_GRAD_COL, g, chunk, false, &[dout, &dcol, &self.w], chunk.images, g.c_out.div_ceil(lanes))?;
            col2im(g, chunk, &dcol, &dx)?;
        }
        Ok(dx)
    }

    /// [`grad_weight`](Self::grad_weight) by `grad_weight` (partials over the whole batch, col
    /// gathered from x) and `sum_batch`.
    pub(super) fn grad_weight_subgroup(&self, dout: &Tensor) -> Result<Tensor> {
        let g = &self.geometry;
        let dev = dout.device();
        let len = g.c_out * g.k();
        let parts = g.n.min(SUBGROUP_WEIGHT_PARTIALS);
        let partials = Tensor::uninit(dev, &[parts, len], "conv2d weight gradient partials")?;
        let whole = Chunk { first: 0, images: g.n };
        subgroup_pass(
            &SUBGROUP_GRAD_WEIGHT,
            g,
            &whole,
            false,
            &[&self.x, &partials, dout],
            parts,
            subgroup_channels_per_lane(g.c_out, lanes(dev)),
        )?;
        let dw = Tensor::uninit(dev, &g.w_shape(), "conv2d weight gradient")?;
        let params = ConvParams { len: len as u32, images: parts as u32, ..ConvParams::new(g, &whole) };
        dispatch_rows(dev, &SUM_BATCH, &params, &partials, &dw, len)?;
        Ok(dw)
    }
}
