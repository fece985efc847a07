// ReLU: forward y = max(x, 0); backward dx = dy where y > 0, else 0 (the output is saved, so the
// input need not be). Both entries share the binding layout (a, b, out); forward ignores `b`.
// Elements go four at a time (`n` counts vec4s): on lavapipe each load and store costs the same
// per lane whatever its width. Buffers are padded to 16 bytes, so the last vec4 is in bounds; its
// lanes past the tensor are computed and stored into that padding.

struct Params {
    n: u32, _p0: u32, _p1: u32, _p2: u32,
}

#include "lib/elementwise.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

// a = x
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.n) {
            return;
        }
        out[i] = max(a[i], vec4<f32>(0.0));
    }
}

// a = y, b = dy
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.n) {
            return;
        }
        out[i] = select(vec4<f32>(0.0), b[i], a[i] > vec4<f32>(0.0));
    }
}
