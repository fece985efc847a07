// Gathers a batch from a device-resident u8 image set: out[b, j] = byte(images, indices[b]*len + j)
// * scale, with the bytes packed four to a little-endian u32 word; the labels come along. Each
// invocation writes PER consecutive values of one image (fewer invocations: cheaper on lavapipe).

struct Params {
    batch: u32, image_len: u32, n: u32, scale: f32,
}

const WG: u32 = 256u;
const PER: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_images: array<f32>;
@group(0) @binding(5) var<storage, read_write> out_labels: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunks_per_image = (p.image_len + PER - 1u) / PER;
    let t = (wg.x + wg.y * nwg.x) * WG + lid;
    if (t >= p.batch * chunks_per_image) {
        return;
    }
    let b = t / chunks_per_image;
    let j0 = (t - b * chunks_per_image) * PER;
    let image = min(indices[b], p.n - 1u); // the host checks indices; this only keeps reads in bounds
    let src = image * p.image_len;
    let dst = b * p.image_len;
    for (var j = j0; j < min(j0 + PER, p.image_len); j++) {
        let byte_index = src + j;
        let byte = (images[byte_index >> 2u] >> ((byte_index & 3u) * 8u)) & 0xffu;
        out_images[dst + j] = f32(byte) * p.scale;
    }
    if (j0 == 0u) {
        out_labels[b] = labels[image];
    }
}
