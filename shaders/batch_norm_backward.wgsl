// Batch-norm backward for x viewed as [outer, channels, inner], with xhat = (x - mean) * invstd
// from the forward's stats[ch] = (mean, invstd, ..). Both entries share one binding layout.
// `reduce`: one workgroup per channel: dbeta = sum(dy), dgamma = sum(dy * xhat); then the
// channel's coefficients coef[ch] = (mean, k, c_x, c_0) of dx = k * dy + c_x * (x - mean) + c_0:
//   training (batch statistics): dx = k * (dy - dbeta / N - xhat * dgamma / N), k = gamma * invstd
//   evaluation (running statistics, an affine map): dx = k * dy
// dx, after `reduce`: `planes` (h * w >= WG) one workgroup per (n, c) plane, `main` flat over all
// elements (small planes, dense), as in batch_norm.wgsl.

struct Params {
    outer: u32, channels: u32, inner: u32, training: u32,
    inv_count: f32, _p0: u32, _p1: u32, _p2: u32,
}

// WG and PER_THREAD are set at every launch: ops::ELEMENTWISE_CONSTS for `main`, batch_norm::reduce_wg for the others.
#include "lib/elementwise.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(7) var<storage, read_write> coef: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

var<workgroup> partial: array<vec2<f32>, WG>;
#include "lib/workgroup_sum.wgsl"

@compute @workgroup_size(WG)
fn reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = workgroup_index(wg, nwg);
    if (ch >= p.channels) {
        return; // uniform per workgroup, so the barriers stay uniform
    }
    let mean = stats[ch].x;
    let invstd = stats[ch].y;
    // Value (o, i) of the channel is at (o * channels + ch) * inner + i; the loops are those of
    // channel_sum in batch_norm_stats.wgsl.
    var s = vec2<f32>(0.0, 0.0);
    if (p.inner >= WG) {
        for (var o = 0u; o < p.outer; o++) {
            let base = (o * p.channels + ch) * p.inner;
            for (var i = lid; i < p.inner; i += WG) {
                let g = dy[base + i];
                s += vec2<f32>(g, g * (x[base + i] - mean) * invstd);
            }
        }
    } else {
        var o = lid / p.inner;
        var i = lid % p.inner;
        let step_o = WG / p.inner;
        let step_i = WG % p.inner;
        while (o < p.outer) {
            let at = (o * p.channels + ch) * p.inner + i;
            let g = dy[at];
            s += vec2<f32>(g, g * (x[at] - mean) * invstd);
            o += step_o;
            i += step_i;
            if (i >= p.inner) {
                i -= p.inner;
                o += 1u;
            }
        }
    }
    partial[lid] = s;
    sum_partials(lid);
    if (lid == 0u) {
        let sums = partial[0];
        dbeta[ch] = sums.x;
        dgamma[ch] = sums.y;
        let k = gamma[ch] * invstd;
        if (p.training != 0u) {
            coef[ch] = vec4<f32>(mean, k, -k * invstd * sums.y * p.inv_count, -k * sums.x * p.inv_count);
        } else {
            coef[ch] = vec4<f32>(mean, k, 0.0, 0.0);
        }
    }
}

@compute @workgroup_size(WG)
fn planes(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let plane = workgroup_index(wg, nwg);
    if (plane >= p.outer * p.channels) {
        return;
    }
    let c = coef[plane % p.channels];
    let base = plane * p.inner;
    for (var i = base + lid; i < base + p.inner; i += WG) {
        dx[i] = c.y * dy[i] + c.z * (x[i] - c.x) + c.w;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    // The channel of element i is (i / inner) % channels; found once, then advanced with a carry.
    var ch = (first / p.inner) % p.channels;
    var pos = first % p.inner;
    let step_ch = (WG / p.inner) % p.channels;
    let step_pos = WG % p.inner;
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.outer * p.channels * p.inner) {
            return;
        }
        let c = coef[ch];
        dx[i] = c.y * dy[i] + c.z * (x[i] - c.x) + c.w;
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
