// Direct convolution for small reductions (K = c_in*kh*kw of a network's first layer: 9 for
// MNIST's 3x3), NCHW f32. For such a K, im2col + GEMM spends its time writing a col buffer nine
// times the input and then storing the output one scalar at a time. Here each invocation reads
// its taps straight from the input and computes 4 neighbouring outputs of one image's plane
// (flat index q*4 .. q*4+3, which may wrap a row) for CO output channels, storing each channel's
// 4 as one vec4:
//   out[img][co][oy][ox] = bias[co] + sum_{c,i,j} w[co][c][i][j] * x[img][c][oy*stride+i-pad_top][ox*stride+j-pad_left]
// (0 outside the input). Needs oh*ow to be a multiple of 4; the caller keeps im2col + GEMM
// otherwise. Workgroups: x/y over images * oh*ow/4 invocations, z over blocks of CO channels.

// conv2d.wgsl's Params (first_image, len and accumulate unused here).
struct Params {
    c_in: u32, h: u32, w: u32, kh: u32,
    kw: u32, stride: u32, pad_top: u32, pad_left: u32,
    oh: u32, ow: u32, images: u32, first_image: u32,
    len: u32, accumulate: u32, c_out: u32, has_bias: u32,
}

const WG: u32 = 64u;
// Output channels per invocation: the weights are the same for a whole workgroup (its z), so a
// larger CO amortises the input gathers over more multiply-adds.
const CO: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let quads = p.oh * p.ow / 4u;
    let id = (wg.x + wg.y * nwg.x) * WG + lid;
    if (id >= p.images * quads) {
        return;
    }
    let img = id / quads;
    let q = id - img * quads;
    let co0 = wg.z * CO;
    // Input coordinates of tap (0, 0) for each of the 4 outputs.
    var y0: vec4<i32>;
    var x0: vec4<i32>;
    for (var e = 0u; e < 4u; e++) {
        let pos = q * 4u + e;
        let oy = pos / p.ow;
        y0[e] = i32(oy * p.stride) - i32(p.pad_top);
        x0[e] = i32((pos - oy * p.ow) * p.stride) - i32(p.pad_left);
    }
    let k_len = p.c_in * p.kh * p.kw;
    // Rows of channels past c_out (the last block's) read the last channel's weights and are not stored.
    var w_row: array<u32, CO>;
    for (var o = 0u; o < CO; o++) {
        w_row[o] = min(co0 + o, p.c_out - 1u) * k_len;
    }
    var acc: array<vec4<f32>, CO>;
    var k = 0u;
    for (var c = 0u; c < p.c_in; c++) {
        let plane = (img * p.c_in + c) * p.h;
        for (var i = 0u; i < p.kh; i++) {
            let y = y0 + vec4<i32>(i32(i));
            let y_in = (y >= vec4<i32>(0)) & (y < vec4<i32>(i32(p.h)));
            for (var j = 0u; j < p.kw; j++) {
                let xx = x0 + vec4<i32>(i32(j));
                let inside = y_in & (xx >= vec4<i32>(0)) & (xx < vec4<i32>(i32(p.w)));
                var v = vec4<f32>(0.0);
                for (var e = 0u; e < 4u; e++) {
                    if (inside[e]) {
                        v[e] = x[(plane + u32(y[e])) * p.w + u32(xx[e])];
                    }
                }
                for (var o = 0u; o < CO; o++) {
                    acc[o] += wt[w_row[o] + k] * v;
                }
                k++;
            }
        }
    }
    for (var o = 0u; o < CO; o++) {
        let co = co0 + o;
        if (co < p.c_out) {
            var b = 0.0;
            if (p.has_bias != 0u) {
                b = bias[co];
            }
            out[(img * p.c_out + co) * quads + q] = acc[o] + vec4<f32>(b);
        }
    }
}
