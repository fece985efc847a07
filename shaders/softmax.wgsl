// Row-wise softmax of logits [rows, cols] for inference, stable: exp(x - max) / sum.
// One invocation per row (rows are short: class counts), so no workgroup barriers are needed.

struct Params {
    rows: u32, cols: u32, inv_rows: f32, invalid: f32, // the last two unused here
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * WG + lid;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.cols;
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
}
