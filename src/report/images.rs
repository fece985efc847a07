//! Images for the page: one image as an inline PNG (`data:` URI, base64), and a grid of images as
//! a PNG file (for the README and for people who want the pictures without the page).

use crate::data::ImageSet;
use crate::error::{Error, Result};
use base64::Engine;
use image::{ImageEncoder, RgbImage};
use std::path::Path;

/// Image `index` of `set` as RGB: grey replicated, and for channel counts other than 1 and 3 the
/// first channel as grey (the report shows what the data holds, not a colour model).
pub fn to_rgb(set: &ImageSet, index: usize) -> RgbImage {
    let (h, w, c) = (set.height, set.width, set.channels);
    let image = set.image(index);
    let plane = h * w;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let at = y as usize * w + x as usize;
        if c == 3 {
            image::Rgb([image[at], image[plane + at], image[2 * plane + at]])
        } else {
            let v = image[at];
            image::Rgb([v, v, v])
        }
    })
}

fn encode_png(image: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Other(format!("encoding a PNG: {e}")))?;
    Ok(bytes)
}

/// Image `index` of `set` as a `data:image/png;base64,...` URI.
pub fn data_uri(set: &ImageSet, index: usize) -> Result<String> {
    let png = encode_png(&to_rgb(set, index))?;
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png)))
}

/// The images at `indices` of `set`, `columns` to a row, each scaled by `scale` (nearest, so the
/// pixels stay visible) with a 2-pixel white gap, written as a PNG to `path`.
pub fn write_grid(set: &ImageSet, indices: &[usize], columns: usize, scale: u32, path: &Path) -> Result<()> {
    let columns = columns.clamp(1, indices.len().max(1));
    let rows = indices.len().div_ceil(columns).max(1);
    let gap = 2u32;
    let (cell_w, cell_h) = (set.width as u32 * scale + gap, set.height as u32 * scale + gap);
    let mut grid = RgbImage::from_pixel(columns as u32 * cell_w + gap, rows as u32 * cell_h + gap, image::Rgb([255, 255, 255]));
    for (k, &index) in indices.iter().enumerate() {
        let image = to_rgb(set, index);
        let (x0, y0) = (gap + (k % columns) as u32 * cell_w, gap + (k / columns) as u32 * cell_h);
        for (x, y, pixel) in image.enumerate_pixels() {
            for dy in 0..scale {
                for dx in 0..scale {
                    grid.put_pixel(x0 + x * scale + dx, y0 + y * scale + dy, *pixel);
                }
            }
        }
    }
    std::fs::write(path, encode_png(&grid)?).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_png_decodes_to_the_image() {
        let pixels: Vec<u8> = (0..2 * 3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
        let set = ImageSet::new(pixels, vec![0, 1], 3, 4, 5, 2).unwrap();
        let uri = data_uri(&set, 1).unwrap();
        let b64 = uri.strip_prefix("data:image/png;base64,").unwrap();
        let png = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(decoded, to_rgb(&set, 1));
        // Channel 1 of pixel (x=2, y=1) of image 1: offset 60 + 20 + 1 * 5 + 2.
        assert_eq!(decoded.get_pixel(2, 1)[1], set.image(1)[20 + 5 + 2]);
    }

    #[test]
    fn a_grid_places_each_image_in_its_cell() {
        let set = ImageSet::new(vec![10; 4].into_iter().chain(vec![200; 4]).collect(), vec![0, 1], 1, 2, 2, 2).unwrap();
        let path = std::env::temp_dir().join(format!("netmorph-grid-{}.png", std::process::id()));
        write_grid(&set, &[1, 0, 1], 2, 3, &path).unwrap();
        let grid = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_file(&path).ok();
        // Two columns of 2x2 images scaled by 3, 2-pixel gaps: 2 + 2 * 8 wide, 2 + 2 * 8 high.
        assert_eq!(grid.dimensions(), (18, 18));
        assert_eq!(grid.get_pixel(2, 2)[0], 200);
        assert_eq!(grid.get_pixel(10, 2)[0], 10);
        assert_eq!(grid.get_pixel(2, 10)[0], 200);
        assert_eq!(grid.get_pixel(10, 10)[0], 255, "the empty cell stays white");
    }
}
