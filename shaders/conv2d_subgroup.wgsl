// Forward and gradients of a convolution with a small reduction (a first layer: K = c_in*kh*kw of
// 9 for MNIST's 3x3), for adapters whose subgroups have a fixed size of LANES invocations (a power
// of two, 4 to 128: lavapipe has 8 on AVX2, 4 with LP_NATIVE_VECTOR_WIDTH=128), one subgroup per
// workgroup:
//   forward:     out[img][co][q] = bias[co] + sum_k w[co][k] * col[img][k][q]
//   grad_weight: part[x][co][k] = sum over images img = x mod nwg.x, sum_q dy[img][co][q] * col[img][k][q]
//                (partials for conv2d.wgsl's sum_batch)
//   grad_col:    dcol[img][k][q] = sum_co w[co][k] * dy[img][co][q]   (the input gradient's col, for
//                conv2d.wgsl's col2im; every output channel in one workgroup: c_out <= LANES*CPL)
//   grad_rowsum, col2im_rowsum: the input gradient at stride 1 through dcol's row sums (below)
// with col as conv2d.wgsl's im2col defines it, though forward and grad_weight never store it: they
// gather its values from x.
// Workgroups: x over the chunk's images (grad_weight: at most the launcher's count of partials),
// y over blocks of LANES*CPL output channels. Lane l owns the channels block*LANES*CPL + LANES*i + l
// (i < CPL); the subgroup walks an image's plane 4 positions at a time. A step's 4K col values are
// gathered once across the subgroup (4K/LANES per lane, rounded up) and shuffled to every lane, and each lane loads
// or stores only its own channels' vec4s; a lane's weights (forward) or sums (grad_weight) stay in
// registers for a whole plane. With a K this short, the GEMM's 32x32 blocks paid a fifth of a
// per-lane load or store for every multiply-add, and writing col cost a third of the forward.
// Needs oh*ow to be a multiple of 4 and K <= 32.
// A lane is its subgroup_invocation_id, the index the shuffles address (WGSL does not promise that
// local_invocation_index equals it, even with the workgroup one subgroup).

struct Params {
    c_in: u32, h: u32, w: u32, kh: u32,
    kw: u32, stride: u32, pad_top: u32, pad_left: u32,
    oh: u32, ow: u32, images: u32, first_image: u32,
    len: u32, accumulate: u32, c_out: u32, has_bias: u32,
    col_stride: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

// The subgroup size, the reduction c_in*kh*kw and the channels per lane (all specialised by the
// launcher).
const LANES: u32 = 8u;
const KK: u32 = 9u;
const CPL: u32 = 4u;
// grad_col: the rows of dcol each lane stores per step.
const KL: u32 = (KK + LANES - 1u) / LANES;

@group(0) @binding(0) var<uniform> p: Params;
// forward and grad_weight: the input x.
@group(0) @binding(1) var<storage, read> src: array<f32>;
// grad_col: the output gradient, dcol (out4) and the weight.
@group(0) @binding(1) var<storage, read> dy_in: array<vec4<f32>>;
// forward: out, weight ([c_out, K]), bias.
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> wt: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// grad_weight: partials ([images, c_out, K]), output gradient.
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@group(0) @binding(3) var<storage, read> dy4: array<vec4<f32>>;

// Output channel `i` of this lane; past c_out for the last block's spare lanes.
fn channel(block: u32, i: u32, lane: u32) -> u32 {
    return (block * CPL + i) * LANES + lane;
}

// Taps per gather slot (one per 4 lanes), and gather slots per lane: a step's 4K col values over
// LANES lanes.
const TPS: u32 = LANES / 4u;
const GS: u32 = (KK + TPS - 1u) / TPS;

// Value t = 4k + e of a step (tap k of position 4q + e) is gathered by lane t % LANES into its
// slot t / LANES: lane l gathers taps l/4 + TPS*i of position 4q + l%4.
struct Gather {
    row: array<u32, GS>,
    dy: array<i32, GS>,
    dx: array<i32, GS>,
    oy: u32,
    ox: u32,
}

fn gather_start(img: u32, lane: u32) -> Gather {
    var gt: Gather;
    for (var i = 0u; i < GS; i++) {
        // Past K (the upper lanes of the last slot when TPS does not divide K): a repeat of the
        // last tap, never shuffled out.
        let k = min(lane / 4u + TPS * i, KK - 1u);
        let c = k / (p.kh * p.kw);
        gt.row[i] = ((p.first_image + img) * p.c_in + c) * p.h;
        gt.dy[i] = i32((k / p.kw) % p.kh) - i32(p.pad_top);
        gt.dx[i] = i32(k % p.kw) - i32(p.pad_left);
    }
    let e = lane % 4u;
    gt.oy = e / p.ow;
    gt.ox = e % p.ow;
    return gt;
}

// This lane's slots of the current step, the walker then moved on by 4 positions.
fn gather_step(gt: ptr<function, Gather>) -> array<f32, GS> {
    var s: array<f32, GS>;
    let y0 = i32((*gt).oy * p.stride);
    let x0 = i32((*gt).ox * p.stride);
    for (var i = 0u; i < GS; i++) {
        let y = y0 + (*gt).dy[i];
        let x = x0 + (*gt).dx[i];
        let inside = y >= 0 && y < i32(p.h) && x >= 0 && x < i32(p.w);
        let at = select(0u, ((*gt).row[i] + u32(y)) * p.w + u32(x), inside);
        s[i] = select(0.0, src[at], inside);
    }
    (*gt).ox += 4u;
    while ((*gt).ox >= p.ow) {
        (*gt).ox -= p.ow;
        (*gt).oy += 1u;
    }
    return s;
}

// The col vec4 of tap k for the step's 4 positions, from the lanes that gathered it.
fn col_vec(s: array<f32, GS>, k: u32) -> vec4<f32> {
    let v = s[k / TPS];
    let l = 4u * (k % TPS);
    return vec4<f32>(subgroupShuffle(v, l), subgroupShuffle(v, l + 1u), subgroupShuffle(v, l + 2u), subgroupShuffle(v, l + 3u));
}

@compute @workgroup_size(LANES)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let img = wg.x;
    let q4 = p.col_stride / 4u;
    var w: array<f32, CPL * KK>;
    var b: array<f32, CPL>;
    var plane: array<u32, CPL>;
    for (var i = 0u; i < CPL; i++) {
        let co = min(channel(wg.y, i, lane), p.c_out - 1u);
        for (var k = 0u; k < KK; k++) {
            w[i * KK + k] = wt[co * KK + k];
        }
        b[i] = select(0.0, bias[co], p.has_bias != 0u);
        plane[i] = ((p.first_image + img) * p.c_out + co) * q4;
    }
    var gt = gather_start(img, lane);
    for (var q = 0u; q < q4; q++) {
        let s = gather_step(&gt);
        var o: array<vec4<f32>, CPL>;
        for (var i = 0u; i < CPL; i++) {
            o[i] = vec4<f32>(b[i]);
        }
        for (var k = 0u; k < KK; k++) {
            let v = col_vec(s, k);
            for (var i = 0u; i < CPL; i++) {
                o[i] += w[i * KK + k] * v;
            }
        }
        for (var i = 0u; i < CPL; i++) {
            if (channel(wg.y, i, lane) < p.c_out) {
                out4[plane[i] + q] = o[i];
            }
        }
    }
}

@compute @workgroup_size(LANES)
fn grad_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let q4 = p.col_stride / 4u;
    var acc: array<f32, CPL * KK>;
    for (var e = 0u; e < CPL * KK; e++) {
        acc[e] = 0.0;
    }
    for (var img = wg.x; img < p.images; img += nwg.x) {
        var plane: array<u32, CPL>;
        for (var i = 0u; i < CPL; i++) {
            plane[i] = ((p.first_image + img) * p.c_out + min(channel(wg.y, i, lane), p.c_out - 1u)) * q4;
        }
        var gt = gather_start(img, lane);
        for (var q = 0u; q < q4; q++) {
            let s = gather_step(&gt);
            var g: array<vec4<f32>, CPL>;
            for (var i = 0u; i < CPL; i++) {
                g[i] = dy4[plane[i] + q];
            }
            for (var k = 0u; k < KK; k++) {
                let v = col_vec(s, k);
                for (var i = 0u; i < CPL; i++) {
                    acc[i * KK + k] += dot(g[i], v);
                }
            }
        }
    }
    for (var i = 0u; i < CPL; i++) {
        let co = channel(wg.y, i, lane);
        if (co < p.c_out) {
            for (var k = 0u; k < KK; k++) {
                part[(wg.x * p.c_out + co) * KK + k] = acc[i * KK + k];
            }
        }
    }
}

// This lane's weights and output gradient planes for dcol, every output channel being in the
// one workgroup. Passed by pointer: by value, the arrays left the registers (5x slower).
struct DcolLane {
    w: array<f32, CPL * KK>,
    plane: array<u32, CPL>,
}

fn dcol_lane(img: u32, lane: u32, q4: u32) -> DcolLane {
    var d: DcolLane;
    for (var i = 0u; i < CPL; i++) {
        let co = channel(0u, i, lane);
        // Spare lanes read the last channel's gradient, with a weight of 0.
        let valid = co < p.c_out;
        let cc = min(co, p.c_out - 1u);
        for (var k = 0u; k < KK; k++) {
            d.w[i * KK + k] = select(0.0, wt[cc * KK + k], valid);
        }
        d.plane[i] = ((p.first_image + img) * p.c_out + cc) * q4;
    }
    return d;
}

// Rows l, l+LANES, ... (l this lane) of dcol at positions 4q .. 4q+3: each lane sums its own
// channels' products for all K rows, and the subgroup adds those up by shuffles.
fn dcol_rows(d: ptr<function, DcolLane>, q: u32, lane: u32) -> array<vec4<f32>, KL> {
    var g: array<vec4<f32>, CPL>;
    for (var i = 0u; i < CPL; i++) {
        g[i] = dy_in[(*d).plane[i] + q];
    }
    // This lane's sums, rows past K zero.
    var s: array<vec4<f32>, KL * LANES>;
    for (var k = 0u; k < KL * LANES; k++) {
        s[k] = vec4<f32>(0.0);
    }
    for (var k = 0u; k < KK; k++) {
        var t = (*d).w[k] * g[0];
        for (var i = 1u; i < CPL; i++) {
            t += (*d).w[i * KK + k] * g[i];
        }
        s[k] = t;
    }
    var rows: array<vec4<f32>, KL>;
    for (var r = 0u; r < KL; r++) {
        let base = r * LANES;
        if (KK - base == 1u) {
            // A last row alone (K = 9 at 8 lanes): a butterfly gives every lane its total.
            rows[r] = butterfly(s[base]);
        } else {
            var v: array<vec4<f32>, LANES>;
            for (var j = 0u; j < LANES; j++) {
                v[j] = s[base + j];
            }
            rows[r] = reduce_scatter(&v, lane);
        }
    }
    return rows;
}

// Lane l stores dcol's rows l, l+LANES, ... (`dcol_rows`).
@compute @workgroup_size(LANES)
fn grad_col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let img = wg.x;
    let q4 = p.col_stride / 4u;
    var d = dcol_lane(img, lane, q4);
    for (var q = 0u; q < q4; q++) {
        let rows = dcol_rows(&d, q, lane);
        for (var r = 0u; r < KL; r++) {
            let row = r * LANES + lane;
            if (row < KK) {
                out4[(img * KK + row) * q4 + q] = rows[r];
            }
        }
    }
}

// The subgroup's total of row `lane` of LANES rows: halving the rows at each of log2(LANES)
// shuffle rounds (LANES - 1 shuffles, where a butterfly of each row takes LANES*log2(LANES); 7
// against 24 at 8 lanes). Round one keeps the half of the rows on this lane's side of
// lane ^ LANES/2 and adds the partner's copy of them, and so on; the rows shrink in place.
// The rounds are written out, each under a condition on LANES, so that every loop's count and
// every shuffle's lane offset is a constant: the compiler unrolls them and keeps the rows in
// registers (a shuffle by a lane offset known only at run time is a loop over the lanes on
// lavapipe).
fn reduce_scatter(v: ptr<function, array<vec4<f32>, LANES>>, lane: u32) -> vec4<f32> {
    if (LANES >= 128u) {
        reduce_round(v, 64u, lane);
    }
    if (LANES >= 64u) {
        reduce_round(v, 32u, lane);
    }
    if (LANES >= 32u) {
        reduce_round(v, 16u, lane);
    }
    if (LANES >= 16u) {
        reduce_round(v, 8u, lane);
    }
    if (LANES >= 8u) {
        reduce_round(v, 4u, lane);
    }
    reduce_round(v, 2u, lane);
    reduce_round(v, 1u, lane);
    return (*v)[0];
}

// One round of `reduce_scatter`: rows j < h keep this lane's side of lane ^ h, plus the partner's.
fn reduce_round(v: ptr<function, array<vec4<f32>, LANES>>, h: u32, lane: u32) {
    let hi = (lane & h) != 0u;
    for (var j = 0u; j < h; j++) {
        let a = (*v)[j];
        let b = (*v)[j + h];
        (*v)[j] = select(a, b, hi) + subgroupShuffleXor(select(b, a, hi), h);
    }
}

// Every lane's total of v over the subgroup, by a butterfly (written out as `reduce_scatter`).
fn butterfly(x: vec4<f32>) -> vec4<f32> {
    var v = x + subgroupShuffleXor(x, 1u);
    v += subgroupShuffleXor(v, 2u);
    if (LANES >= 8u) {
        v += subgroupShuffleXor(v, 4u);
    }
    if (LANES >= 16u) {
        v += subgroupShuffleXor(v, 8u);
    }
    if (LANES >= 32u) {
        v += subgroupShuffleXor(v, 16u);
    }
    if (LANES >= 64u) {
        v += subgroupShuffleXor(v, 32u);
    }
    if (LANES >= 128u) {
        v += subgroupShuffleXor(v, 64u);
    }
    return v;
}

// The input gradient at stride 1 in two passes that move a third of dcol's values: `grad_rowsum`
// sums dcol's taps along each kernel row as the subgroup walks the output rows,
//   srow[img][g][oy][x] = sum_j dcol[img][g*kw + j][oy*ow + x + pad_left - j]   (g = c*kh + i),
// and `col2im_rowsum` adds those rows up along the kernel's height:
//   dx[img][c][y][x] = sum_i srow[img][c*kh + i][y + pad_top - i][x].
// Lane g of the subgroup takes group g (needs c_in*kh <= LANES) and keeps a window of the next RW
// (kw, specialised) columns in registers: one store per position and group, where grad_col stores
// all kw*kh*c_in taps and col2im reads them back one by one.
const RW: u32 = 3u;
@group(0) @binding(1) var<storage, read> srow4: array<vec4<f32>>;

@compute @workgroup_size(LANES)
fn grad_rowsum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let img = wg.x;
    let q4 = p.col_stride / 4u;
    var d = dcol_lane(img, lane, q4);
    let groups = p.c_in * p.kh;
    var win: array<f32, RW>;
    for (var m = 0u; m < RW; m++) {
        win[m] = 0.0;
    }
    var oy = 0u;
    var ox = 0u;
    for (var q = 0u; q < q4; q++) {
        let vr = dcol_rows(&d, q, lane);
        // Lane g (< c_in*kh) takes its group's RW rows k = g*RW + j from the lanes holding them:
        // one broadcast per row from a lane known at compile time (a shuffle from a lane computed
        // at run time is a loop over the lanes on lavapipe).
        var t: array<vec4<f32>, RW>;
        for (var j = 0u; j < RW; j++) {
            t[j] = vec4<f32>(0.0);
        }
        for (var k = 0u; k < KK; k++) {
            let v = subgroupShuffle(vr[k / LANES], k % LANES);
            t[k % RW] = select(t[k % RW], v, lane == k / RW);
        }
        // The step's 4 positions in order: each adds its taps into the window of the next RW
        // columns; the window's first column is then complete, and the row's last flushes it all.
        for (var e = 0u; e < 4u; e++) {
            for (var m = 0u; m < RW; m++) {
                win[m] += t[m][e];
            }
            let row = ((img * groups + min(lane, groups - 1u)) * p.oh + oy) * p.w;
            let x = i32(ox) - i32(p.pad_left);
            if (lane < groups && x >= 0 && x < i32(p.w)) {
                part[row + u32(x)] = win[0];
            }
            for (var m = 0u; m + 1u < RW; m++) {
                win[m] = win[m + 1u];
            }
            win[RW - 1u] = 0.0;
            if (ox + 1u == p.ow) {
                for (var m = 0u; m + 1u < RW; m++) {
                    let xm = x + 1 + i32(m);
                    if (lane < groups && xm >= 0 && xm < i32(p.w)) {
                        part[row + u32(xm)] = win[m];
                    }
                    win[m] = 0.0;
                }
                ox = 0u;
                oy += 1u;
            } else {
                ox += 1u;
            }
        }
    }
}

// One invocation per input row (img, c, y), walking its vec4s (w a multiple of 4); the row's
// divisions and its RH (kh, specialised) source rows are worked out once, not per vec4.
const RH: u32 = 3u;

@compute @workgroup_size(64)
fn col2im_rowsum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (r >= p.images * p.c_in * p.h) {
        return;
    }
    let w4 = p.w / 4u;
    let y = r % p.h;
    let c = (r / p.h) % p.c_in;
    let img = r / (p.h * p.c_in);
    // Each kernel row's source row of srow, or none (past the output plane's edge).
    var src: array<u32, RH>;
    var live: array<bool, RH>;
    for (var i = 0u; i < RH; i++) {
        let oy = i32(y + p.pad_top) - i32(i);
        live[i] = oy >= 0 && oy < i32(p.oh);
        src[i] = (((img * p.c_in + c) * RH + i) * p.oh + u32(max(oy, 0))) * w4;
    }
    let out = ((p.first_image + img) * p.c_in * p.h + r - img * p.c_in * p.h) * w4;
    for (var x4 = 0u; x4 < w4; x4++) {
        var acc = vec4<f32>(0.0);
        for (var i = 0u; i < RH; i++) {
            if (live[i]) {
                acc += srow4[src[i] + x4];
            }
        }
        out4[out + x4] = acc;
    }
}
