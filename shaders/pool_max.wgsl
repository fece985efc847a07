// Max pooling forward (valid windows of kernel x kernel, step stride), NCHW f32. Saves, per
// output, the index within its input plane (y * w + x) of the first maximum in row-major order,
// for the backward pass (shaders/pool_max_backward.wgsl).

#include "lib/grid.wgsl"

struct Params {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, kernel: u32, stride: u32, _p0: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

// One invocation per output row (plane, oy).
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_index(wg, nwg) * WG + lid;
    if (row >= p.planes * p.oh) {
        return;
    }
    let oy = row % p.oh;
    let plane = row / p.oh;
    let base = plane * p.h * p.w;
    for (var ox = 0u; ox < p.ow; ox++) {
        var best_at = oy * p.stride * p.w + ox * p.stride;
        var best = x[base + best_at];
        for (var i = 0u; i < p.kernel; i++) {
            let r = (oy * p.stride + i) * p.w + ox * p.stride;
            for (var j = 0u; j < p.kernel; j++) {
                let v = x[base + r + j];
                if (v > best) {
                    best = v;
                    best_at = r + j;
                }
            }
        }
        out[row * p.ow + ox] = best;
        argmax[row * p.ow + ox] = best_at;
    }
}
