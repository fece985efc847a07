// Sums the includer's workgroup array `partial` (WG entries of any type that adds: f32, vec2...)
// into partial[0], halving the active invocations each round. Every invocation of the workgroup
// calls it (it holds barriers), after writing its own entry.
fn sum_partials(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
}
