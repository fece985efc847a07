// Moves every plane of an [n, c, h, w] tensor by (dx, dy) whole pixels, right and down for positive
// values; the pixels uncovered are zero: out[y][x] = in[y - dy][x - dx]. Test-time augmentation
// shifts the input with it, and its backward is the opposite shift (the adjoint of a shift with
// zero fill is the reverse shift with zero fill).

struct Params {
    n: u32, height: u32, width: u32, _p0: u32,
    dx: i32, dy: i32, _p1: u32, _p2: u32,
}

#include "lib/elementwise.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.n) {
            return;
        }
        let x = i32(i % p.width);
        let y = i32((i / p.width) % p.height);
        let sx = x - p.dx;
        let sy = y - p.dy;
        var v = 0.0;
        if (sx >= 0 && sx < i32(p.width) && sy >= 0 && sy < i32(p.height)) {
            // Same plane: the source is (dy, dx) pixels before i in row-major order.
            v = src[u32(i32(i) - p.dy * i32(p.width) - p.dx)];
        }
        dst[i] = v;
    }
}
