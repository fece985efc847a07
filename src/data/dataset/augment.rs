//! Augmentation of training images in the gather, drawn per image from a seed: random shifts and
//! horizontal flips (pixels copied exactly), small rotations and scalings about the centre and an
//! elastic distortion (pixels resampled bilinearly), and cutout; each image's record as the gather
//! kernel reads it, and the CPU reference of an augmented gather.

use super::super::mnist::{ImageSet, PIXEL_SCALE};
use rand::{Rng, SeedableRng};

/// Random-shift augmentation: each training image moves by a whole number of pixels, drawn
/// uniformly from `-max..=max` along each axis, the uncovered border zero. A digit moved by two
/// pixels is still that digit, so the network learns that position does not matter instead of
/// memorising where strokes fall (the standard cure for a convnet's validation plateau on MNIST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RandomShift {
    pub max: usize,
}

impl RandomShift {
    /// The default for `height`x`width` images: 2 pixels, less for images under 16 pixels on a
    /// side (an eighth of the shorter side), none under 8.
    pub fn for_image(height: usize, width: usize) -> RandomShift {
        RandomShift { max: (height.min(width) / 8).min(2) }
    }

    /// `count` shifts `[dx, dy]`, the same for the same seed.
    pub fn draw(&self, count: usize, seed: u64) -> Vec<[i32; 2]> {
        if self.max == 0 {
            return vec![[0, 0]; count];
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let m = self.max as i32;
        (0..count).map(|_| [rng.random_range(-m..=m), rng.random_range(-m..=m)]).collect()
    }
}

/// Control points of the elastic displacement field along each axis: a 4x4 grid whose corners sit
/// on the image's corner pixels, interpolated bilinearly in between (a cheap, smooth stand-in for
/// Simard et al.'s Gaussian-filtered random field, 2003).
pub const ELASTIC_GRID: usize = 4;
/// Control points of the elastic field per image, row-major.
pub const ELASTIC_POINTS: usize = ELASTIC_GRID * ELASTIC_GRID;

/// A square of the output image set to zero after the geometric transform (DeVries and Taylor's
/// cutout, 2017): the network cannot lean on any one part of the image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cutout {
    /// The square's centre as fractions of the width and the height, each in [0, 1): the centre
    /// pixel is `floor(centre * side)` along each axis, so any pixel of any image size can be one.
    pub centre: [f32; 2],
    /// The square's side in pixels; the parts that fall outside the image are ignored.
    pub side: u32,
}

impl Cutout {
    /// The zeroed output pixels of a `height`x`width` image, clipped to it: `[x0, x1, y0, y1]`,
    /// columns `x0..x1` and rows `y0..y1`.
    pub fn square(&self, height: usize, width: usize) -> [u32; 4] {
        let half = (self.side / 2) as i64;
        let span = |centre: f32, len: usize| {
            let start = (centre as f64 * len as f64).floor() as i64 - half;
            let clip = |v: i64| v.clamp(0, len as i64) as u32;
            [clip(start), clip(start + self.side as i64)]
        };
        let ([x0, x1], [y0, y1]) = (span(self.centre[0], width), span(self.centre[1], height));
        [x0, x1, y0, y1]
    }
}

/// What happens to one image of a batch. Each output pixel `(x, y)` is read from the source at
/// `(x, y) + d(x, y)` (`d`: the elastic field), moved back by `shift = [dx, dy]`, rotated back by
/// `rotation_degrees` and scaled back by `scale` about the image's centre, then mirrored left-right
/// when `flip`; the image is sampled bilinearly there, zero outside it; last, the `cutout` square
/// is set to zero. Seen forward: the image is mirrored, rotated and scaled, moved, distorted.
/// Without rotation, scaling or distortion the pixels are copied exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageAugment {
    /// Right and down for positive values.
    pub shift: [i32; 2],
    pub flip: bool,
    /// From the x axis towards the y axis (clockwise on screen, where y points down).
    pub rotation_degrees: f32,
    /// Above 1: larger.
    pub scale: f32,
    /// The elastic field's displacement `[dx, dy]` in pixels at each control point (row-major,
    /// [`ELASTIC_GRID`] a side).
    pub elastic: [[f32; 2]; ELASTIC_POINTS],
    pub cutout: Option<Cutout>,
}

impl Default for ImageAugment {
    fn default() -> Self {
        ImageAugment { shift: [0, 0], flip: false, rotation_degrees: 0.0, scale: 1.0, elastic: [[0.0; 2]; ELASTIC_POINTS], cutout: None }
    }
}

/// Words of one image's record in the gather kernel's augmentation binding (`const WORDS` in
/// `gather_batch.wgsl`): dx, dy, flags, the cutout square `[x0, x1, y0, y1]`, the sampling map
/// `[m00, m01, m10, m11, t0, t1]` and the elastic control points `[dx, dy]`, f32 as their bits.
pub(super) const AUGMENT_WORDS: usize = 13 + 2 * ELASTIC_POINTS;
/// Flags of a record: mirrored (read only by the copying path), resampled.
const FLIP_FLAG: u32 = 1;
const WARP_FLAG: u32 = 2;

impl ImageAugment {
    pub fn is_identity(&self) -> bool {
        *self == ImageAugment::default()
    }

    /// Whether the pixels are resampled (a rotation, a scaling or an elastic field), not copied.
    pub fn is_warped(&self) -> bool {
        self.rotation_degrees != 0.0 || self.scale != 1.0 || self.elastic.iter().flatten().any(|&d| d != 0.0)
    }

    /// The affine map from an output position (after the elastic field) to its source position
    /// in a `height`x`width` image, `[m00, m01, m10, m11, t0, t1]`: `sx = m00 x + m01 y + t0`,
    /// `sy = m10 x + m11 y + t1`. Composed in f64 and rounded once, so that without rotation and
    /// scaling it is exactly `x - dx` (mirrored: `width - 1 - (x - dx)`), `y - dy`.
    pub fn sampling_map(&self, height: usize, width: usize) -> [f32; 6] {
        let angle = (self.rotation_degrees as f64).to_radians();
        let (cos, sin) = (angle.cos() / self.scale as f64, angle.sin() / self.scale as f64);
        // The inverse of rotating by `angle` and scaling: R(-angle) / scale.
        let m = [[cos, sin], [-sin, cos]];
        let (cx, cy) = ((width as f64 - 1.0) / 2.0, (height as f64 - 1.0) / 2.0);
        // s = centre + m (p - shift - centre) = m p + (centre - m (shift + centre)).
        let (ux, uy) = (self.shift[0] as f64 + cx, self.shift[1] as f64 + cy);
        let mut map = [m[0][0], m[0][1], m[1][0], m[1][1], cx - (m[0][0] * ux + m[0][1] * uy), cy - (m[1][0] * ux + m[1][1] * uy)];
        if self.flip {
            // sx -> width - 1 - sx.
            map[0] = -map[0];
            map[1] = -map[1];
            map[4] = width as f64 - 1.0 - map[4];
        }
        map.map(|v| v as f32)
    }

    /// The record's words for a `height`x`width` image (see [`AUGMENT_WORDS`]).
    pub(super) fn words(&self, height: usize, width: usize) -> [u32; AUGMENT_WORDS] {
        let mut words = [0u32; AUGMENT_WORDS];
        words[0] = self.shift[0] as u32;
        words[1] = self.shift[1] as u32;
        words[2] = if self.flip { FLIP_FLAG } else { 0 } | if self.is_warped() { WARP_FLAG } else { 0 };
        if let Some(cutout) = &self.cutout {
            words[3..7].copy_from_slice(&cutout.square(height, width));
        }
        words[7..13].copy_from_slice(&self.sampling_map(height, width).map(f32::to_bits));
        for (k, v) in self.elastic.iter().flatten().enumerate() {
            words[13 + k] = v.to_bits();
        }
        words
    }

    /// Why this record cannot augment a `height`x`width` image, if it cannot: a shift out of the
    /// frame, a value that is not finite, a scale or a displacement that loses the image, a
    /// cutout centre outside it.
    pub(super) fn problem(&self, height: usize, width: usize) -> Option<String> {
        let [dx, dy] = self.shift;
        if dx.unsigned_abs() as usize >= width || dy.unsigned_abs() as usize >= height {
            return Some(format!("shift {:?} moves a {height}x{width} image out of its frame", self.shift));
        }
        if !self.rotation_degrees.is_finite() {
            return Some(format!("a rotation of {} degrees", self.rotation_degrees));
        }
        if !(0.01..=100.0).contains(&self.scale) {
            return Some(format!("a scale of {} (it must be between 0.01 and 100)", self.scale));
        }
        let side = height.max(width) as f32;
        if let Some(d) = self.elastic.iter().flatten().find(|d| !(-side..=side).contains(*d)) {
            return Some(format!("an elastic displacement of {d} pixels in a {height}x{width} image"));
        }
        if let Some(c) = self.cutout.iter().find(|c| !c.centre.iter().all(|v| (0.0..1.0).contains(v))) {
            return Some(format!("a cutout centred at {:?} (fractions of the image, each in [0, 1))", c.centre));
        }
        None
    }

    /// The elastic displacement at output pixel `(x, y)`, `grid` being [`elastic_grid_step`] of
    /// the width and the height: computed in f32 in the kernel's order, so that the CPU reference
    /// samples at the kernel's positions.
    fn displacement(&self, grid: [f32; 2], x: usize, y: usize) -> [f32; 2] {
        let cell = |pos: f32| {
            let i = (pos.floor() as usize).min(ELASTIC_GRID - 2);
            (i, pos - i as f32)
        };
        let ((i, fx), (j, fy)) = (cell(x as f32 * grid[0]), cell(y as f32 * grid[1]));
        let at = |row: usize, col: usize, k: usize| self.elastic[row * ELASTIC_GRID + col][k];
        [0, 1].map(|k| {
            let top = (1.0 - fx) * at(j, i, k) + fx * at(j, i + 1, k);
            let bottom = (1.0 - fx) * at(j + 1, i, k) + fx * at(j + 1, i + 1, k);
            (1.0 - fy) * top + fy * bottom
        })
    }

    /// The source position of output pixel `(x, y)` in f32, as the kernel computes it.
    fn source_position(&self, map: &[f32; 6], grid: [f32; 2], x: usize, y: usize) -> [f32; 2] {
        let [ex, ey] = self.displacement(grid, x, y);
        let (px, py) = (x as f32 + ex, y as f32 + ey);
        [map[0] * px + map[1] * py + map[4], map[2] * px + map[3] * py + map[5]]
    }
}

/// Control-grid cells per pixel along a side of `len` pixels: the first control point on pixel
/// 0, the last on pixel `len - 1`. Rounded once here (the kernel receives it as a parameter:
/// WGSL's division is not exact).
pub(super) fn elastic_grid_step(len: usize) -> f32 {
    if len > 1 {
        (ELASTIC_GRID - 1) as f32 / (len - 1) as f32
    } else {
        0.0
    }
}

/// Each augmentation draws from its own generator, all seeded alike, so that turning one on
/// leaves the others' draws as they were (the shifts use the seed itself).
const FLIP_STREAM: u64 = 0xF11B_5EED_0000_0002;
const ROTATION_STREAM: u64 = 0x2074_7E00_0000_0003;
const SCALE_STREAM: u64 = 0x5CA1_E000_0000_0004;
const ELASTIC_STREAM: u64 = 0xE1A5_71C0_0000_0005;
const CUTOUT_STREAM: u64 = 0xC070_0700_0000_0006;

/// The largest rotation [`Augmentation::check`] accepts, in degrees: beyond it a 6 is a 9.
pub const MAX_ROTATION_DEGREES: f32 = 45.0;
/// The scale range's half-width must stay below this: at 0.5 an image may shrink to half.
pub const MAX_SCALE: f32 = 0.5;

/// The augmentation of training batches. Validation, evaluation and prediction never augment.
/// Every field at 0 (or false) is off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augmentation {
    pub shift: RandomShift,
    /// Mirror each image left-right with probability one half. Right for photographs (a mirrored
    /// cat is a cat), wrong for digits and text (a mirrored 2 is no digit, a mirrored b a d).
    pub flip: bool,
    /// Rotate each image about its centre by an angle drawn uniformly from +-this many degrees
    /// (at most [`MAX_ROTATION_DEGREES`]).
    pub rotation_degrees: f32,
    /// Scale each image about its centre by a factor drawn uniformly from `[1 - scale, 1 +
    /// scale]` (below [`MAX_SCALE`]).
    pub scale: f32,
    /// Elastic distortion: each control point of the field ([`ELASTIC_GRID`] a side) moves by
    /// up to this many pixels along each axis, drawn uniformly (alpha, in pixels).
    pub elastic: f32,
    /// Cutout: a square of this side, in pixels, at a uniformly drawn centre (partly outside the
    /// image at times), set to zero.
    pub cutout: usize,
}

impl Augmentation {
    /// No augmentation.
    pub const NONE: Augmentation =
        Augmentation { shift: RandomShift { max: 0 }, flip: false, rotation_degrees: 0.0, scale: 0.0, elastic: 0.0, cutout: 0 };

    /// The default for `channels`x`height`x`width` images: [`RandomShift::for_image`], and flips
    /// for colour images (3 or more channels) only: one-channel sets are mostly digits and text.
    pub fn for_image(channels: usize, height: usize, width: usize) -> Augmentation {
        Augmentation { shift: RandomShift::for_image(height, width), flip: channels >= 3, ..Augmentation::NONE }
    }

    pub fn is_none(&self) -> bool {
        self.shift.max == 0 && !self.flip && self.rotation_degrees == 0.0 && self.scale == 0.0 && self.elastic == 0.0 && self.cutout == 0
    }

    /// Whether this augmentation suits `height`x`width` images: an error naming the field and its
    /// value when one is not finite, negative or out of its range (a shift or a cutout beyond the
    /// shorter side, an elastic alpha of the shorter side or more).
    pub fn check(&self, height: usize, width: usize) -> crate::Result<()> {
        let side = height.min(width);
        let bad = |what: String| Err(crate::Error::Invalid(format!("augmentation of {height}x{width} images: {what}")));
        if self.shift.max >= side && self.shift.max > 0 {
            return bad(format!("a shift of up to {} pixels moves the images out of their frame", self.shift.max));
        }
        if !(0.0..=MAX_ROTATION_DEGREES).contains(&self.rotation_degrees) {
            return bad(format!("rotation_degrees {} is not between 0 and {MAX_ROTATION_DEGREES}", self.rotation_degrees));
        }
        if !(0.0..MAX_SCALE).contains(&self.scale) {
            return bad(format!("scale {} is not at least 0 and below {MAX_SCALE}", self.scale));
        }
        if !(0.0..side as f32).contains(&self.elastic) {
            return bad(format!("elastic {} is not at least 0 and below the shorter side ({side} pixels)", self.elastic));
        }
        if self.cutout > side {
            return bad(format!("a cutout of {} pixels is larger than the shorter side ({side} pixels)", self.cutout));
        }
        Ok(())
    }

    /// `count` per-image augmentations, the same for the same seed; the shifts are those of
    /// `self.shift.draw(count, seed)`, and each other augmentation draws from its own stream.
    pub fn draw(&self, count: usize, seed: u64) -> Vec<ImageAugment> {
        let shifts = self.shift.draw(count, seed);
        let stream = |salt: u64| rand::rngs::StdRng::seed_from_u64(seed ^ salt);
        let (mut flips, mut rotations, mut scales) = (stream(FLIP_STREAM), stream(ROTATION_STREAM), stream(SCALE_STREAM));
        let (mut fields, mut cutouts) = (stream(ELASTIC_STREAM), stream(CUTOUT_STREAM));
        let (r, s, e) = (self.rotation_degrees, self.scale, self.elastic);
        shifts
            .into_iter()
            .map(|shift| {
                let mut a = ImageAugment { shift, flip: self.flip && flips.random_bool(0.5), ..ImageAugment::default() };
                if r > 0.0 {
                    a.rotation_degrees = rotations.random_range(-r..=r);
                }
                if s > 0.0 {
                    a.scale = 1.0 + scales.random_range(-s..=s);
                }
                if e > 0.0 {
                    a.elastic.iter_mut().flatten().for_each(|d| *d = fields.random_range(-e..=e));
                }
                if self.cutout > 0 {
                    a.cutout = Some(Cutout { centre: [cutouts.random(), cutouts.random()], side: self.cutout as u32 });
                }
                a
            })
            .collect()
    }
}

impl ImageSet {
    /// As [`gather_f32`](Self::gather_f32), each image augmented by its [`ImageAugment`]: the CPU
    /// reference of [`DeviceDataset::batch_augmented`](super::DeviceDataset::batch_augmented).
    /// Shifts and flips alone copy pixels (exactly the kernel's values); a resampled image is
    /// interpolated in f64 at the positions the kernel computes in f32.
    pub fn gather_f32_augmented(&self, indices: &[u32], augments: &[ImageAugment]) -> Vec<f32> {
        assert_eq!(indices.len(), augments.len(), "one augmentation per image");
        let (h, w) = (self.height, self.width);
        let mut out = Vec::with_capacity(indices.len() * self.image_len());
        for (&i, a) in indices.iter().zip(augments) {
            let image = self.image(i as usize);
            let start = out.len();
            if a.is_warped() {
                let (map, grid) = (a.sampling_map(h, w), [elastic_grid_step(w), elastic_grid_step(h)]);
                for plane in image.chunks(h * w) {
                    for y in 0..h {
                        for x in 0..w {
                            let value = bilinear_f64(plane, h, w, a.source_position(&map, grid, x, y));
                            out.push((value * PIXEL_SCALE as f64) as f32);
                        }
                    }
                }
            } else {
                let [dx, dy] = a.shift.map(i64::from);
                let (h, w) = (h as i64, w as i64);
                for c in 0..self.channels as i64 {
                    for y in 0..h {
                        for x in 0..w {
                            let (sy, sx) = (y - dy, x - dx);
                            let inside = (0..h).contains(&sy) && (0..w).contains(&sx);
                            let sx = if a.flip { w - 1 - sx } else { sx };
                            out.push(if inside { image[((c * h + sy) * w + sx) as usize] as f32 * PIXEL_SCALE } else { 0.0 });
                        }
                    }
                }
            }
            if let Some(cutout) = &a.cutout {
                let [x0, x1, y0, y1] = cutout.square(h, w).map(|v| v as usize);
                for plane in out[start..].chunks_mut(h * w) {
                    for row in plane.chunks_mut(w).take(y1).skip(y0) {
                        row[x0..x1].fill(0.0);
                    }
                }
            }
        }
        out
    }
}

/// The `h`x`w` plane sampled at `(sx, sy)` between its four nearest pixels, in f64, the pixels
/// outside the image zero.
fn bilinear_f64(plane: &[u8], h: usize, w: usize, [sx, sy]: [f32; 2]) -> f64 {
    let (sx, sy) = (sx as f64, sy as f64);
    let (x0, y0) = (sx.floor(), sy.floor());
    let (fx, fy) = (sx - x0, sy - y0);
    let pixel = |x: f64, y: f64| {
        let inside = x >= 0.0 && y >= 0.0 && x < w as f64 && y < h as f64;
        if inside {
            plane[y as usize * w + x as usize] as f64
        } else {
            0.0
        }
    };
    let top = (1.0 - fx) * pixel(x0, y0) + fx * pixel(x0 + 1.0, y0);
    let bottom = (1.0 - fx) * pixel(x0, y0 + 1.0) + fx * pixel(x0 + 1.0, y0 + 1.0);
    (1.0 - fy) * top + fy * bottom
}
