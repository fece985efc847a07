// Convolution helpers around the GEMM (shaders/matmul.wgsl), NCHW f32:
//   im2col:    col[img][k][oy*ow+ox] = x[img][c][oy*stride+i-pad_top][ox*stride+j-pad_left] (0 outside),
//              k = (c*kh + i)*kw + j; each col row holds col_stride values (oh*ow rounded up to a
//              multiple of 4, the pad zero), so the vec4 GEMMs can read col when oh*ow is odd
//   col2im:    dx[img][c][y][x] = sum of the dcol entries im2col copied from (c, y, x): a gather, no
//              atomics (`col2im_s1` at stride 1)
//   sum_batch: out[e] (+)= sum_b part[b][e] (weight gradient from per-image partial products)
//   transpose_weight: wt[k][co] = w[co][k], rows padded with zeros to a multiple of 4 channels
//   transpose_grad: dt[img][q][co] = dout[img][co][q], likewise padded (the weight gradient's B operand)
//   direct, direct_rows: the forward itself for small reductions (see there)
//   direct_grad_weight: per-image weight gradients of small reductions, for sum_batch
//   direct_grad_input: the input gradient of small reductions at stride 1
// Every entry reads binding 1 and writes binding 2 (`direct`, `im2col` and `transpose_grad` as
// vec4s); the direct ones also read
// bindings 3 and 4. Images are counted from `first_image` in the NCHW tensor and from 0 in the col
// buffer, so a batch can be processed in chunks.

struct Params {
    c_in: u32, h: u32, w: u32, kh: u32,
    kw: u32, stride: u32, pad_top: u32, pad_left: u32,
    oh: u32, ow: u32, images: u32, first_image: u32,
    len: u32, accumulate: u32, c_out: u32, has_bias: u32,
    col_stride: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// One invocation per col row (img, k): the row's col_stride values, zero past oh*ow, stored as
// vec4s. Integer divisions cost tens of cycles per lane on lavapipe, so a row's are done once and
// the positions walked (one invocation per vec4 of a row, dividing each time, ran 3x slower; one
// per output row segment, storing scalars, 1.3x slower on the seed's conv2 and 2-3x on 7x7 planes).
@compute @workgroup_size(WG)
fn im2col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wg, nwg, lid);
    let kk = p.c_in * p.kh * p.kw;
    if (t >= p.images * kk) {
        return;
    }
    let k = t % kk;
    let img = t / kk;
    let j = k % p.kw;
    let i = (k / p.kw) % p.kh;
    let c = k / (p.kw * p.kh);
    let plane = ((p.first_image + img) * p.c_in + c) * p.h;
    let out = t * (p.col_stride / 4u);
    // Input coordinates of the next position, walked along the rows of the output plane.
    var oy = 0u;
    var y = i32(i) - i32(p.pad_top);
    var x = i32(j) - i32(p.pad_left);
    var ox = 0u;
    for (var q = 0u; q < p.col_stride / 4u; q++) {
        var v = vec4<f32>(0.0);
        for (var lane = 0u; lane < 4u; lane++) {
            if (oy < p.oh && y >= 0 && y < i32(p.h) && x >= 0 && x < i32(p.w)) {
                v[lane] = src[(plane + u32(y)) * p.w + u32(x)];
            }
            ox += 1u;
            x += i32(p.stride);
            if (ox == p.ow) {
                ox = 0u;
                oy += 1u;
                x = i32(j) - i32(p.pad_left);
                y += i32(p.stride);
            }
        }
        out4[out + q] = v;
    }
}

// First and one-past-last output position whose window covers input position `pos` (padded
// coordinates: pos + pad), along one axis with kernel size `k`.
fn covering(pos: u32, pad: u32, k: u32, out_len: u32) -> vec2<u32> {
    let q = pos + pad;
    var lo = 0u;
    if (q + 1u > k) {
        lo = (q + 1u - k + p.stride - 1u) / p.stride;
    }
    let hi = min(q / p.stride + 1u, out_len);
    return vec2<u32>(lo, max(lo, hi));
}

// The range for padded position `q` from the range for `q - 1`: windows start `stride` apart,
// so each bound moves by at most one, and the walk along a row needs no (slow, per-lane)
// integer division.
fn advance(r: vec2<u32>, q: u32, k: u32, out_len: u32) -> vec2<u32> {
    var lo = r.x;
    var hi = r.y;
    if (hi < out_len && hi * p.stride <= q) {
        hi += 1u;
    }
    if (lo < hi && lo * p.stride + k <= q) {
        lo += 1u;
    }
    return vec2<u32>(lo, hi);
}

// One invocation per input row (img, c, y); every input pixel gathers the dcol entries it fed.
@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wg, nwg, lid);
    if (row >= p.images * p.c_in * p.h) {
        return;
    }
    let y = row % p.h;
    let c = (row / p.h) % p.c_in;
    let img = row / (p.h * p.c_in);
    let kk = p.c_in * p.kh * p.kw;
    let plane = p.col_stride;
    let ys = covering(y, p.pad_top, p.kh, p.oh);
    let out = ((p.first_image + img) * p.c_in + c) * p.h * p.w + y * p.w;
    var xs = covering(0u, p.pad_left, p.kw, p.ow);
    for (var x = 0u; x < p.w; x++) {
        if (x > 0u) {
            xs = advance(xs, x + p.pad_left, p.kw, p.ow);
        }
        var acc = 0.0;
        for (var oy = ys.x; oy < ys.y; oy++) {
            let i = y + p.pad_top - oy * p.stride;
            let krow = (img * kk + (c * p.kh + i) * p.kw) * plane + oy * p.ow;
            for (var ox = xs.x; ox < xs.y; ox++) {
                let j = x + p.pad_left - ox * p.stride;
                acc += src[krow + j * plane + ox];
            }
        }
        dst[out + x] = acc;
    }
}

// `col2im` at stride 1, specialised to the kernel size (DKH, DKW, as in `direct_rows`): the
// dcol entry of tap (i, j) for input (y, x) is at output (y + pad_top - i, x + pad_left - j), so
// each invocation walks its input row four values at a time, the taps unrolled, with no search
// for the covering windows (1.3x `col2im` on the seed's conv2, 1.4-1.5x on 14x14 planes).
@compute @workgroup_size(WG)
fn col2im_s1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wg, nwg, lid);
    if (row >= p.images * p.c_in * p.h) {
        return;
    }
    let y = row % p.h;
    let c = (row / p.h) % p.c_in;
    let img = row / (p.h * p.c_in);
    let kk = p.c_in * DKH * DKW;
    let out = ((p.first_image + img) * p.c_in + c) * p.h * p.w + y * p.w;
    for (var x0 = 0u; x0 < p.w; x0 += 4u) {
        var acc = vec4<f32>(0.0);
        for (var i = 0u; i < DKH; i++) {
            let oy = i32(y + p.pad_top) - i32(i);
            if (oy >= 0 && oy < i32(p.oh)) {
                for (var j = 0u; j < DKW; j++) {
                    let krow = (img * kk + (c * DKH + i) * DKW + j) * p.col_stride + u32(oy) * p.ow;
                    for (var e = 0u; e < 4u; e++) {
                        let ox = i32(x0 + e + p.pad_left) - i32(j);
                        if (ox >= 0 && ox < i32(p.ow)) {
                            acc[e] += src[krow + u32(ox)];
                        }
                    }
                }
            }
        }
        for (var e = 0u; e < 4u; e++) {
            if (x0 + e < p.w) {
                dst[out + x0 + e] = acc[e];
            }
        }
    }
}

// One invocation per output element; `images` partial results of `len` elements each.
@compute @workgroup_size(WG)
fn sum_batch(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wg, nwg, lid);
    if (e >= p.len) {
        return;
    }
    var acc = 0.0;
    if (p.accumulate != 0u) {
        acc = dst[e];
    }
    for (var b = 0u; b < p.images; b++) {
        acc += src[b * p.len + e];
    }
    dst[e] = acc;
}

// Direct convolution for small reductions (K = c_in*kh*kw of a network's first layer: 9 for
// MNIST's 3x3), NCHW f32. For such a K, im2col + GEMM spends its time writing a col buffer nine
// times the input and then storing the output one scalar at a time. Here each invocation reads
// its taps straight from the input and computes 4 neighbouring outputs of one image's plane
// (flat index q*4 .. q*4+3, which may wrap a row) for CO output channels, storing each channel's
// 4 as one vec4:
//   out[img][co][oy][ox] = bias[co] + sum_{c,i,j} w[co][c][i][j] * x[img][c][oy*stride+i-pad_top][ox*stride+j-pad_left]
// (0 outside the input). Needs oh*ow to be a multiple of 4; the caller keeps im2col + GEMM
// otherwise. Workgroups: x/y over images * oh*ow/4 invocations, z over blocks of CO channels.

// Output channels per invocation: the weights are the same for a whole workgroup (its z), so a
// larger CO amortises the input gathers over more multiply-adds.
const CO: u32 = 8u;

// `direct` reads the input from `src` (binding 1) and writes these (no entry point uses both a
// binding's declarations).
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> wt: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

@compute @workgroup_size(WG)
fn direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let quads = p.oh * p.ow / 4u;
    let id = linear_id(wg, nwg, lid);
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
                        v[e] = src[(plane + u32(y[e])) * p.w + u32(xx[e])];
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
            out4[(img * p.c_out + co) * quads + q] = acc[o] + vec4<f32>(b);
        }
    }
}

// The direct convolution by row segments: each invocation computes XW neighbouring outputs of
// FY neighbouring output rows for CO channels. The kernel's size and stride are specialised into
// the shader (the launcher rewrites DKH, DKW, DS, XW and FY), so every loop over taps and outputs
// unrolls: each input row's window of WIN values is loaded once (clamped, zero outside) and feeds
// all DKW taps of all XW outputs of every output row it reaches, instead of one gather per tap
// and output as in `direct`. Any plane size: outputs past the row's end or below the plane are
// computed on clamped inputs and not stored.
const DKH: u32 = 3u;
const DKW: u32 = 3u;
const DS: u32 = 1u;
const XW: u32 = 8u;
const FY: u32 = 1u;
const WIN: u32 = (XW - 1u) * DS + DKW;
// Input rows a block of FY output rows reads.
const FROWS: u32 = (FY - 1u) * DS + DKH;

// The WIN values of row `y` (counted from the top, so it may be outside) of the h x w plane of
// `src` starting at row `plane`, from column `x_first` on; zero outside the plane.
fn row_window(plane: u32, y: i32, x_first: i32, h: u32, w: u32) -> array<f32, WIN> {
    let y_in = y >= 0 && y < i32(h);
    let row = (plane + u32(clamp(y, 0, i32(h) - 1))) * w;
    var win: array<f32, WIN>;
    for (var q = 0u; q < WIN; q++) {
        let xx = x_first + i32(q);
        let inside = y_in && xx >= 0 && xx < i32(w);
        win[q] = select(0.0, src[row + u32(clamp(xx, 0, i32(w) - 1))], inside);
    }
    return win;
}

// The input window of `row_window` for the input plane starting at row `plane`.
fn input_window(plane: u32, y: i32, x_first: i32) -> array<f32, WIN> {
    return row_window(plane, y, x_first, p.h, p.w);
}

// The block of `rows` rows of XW neighbouring values of an h x w plane that invocation `id` of a
// row kernel computes: segments along a row first, then blocks down the plane, then images.
struct RowBlock {
    img: u32,
    y0: u32,
    x0: u32,
    // False past the last block (the grid rounds up to whole workgroups).
    inside: bool,
}

fn row_block(id: u32, h: u32, w: u32, rows: u32) -> RowBlock {
    let segs = (w + XW - 1u) / XW;
    let blocks = (h + rows - 1u) / rows;
    let block_id = id / segs;
    return RowBlock(p.first_image + block_id / blocks, (block_id % blocks) * rows, (id % segs) * XW, id < p.images * blocks * segs);
}

@compute @workgroup_size(WG)
fn direct_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let block = row_block(linear_id(wg, nwg, lid), p.oh, p.ow, FY);
    if (!block.inside) {
        return;
    }
    let img = block.img;
    let oy0 = block.y0;
    let ox0 = block.x0;
    let co0 = wg.z * CO;
    let x_first = i32(ox0 * DS) - i32(p.pad_left);
    let k_len = p.c_in * DKH * DKW;
    // Rows of channels past c_out (the last block's) read the last channel's weights and are not stored.
    var w_row: array<u32, CO>;
    for (var o = 0u; o < CO; o++) {
        w_row[o] = min(co0 + o, p.c_out - 1u) * k_len;
    }
    var acc: array<f32, FY * CO * XW>;
    for (var e = 0u; e < FY * CO * XW; e++) {
        acc[e] = 0.0;
    }
    for (var c = 0u; c < p.c_in; c++) {
        let plane = (img * p.c_in + c) * p.h;
        for (var r = 0u; r < FROWS; r++) {
            let win = input_window(plane, i32(oy0 * DS + r) - i32(p.pad_top), x_first);
            // Input row r reaches output row oy0 + fy through tap row i = r - fy * DS.
            for (var fy = 0u; fy < FY; fy++) {
                let i = i32(r) - i32(fy * DS);
                if (i >= 0 && i < i32(DKH)) {
                    let k0 = (c * DKH + u32(i)) * DKW;
                    for (var j = 0u; j < DKW; j++) {
                        for (var o = 0u; o < CO; o++) {
                            let wv = wt[w_row[o] + k0 + j];
                            for (var x = 0u; x < XW; x++) {
                                let e = (fy * CO + o) * XW + x;
                                acc[e] = fma(wv, win[x * DS + j], acc[e]);
                            }
                        }
                    }
                }
            }
        }
    }
    let plane_len = p.oh * p.ow;
    for (var o = 0u; o < CO; o++) {
        let co = co0 + o;
        if (co < p.c_out) {
            var b = 0.0;
            if (p.has_bias != 0u) {
                b = bias[co];
            }
            for (var fy = 0u; fy < FY; fy++) {
                let oy = oy0 + fy;
                if (oy < p.oh) {
                    let base = (img * p.c_out + co) * plane_len + oy * p.ow + ox0;
                    for (var x = 0u; x < XW; x++) {
                        if (ox0 + x < p.ow) {
                            dst[base + x] = acc[(fy * CO + o) * XW + x] + b;
                        }
                    }
                }
            }
        }
    }
}

// The weight gradient of a small reduction, directly: each invocation sums, over one image's
// output plane, dout[co][oy][ox] * x[c][oy*stride+i-pad_top][ox*stride+j-pad_left] for CO output
// channels and every tap, walking the plane in the row segments of `direct_rows` (each input
// row's window loaded once for all taps). It writes the image's partial [c_out][c_in][kh][kw] to
// `dst` at [img]; `sum_batch` adds the images' partials. Lanes are images, so they run the same
// loops in step. For K = 9 this replaces im2col (a col nine times the input) and a GEMM whose
// 9-row operand fills few lanes.
@group(0) @binding(3) var<storage, read> dy: array<f32>;

@compute @workgroup_size(WG)
fn direct_grad_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = linear_id(wg, nwg, lid);
    if (id >= p.images) {
        return;
    }
    let img = p.first_image + id;
    let co0 = wg.z * CO;
    let plane_len = p.oh * p.ow;
    let segs = (p.ow + XW - 1u) / XW;
    // Channels past c_out (the last block's) read the last channel's gradient and are not stored.
    var dy_plane: array<u32, CO>;
    for (var o = 0u; o < CO; o++) {
        dy_plane[o] = (img * p.c_out + min(co0 + o, p.c_out - 1u)) * plane_len;
    }
    for (var c = 0u; c < p.c_in; c++) {
        let plane = (img * p.c_in + c) * p.h;
        var acc: array<f32, CO * DKH * DKW>;
        for (var e = 0u; e < CO * DKH * DKW; e++) {
            acc[e] = 0.0;
        }
        for (var oy = 0u; oy < p.oh; oy++) {
            for (var s = 0u; s < segs; s++) {
                let ox0 = s * XW;
                // The segment's output gradient, zero past the row's end.
                var g: array<f32, CO * XW>;
                for (var o = 0u; o < CO; o++) {
                    for (var x = 0u; x < XW; x++) {
                        let ox = ox0 + x;
                        g[o * XW + x] = select(0.0, dy[dy_plane[o] + oy * p.ow + min(ox, p.ow - 1u)], ox < p.ow);
                    }
                }
                let x_first = i32(ox0 * DS) - i32(p.pad_left);
                for (var i = 0u; i < DKH; i++) {
                    let win = input_window(plane, i32(oy * DS + i) - i32(p.pad_top), x_first);
                    for (var j = 0u; j < DKW; j++) {
                        for (var o = 0u; o < CO; o++) {
                            var sum = 0.0;
                            for (var x = 0u; x < XW; x++) {
                                sum = fma(g[o * XW + x], win[x * DS + j], sum);
                            }
                            acc[(o * DKH + i) * DKW + j] += sum;
                        }
                    }
                }
            }
        }
        let taps = DKH * DKW;
        for (var o = 0u; o < CO; o++) {
            if (co0 + o < p.c_out) {
                let base = ((id * p.c_out + co0 + o) * p.c_in + c) * taps;
                for (var t = 0u; t < taps; t++) {
                    dst[base + t] = acc[o * taps + t];
                }
            }
        }
    }
}

// The input gradient of a small reduction at stride 1, directly (a full correlation with the
// flipped kernel): dx[c][y][x] = sum_{o,i,j} w[o][c][i][j] * dout[o][y+pad_top-i][x+pad_left-j],
// dout zero outside its plane. Each invocation computes RY rows of XW neighbouring dx values of
// one input channel (the workgroup's z, so the weights are the same across its lanes); each
// output-gradient row window it loads feeds the DKH rows it reaches. `src` is dout here.
const RY: u32 = 4u;

@compute @workgroup_size(WG)
fn direct_grad_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let block = row_block(linear_id(wg, nwg, lid), p.h, p.w, RY);
    if (!block.inside) {
        return;
    }
    let img = block.img;
    let y0 = block.y0;
    let x0 = block.x0;
    let c = wg.z;
    // dout column of window entry 0.
    let ox_first = i32(x0 + p.pad_left) - i32(DKW - 1u);
    var acc: array<f32, RY * XW>;
    for (var e = 0u; e < RY * XW; e++) {
        acc[e] = 0.0;
    }
    for (var o = 0u; o < p.c_out; o++) {
        let w_base = (o * p.c_in + c) * DKH * DKW;
        let plane = (img * p.c_out + o) * p.oh;
        for (var r = 0u; r < RY + DKH - 1u; r++) {
            let oy = i32(y0 + p.pad_top + r) - i32(DKH - 1u);
            // At stride 1 the window of XW + DKW - 1 values is WIN long.
            let win = row_window(plane, oy, ox_first, p.oh, p.ow);
            // dout row oy reaches dx row y0 + ry through tap row i = ry + DKH - 1 - r.
            for (var ry = 0u; ry < RY; ry++) {
                let i = i32(ry + DKH - 1u) - i32(r);
                if (i >= 0 && i < i32(DKH)) {
                    for (var j = 0u; j < DKW; j++) {
                        let wv = wt[w_base + u32(i) * DKW + j];
                        for (var x = 0u; x < XW; x++) {
                            acc[ry * XW + x] = fma(wv, win[x + DKW - 1u - j], acc[ry * XW + x]);
                        }
                    }
                }
            }
        }
    }
    for (var ry = 0u; ry < RY; ry++) {
        let y = y0 + ry;
        if (y < p.h) {
            let base = ((img * p.c_in + c) * p.h + y) * p.w + x0;
            for (var x = 0u; x < XW; x++) {
                if (x0 + x < p.w) {
                    dst[base + x] = acc[ry * XW + x];
                }
            }
        }
    }
}

// One invocation per element of the transposed weight (K rows of c_out rounded up to 4): the
// input gradient's A operand with its reduction axis (c_out) contiguous, so that a small K (a
// first layer's 9) gets a tile of exactly K rows instead of K rounded up to the vec4 loads along m.
@compute @workgroup_size(WG)
fn transpose_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wg, nwg, lid);
    let kk = p.c_in * p.kh * p.kw;
    let row = (p.c_out + 3u) / 4u * 4u;
    if (e >= kk * row) {
        return;
    }
    let k = e / row;
    let co = e - k * row;
    var v = 0.0;
    if (co < p.c_out) {
        v = src[co * kk + k];
    }
    dst[e] = v;
}

// The transposed output gradient of a chunk of images, dt[img][q][co] = dout[first_image + img][co][q]
// (q = oy*ow+ox; rows of c_out rounded up to 4, the pad zero): the weight gradient's B operand
// contiguous along c_out, so that its GEMM (col [K, p] times dt [p, c_out]) runs as A along k, B
// along n instead of both along k. One invocation per 4x4 block (4 positions, 4 channels),
// neighbouring invocations along the positions: the reads run along the input's rows and each
// row of the block is stored as one vec4 (one element per invocation read across rows 2.3 KB
// apart for the seed's conv2, and took a third as long as the GEMM).
@compute @workgroup_size(WG)
fn transpose_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wg, nwg, lid);
    let row = (p.c_out + 3u) / 4u * 4u;
    let plane = p.oh * p.ow;
    let q_blocks = (plane + 3u) / 4u;
    if (e >= p.images * (row / 4u) * q_blocks) {
        return;
    }
    let q0 = 4u * (e % q_blocks);
    let t = e / q_blocks;
    let c0 = 4u * (t % (row / 4u));
    let img = t / (row / 4u);
    var block: array<vec4<f32>, 4>;
    for (var cc = 0u; cc < 4u; cc++) {
        let c = c0 + cc;
        if (c >= p.c_out) {
            break;
        }
        let base = ((p.first_image + img) * p.c_out + c) * plane;
        for (var qq = 0u; qq < 4u; qq++) {
            if (q0 + qq < plane) {
                block[qq][cc] = src[base + q0 + qq];
            }
        }
    }
    for (var qq = 0u; qq < 4u; qq++) {
        if (q0 + qq < plane) {
            out4[((img * plane + q0 + qq) * row + c0) / 4u] = block[qq];
        }
    }
}
