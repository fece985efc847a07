// Max pooling backward: dx[y][x] = sum of dout over the windows covering (y, x) whose saved
// argmax is (y, x). Overlapping windows (stride < kernel): `gather`, per input row, sums without
// atomics or races. Disjoint windows (stride >= kernel): `scatter`, per output row, writes each
// window once (3.5x faster on lavapipe: 2 loads per window instead of 2 per pixel); pixels no
// window covers must be zeroed beforehand.

#include "lib/grid.wgsl"

struct Params {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, kernel: u32, stride: u32, _p0: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> argmax: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

// Output positions [lo, hi) whose window covers input position `pos` along one axis.
fn covering(pos: u32, out_len: u32) -> vec2<u32> {
    var lo = 0u;
    if (pos + 1u > p.kernel) {
        lo = (pos + 1u - p.kernel + p.stride - 1u) / p.stride;
    }
    let hi = min(pos / p.stride + 1u, out_len);
    return vec2<u32>(lo, max(lo, hi));
}

// The range for `pos` from the range for `pos - 1`: windows start `stride` apart, so each bound
// moves by at most one, and the walk along a row needs no (slow, per-lane) integer division.
fn advance(r: vec2<u32>, pos: u32, out_len: u32) -> vec2<u32> {
    var lo = r.x;
    var hi = r.y;
    if (hi < out_len && hi * p.stride <= pos) {
        hi += 1u;
    }
    if (lo < hi && lo * p.stride + p.kernel <= pos) {
        lo += 1u;
    }
    return vec2<u32>(lo, hi);
}

// One invocation per input row (plane, y).
@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_index(wg, nwg) * WG + lid;
    if (row >= p.planes * p.h) {
        return;
    }
    let y = row % p.h;
    let plane = row / p.h;
    let ys = covering(y, p.oh);
    var xs = covering(0u, p.ow);
    for (var x = 0u; x < p.w; x++) {
        if (x > 0u) {
            xs = advance(xs, x, p.ow);
        }
        let me = y * p.w + x;
        var acc = 0.0;
        for (var oy = ys.x; oy < ys.y; oy++) {
            let r = (plane * p.oh + oy) * p.ow;
            for (var ox = xs.x; ox < xs.y; ox++) {
                if (argmax[r + ox] == me) {
                    acc += dout[r + ox];
                }
            }
        }
        dx[row * p.w + x] = acc;
    }
}

// One invocation per output row (plane, oy); windows must not overlap.
@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_index(wg, nwg) * WG + lid;
    if (row >= p.planes * p.oh) {
        return;
    }
    let oy = row % p.oh;
    let base = (row / p.oh) * p.h * p.w;
    for (var ox = 0u; ox < p.ow; ox++) {
        let o = row * p.ow + ox;
        let at = argmax[o];
        let d = dout[o];
        for (var i = 0u; i < p.kernel; i++) {
            let r = (oy * p.stride + i) * p.w + ox * p.stride;
            for (var j = 0u; j < p.kernel; j++) {
                dx[base + r + j] = select(0.0, d, r + j == at);
            }
        }
    }
}
