// What every optimizer update shares: one invocation per element of the parameter, which it
// rewrites in place from its gradient (bindings 1 and 2; its state follows from binding 3).
#include "lib/grid.wgsl"

// optim::WG
const WG: u32 = 256u;

@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;

// The element this invocation updates (past the parameter's end in the last workgroup).
fn parameter_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wg, nwg) * WG + lid;
}
