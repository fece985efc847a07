// Strided, batched matrix multiply: C[b] = A[b] * B[b] (+ bias) (+ C[b]).
// Each invocation computes a TM x TN block held in registers (register blocking suits lavapipe,
// where workgroup-memory barriers are slow). Any operand layout (transposed or not) is expressed
// through the element strides, so one kernel serves dense and conv in forward and backward.

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    sa_m: u32, sa_k: u32, sa_b: u32, a_off: u32,
    sb_k: u32, sb_n: u32, sb_b: u32, b_off: u32,
    sc_m: u32, sc_n: u32, sc_b: u32, c_off: u32,
    flags: u32, _p0: u32, _p1: u32, _p2: u32,
}

const BIAS_N: u32 = 1u;       // add bias[n] (dense)
const BIAS_M: u32 = 2u;       // add bias[m] (conv)
const ACCUMULATE: u32 = 4u;   // C += result instead of C = result
const REDUCE_BATCH: u32 = 8u; // sum the products of all batches into one C

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
    let cb = p.c_off + first * p.sc_b;
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
            var v = acc[i * TN + j];
            if ((p.flags & BIAS_N) != 0u) {
                v += bias[n];
            }
            if ((p.flags & BIAS_M) != 0u) {
                v += bias[m];
            }
            let ci = cb + m * p.sc_m + n * p.sc_n;
            if ((p.flags & ACCUMULATE) != 0u) {
                v += c[ci];
            }
            c[ci] = v;
        }
    }
}
