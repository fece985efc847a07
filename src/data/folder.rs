//! Image folders: one subfolder per class, named by the class.
//!
//! ```text
//! path/cat/001.png  path/dog/a.jpg ...              one set, split into train and test
//! path/train/cat/...  path/test/cat/...             the split given (test classes ⊆ train's)
//! ```
//!
//! Class names are the folder names, sorted (label `i` is the `i`-th); at most 256 classes. In a
//! class folder, the files named `*.png`, `*.jpg`, `*.jpeg`, `*.bmp`, `*.gif` (any case) are
//! images, in name order; other files, hidden files and subfolders are ignored. The content, not
//! the extension, decides how a file is decoded.
//!
//! Colour: grayscale images give one channel, colour images three; the set takes three if any
//! image has colour (grayscale ones are replicated). Alpha is dropped. 16-bit images are scaled to
//! 8 bits; a GIF gives its first frame.
//!
//! Size: every image must have the same height and width unless [`LoadOptions::resize`] is set, in
//! which case each is resized (bilinear) to it. Decoding runs on all cores. A decoder may allocate
//! at most 256 MiB for one image and sides are limited to 16,384 pixels, so a file that declares
//! 100000x100000 pixels is an error, not an out-of-memory abort.

use super::load::{ImageFile, LoadOptions, RawData, RawFiles};
use super::mnist::ImageSet;
use crate::error::{Error, Result};
use image::{imageops::FilterType, DynamicImage, GrayImage, ImageReader, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest height or width of an image, decoded or resized to.
pub const MAX_SIDE: usize = 16_384;
/// Most a decoder may allocate for one image.
pub const MAX_DECODE_ALLOC: u64 = 256 << 20;
/// File extensions read as images (compared lower-cased).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "gif"];

/// Where the class folders are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderLayout {
    /// The folder whose subfolders are the training classes.
    pub train: PathBuf,
    /// `path/test`, when `path/train` and `path/test` both hold class folders.
    pub test: Option<PathBuf>,
}

/// The layout of `path` when it looks like an image folder: `train/` and `test/` of class folders,
/// or class folders directly.
pub fn find(path: &Path) -> Result<Option<FolderLayout>> {
    let (train, test) = (path.join("train"), path.join("test"));
    if !subfolders(&train)?.is_empty() {
        let test = (!subfolders(&test)?.is_empty()).then_some(test);
        return Ok(Some(FolderLayout { train, test }));
    }
    if subfolders(path)?.is_empty() {
        return Ok(None);
    }
    Ok(Some(FolderLayout { train: path.to_path_buf(), test: None }))
}

/// The threads to decode with: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Loads an image folder, decoding on `threads` threads.
pub fn load_image_folder(path: &Path, options: &LoadOptions, threads: usize) -> Result<super::LoadedData> {
    let layout = find(path)?.ok_or_else(|| Error::format(path, "no class subfolders (path/<class>/ or path/train/<class>/)"))?;
    let (raw, files) = load(&layout, options, threads)?;
    super::load::finish(super::DataFormat::ImageFolder, raw, files, options)
}

/// The images, and the file behind each (its own size and channels, before resizing).
pub(crate) fn load(layout: &FolderLayout, options: &LoadOptions, threads: usize) -> Result<(RawData, RawFiles)> {
    if let Some([h, w]) = options.resize {
        check_side(h, w)?;
    }
    let class_dirs = subfolders(&layout.train)?;
    if class_dirs.len() > 256 {
        return Err(Error::format(&layout.train, format!("{} class folders, at most 256 are supported", class_dirs.len())));
    }
    let class_names: Vec<String> =
        class_dirs.iter().map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    let mut files = list_images(&class_dirs)?;
    let n_train = files.len();
    if let Some(test_root) = &layout.test {
        let test_dirs = subfolders(test_root)?;
        let mut test_dirs_by_label = vec![];
        for dir in &test_dirs {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let Some(label) = class_names.iter().position(|c| *c == name) else {
                return Err(Error::format(dir, format!("test class `{name}` has no folder in {}", layout.train.display())));
            };
            test_dirs_by_label.push((label, dir.clone()));
        }
        for (label, dir) in test_dirs_by_label {
            let listed = list_images(std::slice::from_ref(&dir))?;
            files.extend(listed.into_iter().map(|(_, path)| (label as u8, path)));
        }
    }
    let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    let resize = options.resize;
    // The file's own shape is read here, from the one decode.
    let decoded = parallel_map(&paths, threads, |path| {
        decode_file(path).map(|img| {
            let file = ImageFile {
                path: path.to_path_buf(),
                width: img.width() as usize,
                height: img.height() as usize,
                channels: img.color().channel_count() as usize,
            };
            (to_pixels(img, resize), file)
        })
    });

    let mut skipped = vec![];
    let mut kept: Vec<(bool, u8, Pixels, ImageFile)> = vec![]; // (is test, label, pixels, file)
    for (i, (result, (label, path))) in decoded.into_iter().zip(&files).enumerate() {
        match result {
            Ok((pixels, file)) => kept.push((i >= n_train, *label, Pixels { index: i, ..pixels }, file)),
            Err(e) if options.skip_bad => skipped.push((path.clone(), e.to_string())),
            Err(e) => return Err(e),
        }
    }
    // A class whose every file was skipped is as empty as an empty folder.
    for (label, dir) in class_dirs.iter().enumerate() {
        if !kept.iter().any(|(test, l, _, _)| !test && *l as usize == label) {
            return Err(Error::format(dir, format!("class folder has no readable images ({} skipped)", count_in(&skipped, dir))));
        }
    }
    let Some(first) = kept.first() else {
        return Err(Error::format(&layout.train, "no images"));
    };
    let (height, width) = (first.2.height, first.2.width);
    if let Some(odd) = kept.iter().find(|k| (k.2.height, k.2.width) != (height, width)) {
        let name = |p: &Pixels| paths[p.index].display().to_string();
        return Err(Error::format(
            &paths[odd.2.index],
            format!(
                "images differ in size: this one is {}x{} (HxW), {} is {height}x{width}; pass --resize HxW to resize them all",
                odd.2.height,
                odd.2.width,
                name(&first.2)
            ),
        ));
    }
    let channels = if kept.iter().any(|k| k.2.channels == 3) { 3 } else { 1 };
    let classes = class_names.len();
    let build = |want_test: bool| {
        let chosen: Vec<&(bool, u8, Pixels, ImageFile)> = kept.iter().filter(|k| k.0 == want_test).collect();
        let mut images = Vec::with_capacity(chosen.len() * channels * height * width);
        for (_, _, pixels, _) in &chosen {
            pixels.append_planar(channels, &mut images);
        }
        let files = chosen.iter().map(|k| k.3.clone()).collect::<Vec<_>>();
        ImageSet::new(images, chosen.iter().map(|k| k.1).collect(), channels, height, width, classes).map(|set| (set, files))
    };
    let (train, train_files) = build(false)?;
    let (test, test_files) = if layout.test.is_some() {
        let (test, files) = build(true)?;
        (Some(test), files)
    } else {
        (None, vec![])
    };
    Ok((RawData { train, test, class_names, skipped }, RawFiles { train: train_files, test: test_files }))
}

/// Reads image files for prediction: NCHW bytes with `channels` channels (1 or 3; colour is
/// averaged to gray by luminance, gray replicated, alpha dropped) of `height` x `width`. An image
/// of another size is resized (bilinear) when `resize`, else an error naming the file and both
/// sizes.
pub fn read_images(paths: &[PathBuf], channels: usize, height: usize, width: usize, resize: bool) -> Result<Vec<u8>> {
    if channels != 1 && channels != 3 {
        return Err(Error::Invalid(format!("read_images: {channels} channels, expected 1 (gray) or 3 (RGB)")));
    }
    check_side(height, width)?;
    let decode = |path: &Path| -> Result<Vec<u8>> {
        let img = decode_file(path)?;
        let (h, w) = (img.height() as usize, img.width() as usize);
        let img = if (h, w) == (height, width) {
            img
        } else if resize {
            img.resize_exact(width as u32, height as u32, FilterType::Triangle)
        } else {
            return Err(Error::format(
                path,
                format!("image is {h}x{w} (HxW), the model takes {height}x{width}; resize it or pass --resize"),
            ));
        };
        let pixels = if channels == 1 { Pixels::gray(img.to_luma8(), 0) } else { Pixels::rgb(img.to_rgb8(), 0) };
        let mut out = Vec::with_capacity(channels * height * width);
        pixels.append_planar(channels, &mut out);
        Ok(out)
    };
    let decoded = parallel_map(paths, default_threads(), decode);
    let mut out = Vec::with_capacity(paths.len() * channels * height * width);
    for image in decoded {
        out.extend_from_slice(&image?);
    }
    Ok(out)
}

/// One decoded image: gray or interleaved RGB, and its index in the file list (for errors).
struct Pixels {
    channels: usize,
    height: usize,
    width: usize,
    data: Vec<u8>,
    index: usize,
}

impl Pixels {
    fn gray(img: GrayImage, index: usize) -> Pixels {
        Pixels { channels: 1, height: img.height() as usize, width: img.width() as usize, data: img.into_raw(), index }
    }
    fn rgb(img: RgbImage, index: usize) -> Pixels {
        Pixels { channels: 3, height: img.height() as usize, width: img.width() as usize, data: img.into_raw(), index }
    }

    /// Appends the image as `channels` planes (CHW), replicating gray into RGB.
    fn append_planar(&self, channels: usize, out: &mut Vec<u8>) {
        if self.channels == 1 {
            for _ in 0..channels {
                out.extend_from_slice(&self.data);
            }
        } else {
            for c in 0..3 {
                out.extend(self.data.iter().skip(c).step_by(3));
            }
        }
    }
}

/// The decoded image as gray or RGB, resized when asked.
fn to_pixels(img: DynamicImage, resize: Option<[usize; 2]>) -> Pixels {
    let img = match resize {
        Some([h, w]) if (img.height() as usize, img.width() as usize) != (h, w) => {
            img.resize_exact(w as u32, h as u32, FilterType::Triangle)
        }
        _ => img,
    };
    if img.color().has_color() {
        Pixels::rgb(img.to_rgb8(), 0)
    } else {
        Pixels::gray(img.to_luma8(), 0)
    }
}

/// Decodes one file under [`MAX_SIDE`] and [`MAX_DECODE_ALLOC`].
pub fn decode_file(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(path, &bytes)
}

/// Decodes image bytes (`path` only names them in errors).
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::format(path, format!("cannot read image: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::format(path, "not a PNG, JPEG, BMP or GIF image (unrecognised content)"));
    }
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE as u32);
    limits.max_image_height = Some(MAX_SIDE as u32);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    reader.decode().map_err(|e| Error::format(path, format!("cannot decode image: {e}")))
}

fn check_side(h: usize, w: usize) -> Result<()> {
    if h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE {
        return Err(Error::Invalid(format!("image size {h}x{w}: each side must be in 1..={MAX_SIDE}")));
    }
    Ok(())
}

/// Maps `f` over `items` on `threads` threads (taking the next item as each finishes one), results
/// in item order.
fn parallel_map<T: Send>(items: &[PathBuf], threads: usize, f: impl Fn(&Path) -> Result<T> + Sync) -> Vec<Result<T>> {
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, items.len().max(1));
    let mut tagged: Vec<(usize, Result<T>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = vec![];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = items.get(i) else { break };
                        done.push((i, f(path)));
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    tagged.sort_by_key(|(i, _)| *i);
    tagged.into_iter().map(|(_, r)| r).collect()
}

/// The visible subfolders of `dir`, sorted by name; none when `dir` is not a folder.
fn subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let visible = !entry.file_name().to_string_lossy().starts_with('.');
        if visible && entry.path().is_dir() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// (label, path) of every image file in the class folders, label = position in `class_dirs`; an
/// empty class folder is an error naming it.
fn list_images(class_dirs: &[PathBuf]) -> Result<Vec<(u8, PathBuf)>> {
    let mut files = vec![];
    for (label, dir) in class_dirs.iter().enumerate() {
        let mut in_class = vec![];
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            if !name.starts_with('.') && IMAGE_EXTENSIONS.contains(&extension.as_str()) && path.is_file() {
                in_class.push(path);
            }
        }
        if in_class.is_empty() {
            return Err(Error::format(dir, "empty class folder: no PNG, JPEG, BMP or GIF files"));
        }
        in_class.sort();
        files.extend(in_class.into_iter().map(|p| (label as u8, p)));
    }
    Ok(files)
}

fn count_in(skipped: &[(PathBuf, String)], dir: &Path) -> usize {
    skipped.iter().filter(|(p, _)| p.starts_with(dir)).count()
}
