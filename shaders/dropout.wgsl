// Inverted dropout: out = x * scale where the element is kept, else 0. The mask is not stored:
// a counter-based hash of (key, element index) decides each element, so forward and backward (run
// on dy with the same keys) agree without a mask buffer. Must match ops::dropout::keeps.

struct Params {
    n: u32,
    threshold: u32, // kept where hash >= threshold = rate * 2^32
    k1: u32,        // keys derived from the 64-bit seed on the CPU
    k2: u32,
    scale: f32,     // 1 / (1 - rate)
    _p0: u32, _p1: u32, _p2: u32,
}

#include "lib/elementwise.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Chris Wellons' lowbias32: a full-avalanche bijection on u32.
fn mix(v: u32) -> u32 {
    var h = v;
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = first_index(wg, nwg, lid);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.n) {
            return;
        }
        let h = mix(mix(i + p.k1) ^ p.k2);
        out[i] = select(0.0, x[i] * p.scale, h >= p.threshold);
    }
}
