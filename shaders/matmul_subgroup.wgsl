// The vec4 GEMMs of matmul_vec4.wgsl (`ak_bn`, `am_bn`, `ak_bk`: the operands' contiguous axes)
// for adapters whose subgroups have a fixed size of LANES invocations (a power of two, 4 to 128:
// lavapipe 8 (4 with LP_NATIVE_VECTOR_WIDTH=128), NVIDIA and Apple 32), one subgroup per workgroup.
// The subgroup's LANES invocations compute WG_Y x WG_X neighbouring TM x TN tiles and share their
// operands: each invocation loads a share of the A and B vec4s the subgroup needs and receives the
// rest by shuffles. On lavapipe every per-invocation load is a bounds-checked scalar sequence per
// lane while a shuffle is a register permute, so the loads drop from TM + TN per four steps of k
// to (WG_Y TM + WG_X TN) / 8 at 8 lanes. Each kernel has a `_c4` entry that stores C as vec4s.
//
// Who loads what: the LANES / WG_Y invocations of a tile row share its A vectors (rows of A for
// `ak_*`, vec4s along m for `am_bn`), those of a tile column its B vectors. With H invocations
// sharing E vectors, the first U = min(H, E) of them own vector e as `e % U` in slot `e / U`: with
// H <= E each owns E / H (H divides E), with H > E the other H - U own none (they load a copy of
// another's, which no shuffle reads). The slot depends on e alone, so the shuffles index the
// registers with constants; only the lane they read from depends on the invocation.

#include "lib/gemm_params.wgsl"

// LANES = WG_X * WG_Y invocations, one subgroup; TM a multiple of U_A (and of 4 for `am_bn`), TN a
// multiple of 4 and TN / 4 a multiple of U_B4 (`ak_bn`, `am_bn`) or TN of U_BK (`ak_bk`).
const LANES: u32 = 8u;
const TM: u32 = 8u;
const TN: u32 = 16u;
const WG_X: u32 = 2u;
const WG_Y: u32 = 4u;
const TN4: u32 = TN / 4u;
// (At least 1: `am_bn` needs TM a multiple of 4, the other kernels take any TM and compile it too.)
const TM4: u32 = max(TM / 4u, 1u);
// Invocations per tile row and per tile column.
const H_A: u32 = LANES / WG_Y;
const H_B: u32 = LANES / WG_X;
// Owners among them of a tile row's TM A rows (`ak_*`), of its TM / 4 A vec4s (`am_bn`), of a tile
// column's TN / 4 B vec4s (`ak_bn`, `am_bn`) and of its TN B columns (`ak_bk`), and the vectors each
// owner loads per step.
const U_A: u32 = min(H_A, TM);
const A_SLOTS: u32 = TM / U_A;
const U_A4: u32 = min(H_A, TM4);
const A4_SLOTS: u32 = TM4 / U_A4;
const U_B4: u32 = min(H_B, TN4);
const B4_SLOTS: u32 = TN4 / U_B4;
const U_BK: u32 = min(H_B, TN);
const B_SLOTS: u32 = TN / U_BK;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
// C as vec4s, for the `_c4` entry points: C contiguous along n, n and every other stride and
// offset of C multiples of 4 (the launcher checks), so each vec4 of a tile is inside or outside.
@group(0) @binding(4) var<storage, read_write> c4: array<vec4<f32>>;

#include "lib/gemm_store.wgsl"

// Stores a vec4 of C, elements (m, n .. n + 3), as `emit` does each.
fn emit4(first: u32, m: u32, n: u32, value: vec4<f32>) {
    if (m >= p.m || n >= p.n) {
        return;
    }
    var v = value;
    if ((p.flags & BIAS_N) != 0u) {
        v += vec4<f32>(bias[n], bias[n + 1u], bias[n + 2u], bias[n + 3u]);
    }
    if ((p.flags & BIAS_M) != 0u) {
        v += vec4<f32>(bias[m]);
    }
    let ci = (p.c_off + first * p.sc_b + m * p.sc_m + n) / 4u;
    if ((p.flags & ACCUMULATE) != 0u) {
        v += c4[ci];
    }
    c4[ci] = v;
}

// The block of C an invocation computes: its first row and column, and the batch it stores to.
struct Block {
    m0: u32,
    n0: u32,
    first: u32,
}

// The batches a workgroup sums over, [x, y): its own (z), or all of them with REDUCE_BATCH (C's
// batch 0).
fn batch_range(wg: vec3<u32>) -> vec2<u32> {
    if ((p.flags & REDUCE_BATCH) != 0u) {
        return vec2<u32>(0u, p.batch);
    }
    return vec2<u32>(wg.z, wg.z + 1u);
}

fn block_of(wg: vec3<u32>, lane: u32) -> Block {
    let first = select(wg.z, 0u, (p.flags & REDUCE_BATCH) != 0u);
    return Block(wg.y * WG_Y * TM + (lane / WG_X) * TM, wg.x * WG_X * TN + (lane % WG_X) * TN, first);
}

fn store(acc: array<vec4<f32>, TM * TN4>, wg: vec3<u32>, lane: u32) {
    let t = block_of(wg, lane);
    for (var i = 0u; i < TM; i++) {
        for (var jv = 0u; jv < TN4; jv++) {
            let v = acc[i * TN4 + jv];
            for (var q = 0u; q < 4u; q++) {
                emit(t.first, t.m0 + i, t.n0 + 4u * jv + q, v[q]);
            }
        }
    }
}

fn store4(acc: array<vec4<f32>, TM * TN4>, wg: vec3<u32>, lane: u32) {
    let t = block_of(wg, lane);
    for (var i = 0u; i < TM; i++) {
        for (var jv = 0u; jv < TN4; jv++) {
            emit4(t.first, t.m0 + i, t.n0 + 4u * jv, acc[i * TN4 + jv]);
        }
    }
}

@compute @workgroup_size(LANES)
fn ak_bn_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    store(ak_bn_tile(wg, lane), wg, lane);
}

@compute @workgroup_size(LANES)
fn ak_bn_sg_c4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    store4(ak_bn_tile(wg, lane), wg, lane);
}

@compute @workgroup_size(LANES)
fn ak_bk_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    store(ak_bk_tile(wg, lane), wg, lane);
}

@compute @workgroup_size(LANES)
fn ak_bk_sg_c4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    store4(ak_bk_tile(wg, lane), wg, lane);
}

@compute @workgroup_size(LANES)
fn am_bn_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    store(am_bn_tile(wg, lane), wg, lane);
}

@compute @workgroup_size(LANES)
fn am_bn_sg_c4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    store4(am_bn_tile(wg, lane), wg, lane);
}

fn update(acc: ptr<function, array<vec4<f32>, TM * TN4>>, av: ptr<function, array<vec4<f32>, TM>>, bv: ptr<function, array<vec4<f32>, TN4>>, kk: u32) {
    for (var i = 0u; i < TM; i++) {
        let s = vec4<f32>((*av)[i][kk]);
        for (var jv = 0u; jv < TN4; jv++) {
            (*acc)[i * TN4 + jv] = fma(s, (*bv)[jv], (*acc)[i * TN4 + jv]);
        }
    }
}

// This invocation's first A row of its tile row (`ak_*`): its tile row's, plus its place among
// the owners; the owner's rows are that plus multiples of U_A.
fn a_row0(lane: u32, m_block: u32) -> u32 {
    return m_block + (lane / H_A) * TM + (lane % H_A) % U_A;
}

fn ak_bn_tile(wg: vec3<u32>, lane: u32) -> array<vec4<f32>, TM * TN4> {
    let sx = lane % WG_X;
    let sy = lane / WG_X;
    let m_block = wg.y * WG_Y * TM;
    let n_block = wg.x * WG_X * TN;
    let batches = batch_range(wg);
    // Zero-initialised, as every function-scope variable.
    var acc: array<vec4<f32>, TM * TN4>;
    let sb = p.sb_k / 4u;
    let k4 = p.k / 4u;
    // The A rows and the B column groups this invocation loads for the subgroup.
    let a_row = a_row0(lane, m_block);
    let b_col = n_block + (lane / H_B) * TN + 4u * ((lane % H_B) % U_B4);
    for (var bi = batches.x; bi < batches.y; bi++) {
        var ai: array<u32, A_SLOTS>;
        for (var s = 0u; s < A_SLOTS; s++) {
            let row = min(a_row + s * U_A, p.m - 1u);
            ai[s] = (p.a_off + bi * p.sa_b + row * p.sa_m) / 4u;
        }
        var bj: array<u32, B4_SLOTS>;
        for (var s = 0u; s < B4_SLOTS; s++) {
            bj[s] = (p.b_off + bi * p.sb_b + min(b_col + 4u * s * U_B4, (p.n - 1u) & ~3u)) / 4u;
        }
        var a_own: array<vec4<f32>, A_SLOTS>;
        var b_own: array<vec4<f32>, 4u * B4_SLOTS>;
        var av: array<vec4<f32>, TM>;
        var bv: array<vec4<f32>, TN4>;
        for (var kq = 0u; kq < k4; kq++) {
            for (var s = 0u; s < A_SLOTS; s++) {
                a_own[s] = a[ai[s] + kq];
            }
            for (var kk = 0u; kk < 4u; kk++) {
                for (var s = 0u; s < B4_SLOTS; s++) {
                    b_own[kk * B4_SLOTS + s] = b[bj[s]];
                    bj[s] += sb;
                }
            }
            for (var i = 0u; i < TM; i++) {
                av[i] = subgroupShuffle(a_own[i / U_A], sy * H_A + i % U_A);
            }
            for (var kk = 0u; kk < 4u; kk++) {
                for (var jv = 0u; jv < TN4; jv++) {
                    bv[jv] = subgroupShuffle(b_own[kk * B4_SLOTS + jv / U_B4], sx * H_B + jv % U_B4);
                }
                update(&acc, &av, &bv, kk);
            }
        }
        // The k % 4 leftover: the lanes of A past k are loaded but not used.
        let rest = p.k % 4u;
        if (rest != 0u) {
            for (var s = 0u; s < A_SLOTS; s++) {
                a_own[s] = a[ai[s] + k4];
            }
            for (var i = 0u; i < TM; i++) {
                av[i] = subgroupShuffle(a_own[i / U_A], sy * H_A + i % U_A);
            }
            for (var kk = 0u; kk < rest; kk++) {
                for (var s = 0u; s < B4_SLOTS; s++) {
                    b_own[s] = b[bj[s]];
                    bj[s] += sb;
                }
                for (var jv = 0u; jv < TN4; jv++) {
                    bv[jv] = subgroupShuffle(b_own[jv / U_B4], sx * H_B + jv % U_B4);
                }
                update(&acc, &av, &bv, kk);
            }
        }
    }
    return acc;
}

// `ak_bk` (A row-major [m, k], B stored [n, k], both read as vec4s along k) the same way: per
// four steps of k, each invocation loads A_SLOTS A rows and B_SLOTS B columns of the block and
// receives its tile's TM rows and TN columns by shuffles; a step's four columns regroup into a
// vec4 along n for free (lavapipe keeps every component in its own register).
fn ak_bk_tile(wg: vec3<u32>, lane: u32) -> array<vec4<f32>, TM * TN4> {
    let sx = lane % WG_X;
    let sy = lane / WG_X;
    let m_block = wg.y * WG_Y * TM;
    let n_block = wg.x * WG_X * TN;
    let batches = batch_range(wg);
    var acc: array<vec4<f32>, TM * TN4>;
    let passes = p.k / 4u + select(0u, 1u, p.k % 4u != 0u);
    let a_row = a_row0(lane, m_block);
    let b_col = n_block + (lane / H_B) * TN + (lane % H_B) % U_BK;
    for (var bi = batches.x; bi < batches.y; bi++) {
        var ai: array<u32, A_SLOTS>;
        for (var s = 0u; s < A_SLOTS; s++) {
            let row = min(a_row + s * U_A, p.m - 1u);
            ai[s] = (p.a_off + bi * p.sa_b + row * p.sa_m) / 4u;
        }
        var bj: array<u32, B_SLOTS>;
        for (var s = 0u; s < B_SLOTS; s++) {
            let col = min(b_col + s * U_BK, p.n - 1u);
            bj[s] = (p.b_off + bi * p.sb_b + col * p.sb_n) / 4u;
        }
        var a_own: array<vec4<f32>, A_SLOTS>;
        var b_own: array<vec4<f32>, B_SLOTS>;
        var av: array<vec4<f32>, TM>;
        var bc: array<vec4<f32>, TN>;
        var bv: array<vec4<f32>, TN4>;
        for (var kq = 0u; kq < passes; kq++) {
            // Lanes past k hold the next row's values or padding (maybe NaN): zero in both.
            let keep = vec4<u32>(0u, 1u, 2u, 3u) + 4u * kq < vec4<u32>(p.k);
            for (var s = 0u; s < A_SLOTS; s++) {
                a_own[s] = select(vec4<f32>(0.0), a[ai[s] + kq], keep);
            }
            for (var s = 0u; s < B_SLOTS; s++) {
                b_own[s] = select(vec4<f32>(0.0), b[bj[s] + kq], keep);
            }
            for (var i = 0u; i < TM; i++) {
                av[i] = subgroupShuffle(a_own[i / U_A], sy * H_A + i % U_A);
            }
            for (var j = 0u; j < TN; j++) {
                bc[j] = subgroupShuffle(b_own[j / U_BK], sx * H_B + j % U_BK);
            }
            for (var kk = 0u; kk < 4u; kk++) {
                for (var jv = 0u; jv < TN4; jv++) {
                    bv[jv] = vec4<f32>(bc[4u * jv][kk], bc[4u * jv + 1u][kk], bc[4u * jv + 2u][kk], bc[4u * jv + 3u][kk]);
                }
                update(&acc, &av, &bv, kk);
            }
        }
    }
    return acc;
}

// `am_bn` (A stored [k, m], B row-major [k, n], both read as vec4s along m and n) the same way:
// per step of k the subgroup needs WG_Y TM / 4 vec4s of A and WG_X TN / 4 of B (at 8 lanes with
// the default tilings, one of each per invocation).
fn am_update(acc: ptr<function, array<vec4<f32>, TM * TN4>>, av: ptr<function, array<vec4<f32>, TM4>>, bv: ptr<function, array<vec4<f32>, TN4>>) {
    for (var iv = 0u; iv < TM4; iv++) {
        for (var q = 0u; q < 4u; q++) {
            let s = vec4<f32>((*av)[iv][q]);
            for (var jv = 0u; jv < TN4; jv++) {
                (*acc)[(4u * iv + q) * TN4 + jv] = fma(s, (*bv)[jv], (*acc)[(4u * iv + q) * TN4 + jv]);
            }
        }
    }
}

fn am_bn_tile(wg: vec3<u32>, lane: u32) -> array<vec4<f32>, TM * TN4> {
    let sx = lane % WG_X;
    let sy = lane / WG_X;
    let m_block = wg.y * WG_Y * TM;
    let n_block = wg.x * WG_X * TN;
    let batches = batch_range(wg);
    // Zero-initialised, as every function-scope variable.
    var acc: array<vec4<f32>, TM * TN4>;
    let sa = p.sa_k / 4u;
    let sb = p.sb_k / 4u;
    let a_m = m_block + (lane / H_A) * TM + 4u * ((lane % H_A) % U_A4);
    let b_n = n_block + (lane / H_B) * TN + 4u * ((lane % H_B) % U_B4);
    for (var bi = batches.x; bi < batches.y; bi++) {
        var ai: array<u32, A4_SLOTS>;
        for (var s = 0u; s < A4_SLOTS; s++) {
            ai[s] = (p.a_off + bi * p.sa_b + min(a_m + 4u * s * U_A4, (p.m - 1u) & ~3u)) / 4u;
        }
        var bj: array<u32, B4_SLOTS>;
        for (var s = 0u; s < B4_SLOTS; s++) {
            bj[s] = (p.b_off + bi * p.sb_b + min(b_n + 4u * s * U_B4, (p.n - 1u) & ~3u)) / 4u;
        }
        var a_own: array<vec4<f32>, A4_SLOTS>;
        var b_own: array<vec4<f32>, B4_SLOTS>;
        var av: array<vec4<f32>, TM4>;
        var bv: array<vec4<f32>, TN4>;
        for (var kk = 0u; kk < p.k; kk++) {
            for (var s = 0u; s < A4_SLOTS; s++) {
                a_own[s] = a[ai[s]];
                ai[s] += sa;
            }
            for (var s = 0u; s < B4_SLOTS; s++) {
                b_own[s] = b[bj[s]];
                bj[s] += sb;
            }
            for (var iv = 0u; iv < TM4; iv++) {
                av[iv] = subgroupShuffle(a_own[iv / U_A4], sy * H_A + iv % U_A4);
            }
            for (var jv = 0u; jv < TN4; jv++) {
                bv[jv] = subgroupShuffle(b_own[jv / U_B4], sx * H_B + jv % U_B4);
            }
            am_update(&acc, &av, &bv);
        }
    }
    return acc;
}
