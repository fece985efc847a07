// Element-wise sums and scaling on flat f32 buffers: out = a + b, out += a, out = a * s.
// All entries share one binding layout (a, b, out) so one kernel declaration serves them; an entry
// that does not use `b` is given `a` again. Elements go four at a time (`n` counts vec4s), as in
// relu.wgsl: the last vec4's lanes past the tensor fall in its buffer's 16-byte padding.

struct Params {
    n: u32, s: f32, _p0: u32, _p1: u32,
}

#include "lib/elementwise.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.n) {
            return;
        }
        out[i] = a[i] + b[i];
    }
}

@compute @workgroup_size(WG)
fn accumulate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.n) {
            return;
        }
        out[i] = out[i] + a[i];
    }
}

@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.n) {
            return;
        }
        out[i] = a[i] * p.s;
    }
}
