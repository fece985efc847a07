// Softmax cross-entropy backward, element-wise over [rows, cols]:
// dlogits = (probs - q) * dloss / rows, with the target q = (1 - smoothing) onehot(label) +
// smoothing / cols (plain cross-entropy at smoothing 0: q = onehot exactly). A label >= cols has no
// one-hot term.

struct Params {
    rows: u32, cols: u32, inv_rows: f32, invalid: f32, smoothing: f32, _p0: u32, _p1: u32, _p2: u32, // invalid unused here
}

#include "lib/elementwise.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> dloss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    let g = dloss[0] * p.inv_rows;
    let spread = p.smoothing / f32(p.cols);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.rows * p.cols) {
            return;
        }
        let r = i / p.cols;
        let target_share = select(0.0, 1.0 - p.smoothing, labels[r] == i - r * p.cols) + spread;
        dlogits[i] = (probs[i] - target_share) * g;
    }
}
