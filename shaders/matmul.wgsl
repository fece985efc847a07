// Strided, batched matrix multiply: C[b] = A[b] * B[b] (+ bias) (+ C[b]).
// Each invocation computes a TM x TN block held in registers (register blocking suits lavapipe,
// where workgroup-memory barriers are slow). Any operand layout (transposed or not) is expressed
// through the element strides, so one kernel serves dense and conv in forward and backward.

#include "lib/gemm_params.wgsl"
#include "lib/gemm_store.wgsl"

const TM: u32 = 4u;
const TN: u32 = 4u;
override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * TN;
    let m0 = gid.y * TM;
    if (m0 >= p.m || n0 >= p.n) {
        return;
    }
    var batches = 1u;
    var first = gid.z;
    if ((p.flags & REDUCE_BATCH) != 0u) {
        batches = p.batch;
        first = 0u;
    }
    var acc: array<f32, TM * TN>;
    for (var i = 0u; i < TM * TN; i++) {
        acc[i] = 0.0;
    }
    for (var bi = first; bi < first + batches; bi++) {
        // Rows and columns past the edge are clamped so loads stay in bounds; they are not stored.
        var ai: array<u32, TM>;
        var bj: array<u32, TN>;
        for (var i = 0u; i < TM; i++) {
            ai[i] = p.a_off + bi * p.sa_b + min(m0 + i, p.m - 1u) * p.sa_m;
        }
        for (var j = 0u; j < TN; j++) {
            bj[j] = p.b_off + bi * p.sb_b + min(n0 + j, p.n - 1u) * p.sb_n;
        }
        for (var kk = 0u; kk < p.k; kk++) {
            var av: array<f32, TM>;
            var bv: array<f32, TN>;
            for (var i = 0u; i < TM; i++) {
                av[i] = a[ai[i]];
                ai[i] += p.sa_k;
            }
            for (var j = 0u; j < TN; j++) {
                bv[j] = b[bj[j]];
                bj[j] += p.sb_k;
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] = fma(av[i], bv[j], acc[i * TN + j]);
                }
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        let m = m0 + i;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let n = n0 + j;
            if (n >= p.n) {
                break;
            }
            emit(first, m, n, acc[i * TN + j]);
        }
    }
}
