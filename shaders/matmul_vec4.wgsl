// Strided, batched matrix multiply with vec4 loads: C[b] = A[b] * B[b] (+ bias) (+ C[b]), for
// operands stored contiguously along one of their axes. One entry point per pair of contiguous
// axes (`ak_bn`: A along k, B along n, and so on; A along m with B along k runs `ak_bn` on the
// transposed product); `matmul.wgsl` serves every other layout. The launcher guarantees: the
// contiguous stride is 1, every other stride and offset in use is a multiple of 4 (so vec4 indices
// are exact), and TM (TN) is a multiple of 4 where the tile holds vec4s along m (n). Buffers are
// padded to 16 bytes, so the vec4 holding a row's last element is in bounds.
//
// Each invocation keeps a TM x TN block of C in registers. On lavapipe (invocations are SIMD
// lanes) every per-invocation load is a bounds-checked scalar load per lane, so the cost is in the
// loads: a large tile and vec4 loads (one index and one check per four values) are what pay.
// Loops over the tile must stay small enough for the shader compiler to unroll them, which keeps
// the tile in registers (too large a tile falls off a cliff). Rows and columns past the edge are
// clamped when loading and masked when storing, so the inner loops have no branches.

#include "lib/gemm_params.wgsl"

const TM: u32 = 8u;
const TN: u32 = 8u;
// vec4 groups per tile row / column (never 0, so every entry point compiles for any tiling).
const TM4: u32 = max(TM / 4u, 1u);
const TN4: u32 = max(TN / 4u, 1u);
override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// The block of C one invocation computes and the batches it sums over.
struct Tile {
    m0: u32,
    n0: u32,
    first: u32,
    last: u32,
}

fn tile_of(gid: vec3<u32>) -> Tile {
    if ((p.flags & REDUCE_BATCH) != 0u) {
        return Tile(gid.y * TM, gid.x * TN, 0u, p.batch);
    }
    return Tile(gid.y * TM, gid.x * TN, gid.z, gid.z + 1u);
}

#include "lib/gemm_store.wgsl"

// vec4 index of A(row, 0) / B(0, col), with the row / column clamped into the matrix.
fn a_row(bi: u32, i: u32) -> u32 {
    return (p.a_off + bi * p.sa_b + min(i, p.m - 1u) * p.sa_m) / 4u;
}
fn b_col(bi: u32, j: u32) -> u32 {
    return (p.b_off + bi * p.sb_b + min(j, p.n - 1u) * p.sb_n) / 4u;
}
// vec4 index of A(i..i+4, 0) / B(0, j..j+4) for an operand contiguous along m / n; the last group
// may run past the edge (into padding), which only feeds rows / columns that are never stored.
fn a_rows4(bi: u32, i: u32) -> u32 {
    return (p.a_off + bi * p.sa_b + min(i, (p.m - 1u) & ~3u)) / 4u;
}
fn b_cols4(bi: u32, j: u32) -> u32 {
    return (p.b_off + bi * p.sb_b + min(j, (p.n - 1u) & ~3u)) / 4u;
}

// A row-major [m, k], B row-major [k, n]: A as vec4 along k, B as vec4 along n.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn ak_bn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = tile_of(gid);
    if (t.m0 >= p.m || t.n0 >= p.n) {
        return;
    }
    var acc: array<vec4<f32>, TM * TN4>;
    for (var e = 0u; e < TM * TN4; e++) {
        acc[e] = vec4<f32>(0.0);
    }
    let sb = p.sb_k / 4u;
    let k4 = p.k / 4u;
    for (var bi = t.first; bi < t.last; bi++) {
        var ai: array<u32, TM>;
        for (var i = 0u; i < TM; i++) {
            ai[i] = a_row(bi, t.m0 + i);
        }
        var bj: array<u32, TN4>;
        for (var jv = 0u; jv < TN4; jv++) {
            bj[jv] = b_cols4(bi, t.n0 + 4u * jv);
        }
        var av: array<vec4<f32>, TM>;
        var bv: array<vec4<f32>, TN4>;
        for (var kq = 0u; kq < k4; kq++) {
            for (var i = 0u; i < TM; i++) {
                av[i] = a[ai[i] + kq];
            }
            for (var kk = 0u; kk < 4u; kk++) {
                for (var jv = 0u; jv < TN4; jv++) {
                    bv[jv] = b[bj[jv]];
                    bj[jv] += sb;
                }
                ak_bn_update(&acc, &av, &bv, kk);
            }
        }
        // The k % 4 leftover: the lanes of A past k are loaded but not used.
        if (p.k % 4u != 0u) {
            for (var i = 0u; i < TM; i++) {
                av[i] = a[ai[i] + k4];
            }
            for (var kk = 0u; kk < p.k % 4u; kk++) {
                for (var jv = 0u; jv < TN4; jv++) {
                    bv[jv] = b[bj[jv]];
                    bj[jv] += sb;
                }
                ak_bn_update(&acc, &av, &bv, kk);
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        for (var jv = 0u; jv < TN4; jv++) {
            let v = acc[i * TN4 + jv];
            for (var q = 0u; q < 4u; q++) {
                emit(t.first, t.m0 + i, t.n0 + 4u * jv + q, v[q]);
            }
        }
    }
}

// Step `kk` of four: acc[i][jv] += A(i, kk) * B(kk, 4 jv .. 4 jv + 3).
fn ak_bn_update(
    acc: ptr<function, array<vec4<f32>, TM * TN4>>,
    av: ptr<function, array<vec4<f32>, TM>>,
    bv: ptr<function, array<vec4<f32>, TN4>>,
    kk: u32,
) {
    for (var i = 0u; i < TM; i++) {
        let s = vec4<f32>((*av)[i][kk]);
        for (var jv = 0u; jv < TN4; jv++) {
            (*acc)[i * TN4 + jv] = fma(s, (*bv)[jv], (*acc)[i * TN4 + jv]);
        }
    }
}

// A stored [k, m] (contiguous along m), B row-major [k, n]: an outer product of vec4s per k.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn am_bn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = tile_of(gid);
    if (t.m0 >= p.m || t.n0 >= p.n) {
        return;
    }
    var acc: array<vec4<f32>, TM * TN4>;
    for (var e = 0u; e < TM * TN4; e++) {
        acc[e] = vec4<f32>(0.0);
    }
    let sa = p.sa_k / 4u;
    let sb = p.sb_k / 4u;
    for (var bi = t.first; bi < t.last; bi++) {
        var ai: array<u32, TM4>;
        for (var iv = 0u; iv < TM4; iv++) {
            ai[iv] = a_rows4(bi, t.m0 + 4u * iv);
        }
        var bj: array<u32, TN4>;
        for (var jv = 0u; jv < TN4; jv++) {
            bj[jv] = b_cols4(bi, t.n0 + 4u * jv);
        }
        var av: array<vec4<f32>, TM4>;
        var bv: array<vec4<f32>, TN4>;
        for (var kk = 0u; kk < p.k; kk++) {
            for (var iv = 0u; iv < TM4; iv++) {
                av[iv] = a[ai[iv]];
                ai[iv] += sa;
            }
            for (var jv = 0u; jv < TN4; jv++) {
                bv[jv] = b[bj[jv]];
                bj[jv] += sb;
            }
            am_bn_update(&acc, &av, &bv);
        }
    }
    for (var i = 0u; i < TM; i++) {
        for (var jv = 0u; jv < TN4; jv++) {
            let v = acc[i * TN4 + jv];
            for (var q = 0u; q < 4u; q++) {
                emit(t.first, t.m0 + i, t.n0 + 4u * jv + q, v[q]);
            }
        }
    }
}

// One step of k: acc[i][jv] += A(i, k) * B(k, 4 jv .. 4 jv + 3), with A(i, k) = av[i / 4][i % 4].
fn am_bn_update(acc: ptr<function, array<vec4<f32>, TM * TN4>>, av: ptr<function, array<vec4<f32>, TM4>>, bv: ptr<function, array<vec4<f32>, TN4>>) {
    for (var iv = 0u; iv < TM4; iv++) {
        for (var q = 0u; q < 4u; q++) {
            let s = vec4<f32>((*av)[iv][q]);
            for (var jv = 0u; jv < TN4; jv++) {
                (*acc)[(4u * iv + q) * TN4 + jv] = fma(s, (*bv)[jv], (*acc)[(4u * iv + q) * TN4 + jv]);
            }
        }
    }
}

// A row-major [m, k], B stored [n, k] (contiguous along k): per four steps of k, TM vec4s of A and
// TN vec4s of B along k; each step is an outer product of one component of each (picking a
// component and regrouping four columns into a vec4 along n costs nothing: lavapipe keeps every
// component in its own register).
@compute @workgroup_size(WG_X, WG_Y, 1)
fn ak_bk(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = tile_of(gid);
    if (t.m0 >= p.m || t.n0 >= p.n) {
        return;
    }
    var acc: array<vec4<f32>, TM * TN4>;
    for (var e = 0u; e < TM * TN4; e++) {
        acc[e] = vec4<f32>(0.0);
    }
    let k4 = p.k / 4u;
    for (var bi = t.first; bi < t.last; bi++) {
        var ai: array<u32, TM>;
        for (var i = 0u; i < TM; i++) {
            ai[i] = a_row(bi, t.m0 + i);
        }
        var bj: array<u32, TN>;
        for (var j = 0u; j < TN; j++) {
            bj[j] = b_col(bi, t.n0 + j);
        }
        var av: array<vec4<f32>, TM>;
        var bv: array<vec4<f32>, TN>;
        // One more pass than k / 4 when k % 4 != 0: the leftover, with lanes past k set to zero
        // (they hold the next row's values or padding, maybe NaN).
        let passes = k4 + select(0u, 1u, p.k % 4u != 0u);
        for (var kq = 0u; kq < passes; kq++) {
            let keep = vec4<u32>(0u, 1u, 2u, 3u) + 4u * kq < vec4<u32>(p.k);
            for (var i = 0u; i < TM; i++) {
                av[i] = select(vec4<f32>(0.0), a[ai[i] + kq], keep);
            }
            for (var j = 0u; j < TN; j++) {
                bv[j] = select(vec4<f32>(0.0), b[bj[j] + kq], keep);
            }
            ak_bk_step(&acc, &av, &bv, 0u);
            ak_bk_step(&acc, &av, &bv, 1u);
            ak_bk_step(&acc, &av, &bv, 2u);
            ak_bk_step(&acc, &av, &bv, 3u);
        }
    }
    for (var i = 0u; i < TM; i++) {
        for (var jv = 0u; jv < TN4; jv++) {
            let v = acc[i * TN4 + jv];
            for (var q = 0u; q < 4u; q++) {
                emit(t.first, t.m0 + i, t.n0 + 4u * jv + q, v[q]);
            }
        }
    }
}

// Step `q` (a constant at every call) of four: acc[i][jv] += A(i, q) * B(q, 4 jv .. 4 jv + 3).
fn ak_bk_step(acc: ptr<function, array<vec4<f32>, TM * TN4>>, av: ptr<function, array<vec4<f32>, TM>>, bv: ptr<function, array<vec4<f32>, TN>>, q: u32) {
    var bq: array<vec4<f32>, TN4>;
    for (var jv = 0u; jv < TN4; jv++) {
        bq[jv] = vec4<f32>((*bv)[4u * jv][q], (*bv)[4u * jv + 1u][q], (*bv)[4u * jv + 2u][q], (*bv)[4u * jv + 3u][q]);
    }
    for (var i = 0u; i < TM; i++) {
        let s = vec4<f32>((*av)[i][q]);
        for (var jv = 0u; jv < TN4; jv++) {
            (*acc)[i * TN4 + jv] = fma(s, bq[jv], (*acc)[i * TN4 + jv]);
        }
    }
}
