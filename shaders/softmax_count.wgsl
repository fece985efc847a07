// Accuracy and loss bookkeeping on the device: acc[0] += number of rows of logits [rows, cols]
// whose argmax (first maximum) equals the label; when with_loss, acc[1] += sum of the rows'
// cross-entropy losses. One workgroup: each invocation takes every WG-th row, then the partial
// sums are combined in workgroup memory (this runs once per batch, so its speed hardly matters).
// A label >= cols never counts as correct and makes the loss sum NaN.

struct Params {
    rows: u32, cols: u32, with_loss: u32, invalid: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> acc: array<f32>;

var<workgroup> partial: array<vec2<f32>, WG>;
#include "lib/workgroup_sum.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    var correct = 0.0;
    var loss = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        let base = r * p.cols;
        var m = logits[base];
        var arg = 0u;
        for (var j = 1u; j < p.cols; j++) {
            let v = logits[base + j];
            if (v > m) {
                m = v;
                arg = j;
            }
        }
        let label = labels[r];
        if (arg == label) {
            correct += 1.0;
        }
        if (p.with_loss != 0u) {
            var s = 0.0;
            for (var j = 0u; j < p.cols; j++) {
                s += exp(logits[base + j] - m);
            }
            let target_logit = logits[base + min(label, p.cols - 1u)];
            loss += select(p.invalid, log(s) + m - target_logit, label < p.cols);
        }
    }
    partial[lid] = vec2<f32>(correct, loss);
    sum_partials(lid);
    if (lid == 0u) {
        acc[0] += partial[0].x;
        if (p.with_loss != 0u) {
            acc[1] += partial[0].y;
        }
    }
}
