// Copies one part of a channel concatenation: a part [outer, c_part, inner] sits at channels
// c_off .. c_off + c_part of the whole [outer, c_total, inner]. Forward scatters the part into
// the whole; backward (gather = 1) slices the part's gradient out of the whole's.

struct Params {
    outer: u32, c_part: u32, inner: u32, c_total: u32,
    c_off: u32, gather: u32, _p0: u32, _p1: u32,
}

#include "lib/elementwise.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let part_len = p.c_part * p.inner;
    let first = first_index(wg, nwg, lid);
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * WG;
        if (i >= p.outer * part_len) {
            return;
        }
        let o = i / part_len;
        let whole = (o * p.c_total + p.c_off) * p.inner + (i - o * part_len);
        if (p.gather != 0u) {
            dst[i] = src[whole];
        } else {
            dst[whole] = src[i];
        }
    }
}
