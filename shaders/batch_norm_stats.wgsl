// Batch-norm statistics per channel of x viewed as [outer, channels, inner]. Writes, per channel,
// stats[ch] = (mean, invstd, gamma * invstd, beta): what the normalise kernel needs in one read,
// and the mean and invstd the backward needs.
// `train`: one workgroup per channel computes the batch mean and biased variance (two passes over
// the channel, for accuracy) and updates the running statistics in place, Keras style:
// running = momentum * running + (1 - momentum) * batch, with the unbiased variance
// (var * N / (N - 1), as PyTorch and TensorFlow's fused kernel keep; N = 1 keeps the biased 0).
// `eval`: one invocation per channel turns the running statistics into stats; x is not read.

#include "lib/grid.wgsl"

struct Params {
    outer: u32, channels: u32, inner: u32, momentum: f32,
    eps: f32, _p0: u32, _p1: u32, _p2: u32,
}

// Set from batch_norm::reduce_wg at every launch.
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<vec4<f32>>;

var<workgroup> partial: array<f32, WG>;
#include "lib/workgroup_sum.wgsl"

// Sums `v` over the workgroup; every invocation gets the total.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    sum_partials(lid);
    let total = partial[0];
    workgroupBarrier(); // everyone has read partial[0] before it is written again
    return total;
}

fn term(v: f32, center: f32, squares: bool) -> f32 {
    let d = v - center;
    return select(v, d * d, squares);
}

// Sum over channel ch of x, or of (x - center)^2 when `squares`; value (o, i) of the channel is at
// (o * channels + ch) * inner + i.
fn channel_sum(ch: u32, lid: u32, center: f32, squares: bool) -> f32 {
    var s = 0.0;
    if (p.inner >= WG) {
        // Planes at least a workgroup wide: the invocations read consecutive addresses (CPU
        // backends then load vectors instead of gathering, 2-3x faster).
        for (var o = 0u; o < p.outer; o++) {
            let base = (o * p.channels + ch) * p.inner;
            for (var i = lid; i < p.inner; i += WG) {
                s += term(x[base + i], center, squares);
            }
        }
    } else {
        // Small planes (dense: inner = 1): invocation lid takes the channel's values lid,
        // lid + WG, ...; value t is (o, i) = divmod(t, inner), advanced by adding divmod(WG, inner)
        // so the loop never divides (integer division is slow on CPU backends).
        var o = lid / p.inner;
        var i = lid % p.inner;
        let step_o = WG / p.inner;
        let step_i = WG % p.inner;
        while (o < p.outer) {
            s += term(x[(o * p.channels + ch) * p.inner + i], center, squares);
            o += step_o;
            i += step_i;
            if (i >= p.inner) {
                i -= p.inner;
                o += 1u;
            }
        }
    }
    return s;
}

@compute @workgroup_size(WG)
fn train(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = workgroup_index(wg, nwg);
    if (ch >= p.channels) {
        return; // uniform per workgroup, so the barriers stay uniform
    }
    let count = f32(p.outer * p.inner);
    let mean = workgroup_sum(lid, channel_sum(ch, lid, 0.0, false)) / count;
    let variance = workgroup_sum(lid, channel_sum(ch, lid, mean, true)) / count;
    if (lid == 0u) {
        let invstd = inverseSqrt(variance + p.eps);
        stats[ch] = vec4<f32>(mean, invstd, gamma[ch] * invstd, beta[ch]);
        let unbiased = variance * count / max(count - 1.0, 1.0);
        running_mean[ch] = p.momentum * running_mean[ch] + (1.0 - p.momentum) * mean;
        running_var[ch] = p.momentum * running_var[ch] + (1.0 - p.momentum) * unbiased;
    }
}

@compute @workgroup_size(WG)
fn eval(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = workgroup_index(wg, nwg) * WG + lid;
    if (ch >= p.channels) {
        return;
    }
    let invstd = inverseSqrt(running_var[ch] + p.eps);
    stats[ch] = vec4<f32>(running_mean[ch], invstd, gamma[ch] * invstd, beta[ch]);
}
