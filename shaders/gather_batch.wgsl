// Gathers a batch from a device-resident u8 image set (a whole data set, or one streamed chunk of
// it), scaled to f32, each image augmented by its record; the labels come along. The bytes are
// packed four to a little-endian u32 word.
//
// With `augmented` 0 there are no records and the images are copied. Otherwise image b's record is
// augments[WORDS * b ..] (written by ImageAugment::words): dx, dy, flags, the cutout square
// [x0, x1, y0, y1], the sampling map [m00, m01, m10, m11, t0, t1] and the elastic control points
// [dx, dy] (GRID x GRID, row-major), f32 as their bits.
// - Without the WARP flag the pixels are copied: out[b, c, y, x] = byte(c, y - dy, sx) * scale with
//   sx = x - dx, or width - 1 - (x - dx) when the FLIP flag is set (mirrored first, then shifted),
//   zero where (y - dy, x - dx) falls outside the image.
// - With it, output pixel (x, y) moves by the elastic field (the control points interpolated
//   bilinearly), the affine map takes it to its source position (s = M p + t: the shift, rotation,
//   scale and flip together), and the image is sampled there bilinearly, zero outside it.
// - Then the cutout square (empty when x0 = x1) is set to zero.
// Each invocation writes PER consecutive values of one image (fewer invocations: cheaper on
// lavapipe).

#include "lib/grid.wgsl"

struct Params {
    batch: u32, image_len: u32, n: u32, scale: f32,
    height: u32, width: u32, augmented: u32, _pad: u32,
    // Elastic control-grid cells per pixel along x and y (elastic_grid_step).
    grid_x: f32, grid_y: f32, _pad1: u32, _pad2: u32,
}

const WG: u32 = 256u;
const PER: u32 = 4u;
const WORDS: u32 = 45u;
const GRID: u32 = 4u;
const FLIP: u32 = 1u;
const WARP: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read> augments: array<u32>;
@group(0) @binding(5) var<storage, read_write> out_images: array<f32>;
@group(0) @binding(6) var<storage, read_write> out_labels: array<u32>;

fn byte_at(index: u32) -> f32 {
    return f32((images[index >> 2u] >> ((index & 3u) * 8u)) & 0xffu);
}

// Pixel (x, y) of the plane whose first byte is `plane_start`, zero outside the image.
fn pixel(plane_start: u32, x: i32, y: i32) -> f32 {
    if (x < 0 || y < 0 || x >= i32(p.width) || y >= i32(p.height)) {
        return 0.0;
    }
    return byte_at(plane_start + u32(y) * p.width + u32(x));
}

fn word_f32(k: u32) -> f32 {
    return bitcast<f32>(augments[k]);
}

fn control_point(record: u32, row: u32, col: u32) -> vec2<f32> {
    let k = record + 13u + 2u * (row * GRID + col);
    return vec2<f32>(word_f32(k), word_f32(k + 1u));
}

// The elastic field at output pixel (x, y): its cell of the control grid, interpolated.
fn displacement(record: u32, x: u32, y: u32) -> vec2<f32> {
    let gx = f32(x) * p.grid_x;
    let gy = f32(y) * p.grid_y;
    let i = min(u32(floor(gx)), GRID - 2u);
    let j = min(u32(floor(gy)), GRID - 2u);
    let fx = gx - f32(i);
    let fy = gy - f32(j);
    let top = (1.0 - fx) * control_point(record, j, i) + fx * control_point(record, j, i + 1u);
    let bottom = (1.0 - fx) * control_point(record, j + 1u, i) + fx * control_point(record, j + 1u, i + 1u);
    return (1.0 - fy) * top + fy * bottom;
}

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
    let record = WORDS * b;
    var flags = 0u;
    var dx = 0;
    var dy = 0;
    var cut = vec4<u32>(0u);
    if (p.augmented != 0u) {
        dx = bitcast<i32>(augments[record]);
        dy = bitcast<i32>(augments[record + 1u]);
        flags = augments[record + 2u];
        cut = vec4<u32>(augments[record + 3u], augments[record + 4u], augments[record + 5u], augments[record + 6u]);
    }
    let plane = p.height * p.width;
    let src = image * p.image_len;
    let dst = b * p.image_len;
    if ((flags & WARP) == 0u) {
        let flip = (flags & FLIP) != 0u;
        for (var j = j0; j < min(j0 + PER, p.image_len); j++) {
            let c = j / plane;
            let r = j - c * plane;
            let oy = r / p.width;
            let ox = r % p.width;
            let y = i32(oy) - dy;
            var x = i32(ox) - dx;
            var value = 0.0;
            if (y >= 0 && y < i32(p.height) && x >= 0 && x < i32(p.width)) {
                if (flip) {
                    x = i32(p.width) - 1 - x;
                }
                value = byte_at(src + c * plane + u32(y) * p.width + u32(x)) * p.scale;
            }
            if (ox >= cut.x && ox < cut.y && oy >= cut.z && oy < cut.w) {
                value = 0.0;
            }
            out_images[dst + j] = value;
        }
    } else {
        let m = vec4<f32>(word_f32(record + 7u), word_f32(record + 8u), word_f32(record + 9u), word_f32(record + 10u));
        let shift = vec2<f32>(word_f32(record + 11u), word_f32(record + 12u));
        for (var j = j0; j < min(j0 + PER, p.image_len); j++) {
            let c = j / plane;
            let r = j - c * plane;
            let oy = r / p.width;
            let ox = r % p.width;
            let d = displacement(record, ox, oy);
            let px = f32(ox) + d.x;
            let py = f32(oy) + d.y;
            // Beyond a pixel outside the image every neighbour is zero: the clamp only keeps the
            // integer conversion in range.
            let sx = clamp(m.x * px + m.y * py + shift.x, -2.0, f32(p.width) + 1.0);
            let sy = clamp(m.z * px + m.w * py + shift.y, -2.0, f32(p.height) + 1.0);
            let x0 = floor(sx);
            let y0 = floor(sy);
            let fx = sx - x0;
            let fy = sy - y0;
            let ix = i32(x0);
            let iy = i32(y0);
            let base = src + c * plane;
            let top = (1.0 - fx) * pixel(base, ix, iy) + fx * pixel(base, ix + 1, iy);
            let bottom = (1.0 - fx) * pixel(base, ix, iy + 1) + fx * pixel(base, ix + 1, iy + 1);
            var value = ((1.0 - fy) * top + fy * bottom) * p.scale;
            if (ox >= cut.x && ox < cut.y && oy >= cut.z && oy < cut.w) {
                value = 0.0;
            }
            out_images[dst + j] = value;
        }
    }
    if (j0 == 0u) {
        out_labels[b] = labels[image];
    }
}
