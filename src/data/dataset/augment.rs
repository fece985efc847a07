//! Augmentation of training images in the gather: random shifts and horizontal flips, drawn per
//! image from a seed, and the CPU reference of an augmented gather.

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

/// What happens to one image of a batch: mirrored left-right when `flip`, then moved by
/// `shift = [dx, dy]` (right and down for positive values), the uncovered pixels zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ImageAugment {
    pub shift: [i32; 2],
    pub flip: bool,
}

impl ImageAugment {
    pub fn is_identity(&self) -> bool {
        *self == ImageAugment::default()
    }
}

/// Keeps the flips' generator apart from the shifts', which are seeded alike (so that turning
/// flips on leaves a run's shifts as they were).
const FLIP_STREAM: u64 = 0xF11B_5EED_0000_0002;

/// The augmentation of training batches. Validation, evaluation and prediction never augment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augmentation {
    pub shift: RandomShift,
    /// Mirror each image left-right with probability one half. Right for photographs (a mirrored
    /// cat is a cat), wrong for digits and text (a mirrored 2 is no digit, a mirrored b a d).
    pub flip: bool,
}

impl Augmentation {
    /// No augmentation.
    pub const NONE: Augmentation = Augmentation { shift: RandomShift { max: 0 }, flip: false };

    /// The default for `channels`x`height`x`width` images: [`RandomShift::for_image`], and flips
    /// for colour images (3 or more channels) only: one-channel sets are mostly digits and text.
    pub fn for_image(channels: usize, height: usize, width: usize) -> Augmentation {
        Augmentation { shift: RandomShift::for_image(height, width), flip: channels >= 3 }
    }

    pub fn is_none(&self) -> bool {
        self.shift.max == 0 && !self.flip
    }

    /// `count` per-image augmentations, the same for the same seed; the shifts are those of
    /// `self.shift.draw(count, seed)`.
    pub fn draw(&self, count: usize, seed: u64) -> Vec<ImageAugment> {
        let shifts = self.shift.draw(count, seed);
        let mut flips = rand::rngs::StdRng::seed_from_u64(seed ^ FLIP_STREAM);
        shifts.into_iter().map(|shift| ImageAugment { shift, flip: self.flip && flips.random_bool(0.5) }).collect()
    }
}

impl ImageSet {
    /// As [`gather_f32`](Self::gather_f32), each image augmented by its [`ImageAugment`]: the CPU
    /// reference of [`DeviceDataset::batch_augmented`](super::DeviceDataset::batch_augmented).
    pub fn gather_f32_augmented(&self, indices: &[u32], augments: &[ImageAugment]) -> Vec<f32> {
        assert_eq!(indices.len(), augments.len(), "one augmentation per image");
        let (h, w) = (self.height as i64, self.width as i64);
        let mut out = Vec::with_capacity(indices.len() * self.image_len());
        for (&i, a) in indices.iter().zip(augments) {
            let image = self.image(i as usize);
            let [dx, dy] = a.shift.map(i64::from);
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
        out
    }
}
