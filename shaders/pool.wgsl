// Average pooling (valid windows of kernel x kernel, step stride) and global average pooling,
// NCHW f32, forward and backward. Every entry reads binding 1 and writes binding 2. Backward
// passes gather where windows overlap (stride < kernel): each input pixel sums the output
// gradients of the windows covering it, with no atomics; disjoint windows are written once per
// output instead (faster; pixels no window covers must be zeroed beforehand).

#include "lib/grid.wgsl"

struct Params {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, kernel: u32, stride: u32, _p0: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wg, nwg) * WG + lid;
}

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

// One invocation per output row (plane, oy).
@compute @workgroup_size(WG)
fn avg_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wg, nwg, lid);
    if (row >= p.planes * p.oh) {
        return;
    }
    let oy = row % p.oh;
    let plane = row / p.oh;
    let scale = 1.0 / f32(p.kernel * p.kernel);
    let top = (plane * p.h + oy * p.stride) * p.w;
    for (var ox = 0u; ox < p.ow; ox++) {
        var acc = 0.0;
        for (var i = 0u; i < p.kernel; i++) {
            let r = top + i * p.w + ox * p.stride;
            for (var j = 0u; j < p.kernel; j++) {
                acc += src[r + j];
            }
        }
        dst[row * p.ow + ox] = acc * scale;
    }
}

// One invocation per input row (plane, y).
@compute @workgroup_size(WG)
fn avg_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wg, nwg, lid);
    if (row >= p.planes * p.h) {
        return;
    }
    let y = row % p.h;
    let plane = row / p.h;
    let scale = 1.0 / f32(p.kernel * p.kernel);
    let ys = covering(y, p.oh);
    var xs = covering(0u, p.ow);
    for (var x = 0u; x < p.w; x++) {
        if (x > 0u) {
            xs = advance(xs, x, p.ow);
        }
        var acc = 0.0;
        for (var oy = ys.x; oy < ys.y; oy++) {
            let r = (plane * p.oh + oy) * p.ow;
            for (var ox = xs.x; ox < xs.y; ox++) {
                acc += src[r + ox];
            }
        }
        dst[row * p.w + x] = acc * scale;
    }
}

// One invocation per output row (plane, oy); windows must not overlap.
@compute @workgroup_size(WG)
fn avg_backward_scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wg, nwg, lid);
    if (row >= p.planes * p.oh) {
        return;
    }
    let oy = row % p.oh;
    let top = ((row / p.oh) * p.h + oy * p.stride) * p.w;
    let scale = 1.0 / f32(p.kernel * p.kernel);
    for (var ox = 0u; ox < p.ow; ox++) {
        let d = src[row * p.ow + ox] * scale;
        for (var i = 0u; i < p.kernel; i++) {
            let r = top + i * p.w + ox * p.stride;
            for (var j = 0u; j < p.kernel; j++) {
                dst[r + j] = d;
            }
        }
    }
}

// One invocation per plane.
@compute @workgroup_size(WG)
fn global_avg_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let plane = linear_id(wg, nwg, lid);
    if (plane >= p.planes) {
        return;
    }
    let len = p.h * p.w;
    var acc = 0.0;
    for (var i = 0u; i < len; i++) {
        acc += src[plane * len + i];
    }
    dst[plane] = acc / f32(len);
}

// One invocation per input element.
@compute @workgroup_size(WG)
fn global_avg_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wg, nwg, lid);
    let len = p.h * p.w;
    if (e >= p.planes * len) {
        return;
    }
    dst[e] = src[e / len] / f32(len);
}
