//! Ops: one file per op with its parameter struct, shape rule, forward and backward launches,
//! f64 CPU reference and tests; its shader is `shaders/<op>.wgsl`. Ops know nothing of the tape:
//! a forward returns its output and a [`Backward`] that the tape may keep.

use crate::error::Result;
use crate::tensor::Tensor;

pub mod add;
pub mod batch_norm;
pub mod concat;
pub mod conv2d;
pub mod dense;
pub mod dropout;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod relu;
pub mod shift;
pub mod softmax;
mod timing;

/// The backward half of an op: from dL/d(output), the gradient for each input, in the order the
/// forward took them (`None` where no gradient flows, e.g. integer labels).
pub trait Backward: Send + Sync {
    fn name(&self) -> &'static str;
    fn backward(&self, grad_out: &Tensor) -> Result<Vec<Option<Tensor>>>;
    /// Like `backward`, but `needed[i]` says whether input `i` wants a gradient, so an op can skip
    /// work nobody uses (a first layer's gradient with respect to the data).
    fn backward_needed(&self, grad_out: &Tensor, needed: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let _ = needed;
        self.backward(grad_out)
    }
}

/// Workgroups needed to cover `n` items with `per_group` items each.
pub(crate) fn groups(n: usize, per_group: usize) -> u32 {
    n.div_ceil(per_group) as u32
}

/// Spreads a 1-D count of workgroups over x and y so that no dimension exceeds the adapter's limit
/// (65535 on most). Kernels recover the linear index as `wg.x + wg.y * num_workgroups.x`.
pub(crate) fn grid_1d(total_groups: u32) -> [u32; 3] {
    const MAX: u32 = 65535;
    if total_groups <= MAX {
        [total_groups, 1, 1]
    } else {
        [MAX, total_groups.div_ceil(MAX), 1]
    }
}

/// Element-wise kernels (`shaders/{add,relu,dropout,concat,...}.wgsl`): WG invocations per
/// workgroup, each taking PER_THREAD elements spaced WG apart (coalesced on GPUs). lavapipe pays a
/// fixed cost per workgroup, so ~1024 elements per workgroup runs about 3x faster than 256. Passed
/// as constants to every launch, so these numbers are the only place to tune.
pub(crate) const ELEMENTWISE_WG: u32 = 256;
pub(crate) const ELEMENTWISE_PER_THREAD: u32 = 4;
pub(crate) const ELEMENTWISE_CONSTS: [(&str, u32); 2] = [("WG", ELEMENTWISE_WG), ("PER_THREAD", ELEMENTWISE_PER_THREAD)];

/// The grid of an element-wise kernel over `n` elements.
pub(crate) fn elementwise_grid(n: usize) -> [u32; 3] {
    grid_1d(groups(n, (ELEMENTWISE_WG * ELEMENTWISE_PER_THREAD) as usize))
}
