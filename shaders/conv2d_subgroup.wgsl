// Forward and weight gradient of a convolution with a small reduction (a first layer: K =
// c_in*kh*kw of 9 for MNIST's 3x3) from its col (shaders/conv2d.wgsl's im2col), for adapters whose
// subgroups have 8 invocations (lavapipe on AVX2), one subgroup per workgroup:
//   forward:     out[img][co][q] = bias[co] + sum_k w[co][k] * col[img][k][q]
//   grad_col:    dcol[img][k][q] = sum_co w[co][k] * dy[img][co][q]   (the input gradient's col, for
//                conv2d.wgsl's col2im; every output channel in one block: c_out <= 8*CPL)
//   grad_weight: part[x][co][k] = sum over images img = x mod nwg.x, sum_q dy[img][co][q] * col[img][k][q]
//                (partials for conv2d.wgsl's sum_batch)
// Workgroups: x over the chunk's images (grad_weight: at most the launcher's count of partials),
// y over blocks of 8*CPL output channels. Lane l owns the
// channels block*8*CPL + 8*i + l (i < CPL); the subgroup walks an image's plane 4 positions at a
// time. The col vec4s of a step are loaded once across the subgroup (lane l loads rows l, l+8, ...)
// and shuffled to every lane, and each lane loads or stores only its own channels' vec4s. With a
// K this short, every multiply-add of the GEMM's 32x32 blocks came with a fifth of a per-lane load
// or store; here a lane's weights (forward) or sums (gradient) stay in registers for a whole plane.
// Needs oh*ow to be a multiple of 4 (col rows are then exactly oh*ow long) and K <= 32.

struct Params {
    c_in: u32, h: u32, w: u32, kh: u32,
    kw: u32, stride: u32, pad_top: u32, pad_left: u32,
    oh: u32, ow: u32, images: u32, first_image: u32,
    len: u32, accumulate: u32, c_out: u32, has_bias: u32,
    col_stride: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

// The reduction c_in*kh*kw and the channels per lane (both specialised by the launcher).
const KK: u32 = 9u;
const CPL: u32 = 4u;
// col rows each lane loads per step.
const KL: u32 = (KK + 7u) / 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> col: array<vec4<f32>>;
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
    return (block * CPL + i) * 8u + lane;
}

// This lane's col rows of an image, as vec4 offsets (rows past K repeat the last: loaded, unused).
fn col_rows(img: u32, lane: u32, q4: u32) -> array<u32, KL> {
    var rows: array<u32, KL>;
    for (var r = 0u; r < KL; r++) {
        rows[r] = (img * KK + min(r * 8u + lane, KK - 1u)) * q4;
    }
    return rows;
}

@compute @workgroup_size(8)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
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
    let rows = col_rows(img, lane, q4);
    for (var q = 0u; q < q4; q++) {
        var own: array<vec4<f32>, KL>;
        for (var r = 0u; r < KL; r++) {
            own[r] = col[rows[r] + q];
        }
        var o: array<vec4<f32>, CPL>;
        for (var i = 0u; i < CPL; i++) {
            o[i] = vec4<f32>(b[i]);
        }
        for (var k = 0u; k < KK; k++) {
            let v = subgroupShuffle(own[k / 8u], k % 8u);
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

// Each lane sums its own channels' products for all K rows, the subgroup adds those up by
// shuffles, so that lane l holds the totals of rows l, l+8, ..., and stores them.
@compute @workgroup_size(8)
fn grad_col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let img = wg.x;
    let q4 = p.col_stride / 4u;
    var w: array<f32, CPL * KK>;
    var plane: array<u32, CPL>;
    for (var i = 0u; i < CPL; i++) {
        let co = channel(0u, i, lane);
        // Spare lanes read the last channel's gradient, with a weight of 0.
        let valid = co < p.c_out;
        let cc = min(co, p.c_out - 1u);
        for (var k = 0u; k < KK; k++) {
            w[i * KK + k] = select(0.0, wt[cc * KK + k], valid);
        }
        plane[i] = ((p.first_image + img) * p.c_out + cc) * q4;
    }
    for (var q = 0u; q < q4; q++) {
        var g: array<vec4<f32>, CPL>;
        for (var i = 0u; i < CPL; i++) {
            g[i] = dy_in[plane[i] + q];
        }
        // This lane's sums, rows past K zero.
        var d: array<vec4<f32>, KL * 8u>;
        for (var k = 0u; k < KL * 8u; k++) {
            d[k] = vec4<f32>(0.0);
        }
        for (var k = 0u; k < KK; k++) {
            var s = w[k] * g[0];
            for (var i = 1u; i < CPL; i++) {
                s += w[i * KK + k] * g[i];
            }
            d[k] = s;
        }
        for (var r = 0u; r < KL; r++) {
            let base = r * 8u;
            var v: vec4<f32>;
            if (KK - base == 1u) {
                // A last row alone (K = 9): a butterfly gives every lane its total.
                v = d[base];
                v += subgroupShuffleXor(v, 1u);
                v += subgroupShuffleXor(v, 2u);
                v += subgroupShuffleXor(v, 4u);
            } else {
                v = reduce_scatter(d[base], d[base + 1u], d[base + 2u], d[base + 3u], d[base + 4u], d[base + 5u], d[base + 6u], d[base + 7u], lane);
            }
            let row = base + lane;
            if (row < KK) {
                out4[(img * KK + row) * q4 + q] = v;
            }
        }
    }
}

// The subgroup's total of row `lane` of eight rows: halving the rows at each of three shuffle
// rounds (7 shuffles, where a butterfly of each row takes 24). Round one keeps the half of the
// rows on this lane's side of lane ^ 4 and adds the partner's copy of them, and so on.
fn reduce_scatter(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>, lane: u32) -> vec4<f32> {
    let h4 = (lane & 4u) != 0u;
    let a0 = select(v0, v4, h4) + subgroupShuffleXor(select(v4, v0, h4), 4u);
    let a1 = select(v1, v5, h4) + subgroupShuffleXor(select(v5, v1, h4), 4u);
    let a2 = select(v2, v6, h4) + subgroupShuffleXor(select(v6, v2, h4), 4u);
    let a3 = select(v3, v7, h4) + subgroupShuffleXor(select(v7, v3, h4), 4u);
    let h2 = (lane & 2u) != 0u;
    let b0 = select(a0, a2, h2) + subgroupShuffleXor(select(a2, a0, h2), 2u);
    let b1 = select(a1, a3, h2) + subgroupShuffleXor(select(a3, a1, h2), 2u);
    let h1 = (lane & 1u) != 0u;
    return select(b0, b1, h1) + subgroupShuffleXor(select(b1, b0, h1), 1u);
}

@compute @workgroup_size(8)
fn grad_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let q4 = p.col_stride / 4u;
    var acc: array<f32, CPL * KK>;
    for (var e = 0u; e < CPL * KK; e++) {
        acc[e] = 0.0;
    }
    // Workgroup x sums images x, x + nwg.x, ...: fewer partials for sum_batch to add.
    for (var img = wg.x; img < p.images; img += nwg.x) {
        var plane: array<u32, CPL>;
        for (var i = 0u; i < CPL; i++) {
            plane[i] = ((p.first_image + img) * p.c_out + min(channel(wg.y, i, lane), p.c_out - 1u)) * q4;
        }
        let rows = col_rows(img, lane, q4);
        for (var q = 0u; q < q4; q++) {
            var own: array<vec4<f32>, KL>;
            for (var r = 0u; r < KL; r++) {
                own[r] = col[rows[r] + q];
            }
            var g: array<vec4<f32>, CPL>;
            for (var i = 0u; i < CPL; i++) {
                g[i] = dy4[plane[i] + q];
            }
            for (var k = 0u; k < KK; k++) {
                let v = subgroupShuffle(own[k / 8u], k % 8u);
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
