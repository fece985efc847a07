// A workgroup's index in a one-dimensional grid, which ops::grid_1d spreads over x and y so that no
// dimension exceeds the adapter's limit (65535 on most).
fn workgroup_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}
