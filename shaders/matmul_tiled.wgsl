// Strided, batched matrix multiply through workgroup memory: C[b] = A[b] * B[b] (+ bias) (+ C[b]),
// the classic GPU GEMM. A workgroup computes a BM x BN block of C (BM = TM * WG_Y, BN = TN * WG_X).
// Per step of BK along k its invocations together load an A tile (BM x BK) and a B tile (BK x BN)
// into workgroup memory, then each accumulates the outer products of its TM x TN register tile from
// there. Each operand element is read from global memory once per workgroup, not once per
// invocation that uses it (WG_X times for A, WG_Y times for B in the register-blocked kernels).
// Any strides, as in matmul.wgsl, whose flags and stores this kernel matches.
//
// Written for GPUs with on-chip shared memory. On lavapipe workgroup memory is ordinary memory and
// each barrier splits the shader, so the register-blocked and subgroup kernels run faster there.
//
// Tile sizes are constants the device rewrites per pipeline (WGSL sizes the function-scope register
// tile only with `const`), so every loop over a tile has a constant count and can be unrolled.

#include "lib/gemm_params.wgsl"
#include "lib/gemm_store.wgsl"

const TM: u32 = 4u;
const TN: u32 = 4u;
const WG_X: u32 = 16u;
const WG_Y: u32 = 16u;
const BK: u32 = 16u;

const BM: u32 = TM * WG_Y;
const BN: u32 = TN * WG_X;
const LANES: u32 = WG_X * WG_Y;
// Both tiles are stored k-major ([BK][BM] and [BK][BN]): in the inner loop neighbouring invocations
// read neighbouring words. One word of padding per row: an operand contiguous along k is loaded
// with neighbouring invocations on neighbouring k, which land a row pitch apart in the tile; an odd
// pitch puts them in distinct banks, where a pitch of 64 would be a 32-way bank conflict on every
// store. (+4 would keep rows 16-byte aligned, which only vec4 reads need; these are scalar.)
const A_PITCH: u32 = BM + 1u;
const B_PITCH: u32 = BN + 1u;
// Tile elements each invocation loads per step (the last round may be partial).
const A_LOADS: u32 = (BM * BK + LANES - 1u) / LANES;
const B_LOADS: u32 = (BK * BN + LANES - 1u) / LANES;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<f32, BK * A_PITCH>;
var<workgroup> b_tile: array<f32, BK * B_PITCH>;

// Invocation (x, y) owns rows y, y + WG_Y, ... and columns x, x + WG_X, ... of the block, not a
// contiguous TM x TN run: neighbouring invocations then read neighbouring words of b_tile (a run
// each would put them TN words apart, in TN-way conflicting banks) and store neighbouring columns
// of C (coalesced when C is row-major).
@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let m_block = wg.y * BM;
    let n_block = wg.x * BN;
    let reduce = (p.flags & REDUCE_BATCH) != 0u;
    let first = select(wg.z, 0u, reduce);
    let last = select(wg.z + 1u, p.batch, reduce);
    // Neighbouring invocations load along the operand's axis of smaller stride (the contiguous one
    // when there is one), so that their global reads coalesce.
    let a_along_k = p.sa_k <= p.sa_m;
    let b_along_n = p.sb_n <= p.sb_k;
    var acc: array<f32, TM * TN>;
    for (var e = 0u; e < TM * TN; e++) {
        acc[e] = 0.0;
    }
    // No invocation returns early: all of them load and reach every barrier. Elements past the
    // edges load as 0, so the last step of k runs the whole BK (0 * 0 adds nothing).
    for (var bi = first; bi < last; bi++) {
        let a_base = p.a_off + bi * p.sa_b;
        let b_base = p.b_off + bi * p.sb_b;
        for (var k0 = 0u; k0 < p.k; k0 += BK) {
            for (var e = 0u; e < A_LOADS; e++) {
                let idx = lane + e * LANES;
                if (idx < BM * BK) {
                    var r = idx % BM;
                    var kk = idx / BM;
                    if (a_along_k) {
                        r = idx / BK;
                        kk = idx % BK;
                    }
                    let row = m_block + r;
                    let col = k0 + kk;
                    var v = 0.0;
                    if (row < p.m && col < p.k) {
                        v = a[a_base + row * p.sa_m + col * p.sa_k];
                    }
                    a_tile[kk * A_PITCH + r] = v;
                }
            }
            for (var e = 0u; e < B_LOADS; e++) {
                let idx = lane + e * LANES;
                if (idx < BK * BN) {
                    var cn = idx / BK;
                    var kk = idx % BK;
                    if (b_along_n) {
                        cn = idx % BN;
                        kk = idx / BN;
                    }
                    let row = k0 + kk;
                    let col = n_block + cn;
                    var v = 0.0;
                    if (row < p.k && col < p.n) {
                        v = b[b_base + row * p.sb_k + col * p.sb_n];
                    }
                    b_tile[kk * B_PITCH + cn] = v;
                }
            }
            workgroupBarrier();
            for (var kk = 0u; kk < BK; kk++) {
                var av: array<f32, TM>;
                var bv: array<f32, TN>;
                for (var i = 0u; i < TM; i++) {
                    av[i] = a_tile[kk * A_PITCH + lid.y + i * WG_Y];
                }
                for (var j = 0u; j < TN; j++) {
                    bv[j] = b_tile[kk * B_PITCH + lid.x + j * WG_X];
                }
                for (var i = 0u; i < TM; i++) {
                    for (var j = 0u; j < TN; j++) {
                        acc[i * TN + j] = fma(av[i], bv[j], acc[i * TN + j]);
                    }
                }
            }
            // The tiles are overwritten by the next step's loads.
            workgroupBarrier();
        }
    }
    for (var i = 0u; i < TM; i++) {
        let m = m_block + lid.y + i * WG_Y;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let n = n_block + lid.x + j * WG_X;
            if (n >= p.n) {
                break;
            }
            emit(first, m, n, acc[i * TN + j]);
        }
    }
}
