// Sums a tensor viewed as [outer, mid, inner] over outer and inner: out[m] = sum x[o, m, i]
// (bias gradients of dense and conv layers, batch statistics). One workgroup per output element;
// each invocation sums a strided slice, then the workgroup combines the partial sums.

#include "lib/grid.wgsl"

struct Params {
    outer: u32, mid: u32, inner: u32, accumulate: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG>;
#include "lib/workgroup_sum.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = workgroup_index(wg, nwg);
    if (m >= p.mid) {
        return; // uniform per workgroup, so the barriers below stay uniform
    }
    let count = p.outer * p.inner;
    var s = 0.0;
    for (var t = lid; t < count; t += WG) {
        let o = t / p.inner;
        let i = t - o * p.inner;
        s += x[(o * p.mid + m) * p.inner + i];
    }
    partial[lid] = s;
    sum_partials(lid);
    if (lid == 0u) {
        var v = partial[0];
        if (p.accumulate != 0u) {
            v += out[m];
        }
        out[m] = v;
    }
}
