// Stores one element of C, (m, n) of the batch `first`, when it is inside C: the product `value`,
// plus the bias and C's old value where the flags ask. Needs the includer's `p` (Params of
// lib/gemm_params.wgsl), `bias` and a scalar `c`.
fn emit(first: u32, m: u32, n: u32, value: f32) {
    if (m >= p.m || n >= p.n) {
        return;
    }
    var v = value;
    if ((p.flags & BIAS_N) != 0u) {
        v += bias[n];
    }
    if ((p.flags & BIAS_M) != 0u) {
        v += bias[m];
    }
    let ci = p.c_off + first * p.sc_b + m * p.sc_m + n * p.sc_n;
    if ((p.flags & ACCUMULATE) != 0u) {
        v += c[ci];
    }
    c[ci] = v;
}
