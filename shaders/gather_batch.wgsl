// Gathers a batch from a device-resident u8 image set (a whole data set, or one streamed chunk of
// it): out[b, c, y, x] = byte(images[indices[b]], c, y - dy, sx) * scale with sx = x - dx, or
// width - 1 - (x - dx) when the image is flipped, zero where (y - dy, x - dx) falls outside the
// image; the bytes are packed four to a little-endian u32 word. (dx, dy, flip) = augments[3b],
// augments[3b + 1], augments[3b + 2]: the image is mirrored left-right first, then shifted (random
// augmentation). With `augmented` 0 there are none and the image is copied. The labels come along.
// Each invocation writes PER consecutive values of one image (fewer invocations: cheaper on
// lavapipe).

#include "lib/grid.wgsl"

struct Params {
    batch: u32, image_len: u32, n: u32, scale: f32,
    height: u32, width: u32, augmented: u32, _pad: u32,
}

const WG: u32 = 256u;
const PER: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read> augments: array<i32>;
@group(0) @binding(5) var<storage, read_write> out_images: array<f32>;
@group(0) @binding(6) var<storage, read_write> out_labels: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunks_per_image = (p.image_len + PER - 1u) / PER;
    let t = workgroup_index(wg, nwg) * WG + lid;
    if (t >= p.batch * chunks_per_image) {
        return;
    }
    let b = t / chunks_per_image;
    let j0 = (t - b * chunks_per_image) * PER;
    let image = min(indices[b], p.n - 1u); // the host checks indices; this only keeps reads in bounds
    var dx = 0;
    var dy = 0;
    var flip = false;
    if (p.augmented != 0u) {
        dx = augments[3u * b];
        dy = augments[3u * b + 1u];
        flip = augments[3u * b + 2u] != 0;
    }
    let plane = p.height * p.width;
    let src = image * p.image_len;
    let dst = b * p.image_len;
    for (var j = j0; j < min(j0 + PER, p.image_len); j++) {
        let c = j / plane;
        let r = j - c * plane;
        let y = i32(r / p.width) - dy;
        var x = i32(r % p.width) - dx;
        var value = 0.0;
        if (y >= 0 && y < i32(p.height) && x >= 0 && x < i32(p.width)) {
            if (flip) {
                x = i32(p.width) - 1 - x;
            }
            let byte_index = src + c * plane + u32(y) * p.width + u32(x);
            value = f32((images[byte_index >> 2u] >> ((byte_index & 3u) * 8u)) & 0xffu) * p.scale;
        }
        out_images[dst + j] = value;
    }
    if (j0 == 0u) {
        out_labels[b] = labels[image];
    }
}
