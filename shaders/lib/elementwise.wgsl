// The element-wise kernels' grid: WG invocations per workgroup, each taking PER_THREAD elements
// spaced WG apart (coalesced on GPUs).
#include "lib/grid.wgsl"

// Set from ops::ELEMENTWISE_CONSTS at every launch.
const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;

// The first of this invocation's PER_THREAD elements.
fn first_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wg, nwg) * WG * PER_THREAD + lid;
}
