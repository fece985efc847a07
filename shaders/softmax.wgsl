// Row-wise softmax of logits [rows, cols], stable: exp(x - max) / sum. `main` and `wide` give the
// probabilities (inference); `xent` and `xent_wide` are the forward of softmax cross-entropy: they
// save the probabilities for the backward and write each row's loss already divided by the number
// of rows, so summing row_loss gives the batch mean: loss = log(sum exp(x - max)) + max - x[label].
// With label smoothing eps > 0 the target is q = (1 - eps) onehot(label) + eps / cols, and the loss
// -sum_k q_k log p_k = (1 - eps) (log s + max - x[label]) + eps (log s + mean_k (max - x[k])); the
// terms max - x[k] are all >= 0, so their sum loses nothing to cancellation. eps = 0 runs exactly
// the plain formula.
// A label >= cols is never used as an index: its row's loss is `invalid` (NaN), which the training
// loop's divergence check reports, and its gradient has no one-hot term.
// Narrow rows (class counts) take one row per invocation, so no workgroup barriers are needed;
// wide rows (cols >= WG) one row per workgroup.

#include "lib/grid.wgsl"

struct Params {
    rows: u32, cols: u32, inv_rows: f32, invalid: f32, smoothing: f32, _p0: u32, _p1: u32, _p2: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
// Cross-entropy only.
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;

var<workgroup> partial: array<f32, WG>;

// Combines `v` over the workgroup with max (or sum); every invocation gets the result.
fn workgroup_reduce(lid: u32, v: f32, take_max: bool) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let other = partial[lid + stride];
            partial[lid] = select(partial[lid] + other, max(partial[lid], other), take_max);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier(); // everyone has read partial[0] before it is written again
    return total;
}

// Wide rows (cols >= WG): one workgroup per row, the invocations striding over its columns, so
// reads are consecutive; returns the row's sum of exp(x - max) and leaves the probabilities written.
fn wide_softmax(base: u32, lid: u32) -> vec2<f32> {
    var m = logits[base];
    for (var j = lid; j < p.cols; j += WG) {
        m = max(m, logits[base + j]);
    }
    m = workgroup_reduce(lid, m, true);
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        let e = exp(logits[base + j] - m);
        probs[base + j] = e;
        s += e;
    }
    s = workgroup_reduce(lid, s, false);
    let inv = 1.0 / s;
    // Each invocation rescales the entries it wrote itself, so no barrier is needed.
    for (var j = lid; j < p.cols; j += WG) {
        probs[base + j] *= inv;
    }
    return vec2<f32>(m, s);
}

// Narrow rows: one invocation's whole row; returns its max and sum of exp(x - max) and leaves the
// probabilities written.
fn narrow_softmax(base: u32) -> vec2<f32> {
    var m = logits[base];
    for (var j = 1u; j < p.cols; j++) {
        m = max(m, logits[base + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        let e = exp(logits[base + j] - m);
        probs[base + j] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < p.cols; j++) {
        probs[base + j] *= inv;
    }
    return vec2<f32>(m, s);
}

// Narrow rows: sum_k (max - x[k]) over one invocation's row (label smoothing only).
fn narrow_gap_sum(base: u32, m: f32) -> f32 {
    var g = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        g += m - logits[base + j];
    }
    return g;
}

// Wide rows: sum_k (max - x[k]) over the workgroup's row (label smoothing only); every invocation
// gets it. Called under a uniform condition, so the barriers stay uniform.
fn wide_gap_sum(base: u32, lid: u32, m: f32) -> f32 {
    var g = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        g += m - logits[base + j];
    }
    return workgroup_reduce(lid, g, false);
}

// The row's loss from its max and sum (`ms`) and, with label smoothing, its `gap_sum` of
// max - x[k]. The label is clamped so the read stays in bounds even when it is invalid.
fn row_xent(r: u32, base: u32, ms: vec2<f32>, gap_sum: f32) {
    let label = labels[r];
    let target_logit = logits[base + min(label, p.cols - 1u)];
    var loss = log(ms.y) + ms.x - target_logit;
    if (p.smoothing != 0.0) {
        loss = (1.0 - p.smoothing) * loss + p.smoothing * (log(ms.y) + gap_sum / f32(p.cols));
    }
    row_loss[r] = select(p.invalid, loss * p.inv_rows, label < p.cols);
}

fn row_of_invocation(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wg, nwg) * WG + lid;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_of_invocation(wg, nwg, lid);
    if (r < p.rows) {
        narrow_softmax(r * p.cols);
    }
}

@compute @workgroup_size(WG)
fn wide(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wg, nwg);
    if (r < p.rows) { // uniform per workgroup, so the barriers stay uniform
        wide_softmax(r * p.cols, lid);
    }
}

@compute @workgroup_size(WG)
fn xent(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_of_invocation(wg, nwg, lid);
    if (r < p.rows) {
        let base = r * p.cols;
        let ms = narrow_softmax(base);
        var gap_sum = 0.0;
        if (p.smoothing != 0.0) {
            gap_sum = narrow_gap_sum(base, ms.x);
        }
        row_xent(r, base, ms, gap_sum);
    }
}

@compute @workgroup_size(WG)
fn xent_wide(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wg, nwg);
    if (r >= p.rows) {
        return; // uniform per workgroup, so the barriers stay uniform
    }
    let base = r * p.cols;
    let ms = wide_softmax(base, lid);
    var gap_sum = 0.0;
    if (p.smoothing != 0.0) {
        gap_sum = wide_gap_sum(base, lid, ms.x);
    }
    if (lid == 0u) {
        row_xent(r, base, ms, gap_sum);
    }
}
