// The parameters every GEMM kernel takes (ops::matmul::GemmParams): sizes, then each operand's
// element strides along its rows, columns and batches and its offset, then the flags.
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
