// Batch-norm forward, element-wise over x viewed as [outer, channels, inner]:
// y = (x - mean) * (gamma * invstd) + beta, with stats[ch] = (mean, invstd, gamma * invstd, beta)
// from batch_norm_stats.wgsl (batch statistics in training, running ones in evaluation).
// `planes` (for h * w >= WG): one workgroup per (n, c) plane, so the channel is uniform and the
// invocations read consecutive addresses. `main` (small planes, dense): flat over all elements.

struct Params {
    outer: u32, channels: u32, inner: u32, _p0: u32,
}

// WG and PER_THREAD are set at every launch: ops::ELEMENTWISE_CONSTS for `main`, batch_norm::reduce_wg for `planes`.
#include "lib/elementwise.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn planes(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let plane = workgroup_index(wg, nwg);
    if (plane >= p.outer * p.channels) {
        return;
    }
    let s = stats[plane % p.channels];
    let base = plane * p.inner;
    for (var i = base + lid; i < base + p.inner; i += WG) {
        y[i] = (x[i] - s.x) * s.z + s.w;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    // The channel of element i is (i / inner) % channels; it is found once and then advanced by
    // WG elements with a carry, since integer division is slow on CPU backends.
    var ch = (first / p.inner) % p.channels;
    var pos = first % p.inner;
    let step_ch = (WG / p.inner) % p.channels;
    let step_pos = WG % p.inner;
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.outer * p.channels * p.inner) {
            return;
        }
        let s = stats[ch];
        y[i] = (x[i] - s.x) * s.z + s.w;
        pos += step_pos;
        if (pos >= p.inner) {
            pos -= p.inner;
            ch += 1u;
        }
        ch += step_ch;
        if (ch >= p.channels) {
            ch -= p.channels;
        }
    }
}
