// Max pooling backward: dx[y][x] = sum of dout over the windows covering (y, x) whose saved
// argmax is (y, x). A gather per input row, so overlapping windows (stride < kernel) are summed
// without atomics or races.

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

// One invocation per input row (plane, y).
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = (wg.x + wg.y * nwg.x) * WG + lid;
    if (row >= p.planes * p.h) {
        return;
    }
    let y = row % p.h;
    let plane = row / p.h;
    let ys = covering(y, p.oh);
    for (var x = 0u; x < p.w; x++) {
        let xs = covering(x, p.ow);
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
