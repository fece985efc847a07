//! Data sets larger than a storage binding, streamed to the device in chunks: a device whose
//! binding limit is lowered makes small sets "too large", and the streamed batches must be the
//! resident ones, byte for byte, every image once per epoch; and a ~300 MB colour set streams
//! through lavapipe's real 128 MiB limit.

use netmorph::autograd::{Tape, Var};
use netmorph::data::{Augmentation, BatchOrder, DeviceDataset, ImageAugment, ImageSet, Mnist, Residency};
use netmorph::optim::sgd::Sgd;
use netmorph::testing::{device, rng, InputRecorder};
use netmorph::train::{evaluate, fit, logits, FitConfig, Network};
use netmorph::{Device, Result, Tensor};
use rand::Rng;

/// `n` images of `c`x`h`x`w` whose bytes differ between images and positions.
fn synthetic_set(n: usize, c: usize, h: usize, w: usize, classes: usize, seed: usize) -> ImageSet {
    let images: Vec<u8> = (0..n * c * h * w).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) ^ seed) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| ((i * 7 + seed) % classes) as u8).collect();
    ImageSet::new(images, labels, c, h, w, classes).unwrap()
}

/// Gathers every batch of `batches` from `data` and checks it against the CPU reference; returns
/// how often each image was seen.
fn check_pass(data: &DeviceDataset, set: &ImageSet, batches: Vec<Vec<u32>>, augmentation: Augmentation, what: &str) -> Vec<u32> {
    let mut seen = vec![0u32; set.n];
    let mut pass = data.batches(batches).unwrap();
    for step in 0..pass.len() {
        let indices = pass.indices(step).to_vec();
        let augments = augmentation.draw(indices.len(), step as u64);
        let (x, y) = pass.gather(step, &augments).unwrap();
        assert_eq!(x.shape(), &[indices.len(), set.channels, set.height, set.width]);
        assert!(x.to_vec().unwrap() == set.gather_f32_augmented(&indices, &augments), "{what}: batch {step} differs from the CPU gather");
        let labels: Vec<u32> = indices.iter().map(|&i| set.labels[i as usize] as u32).collect();
        assert_eq!(y.to_u32_vec().unwrap(), labels, "{what}: labels of batch {step}");
        // The same batch in two parts, as training gathers micro-batches.
        let cut = indices.len() / 3;
        for part in [0..cut, cut..indices.len()].into_iter().filter(|p| !p.is_empty()) {
            let (x, y) = pass.gather_part(step, part.clone(), &augments[part.clone()]).unwrap();
            let want = set.gather_f32_augmented(&indices[part.clone()], &augments[part.clone()]);
            assert!(x.to_vec().unwrap() == want, "{what}: images {part:?} of batch {step} differ from the CPU gather");
            assert_eq!(y.to_u32_vec().unwrap(), labels[part].to_vec(), "{what}: labels of a part of batch {step}");
        }
        if step == 0 {
            let err = pass.gather_part(0, 0..indices.len() + 1, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("images 0..{} of batch 0, which holds {}", indices.len() + 1, indices.len())), "{err}");
        }
        indices.iter().for_each(|&i| seen[i as usize] += 1);
    }
    if data.is_streamed() {
        assert_eq!(pass.chunks_uploaded(), pass.chunks(), "{what}: each chunk is uploaded once");
    }
    seen
}

#[test]
fn streamed_batches_equal_the_cpu_gather_and_cover_the_set_once() {
    let dev = device();
    // A 1 MiB binding: every set below is several times larger, and streams.
    let small = dev.with_max_binding_bytes(1 << 20);
    let mut r = rng(16);
    // Odd shapes (images that start anywhere in a 32-bit word), one and three channels, batches
    // that do not divide a chunk.
    let shapes = [(5000, 1, 28, 28, 100), (2500, 3, 17, 23, 61), (40_000, 3, 5, 7, 257), (3100, 4, 19, 15, 1)];
    for (k, &(n, c, h, w, batch)) in shapes.iter().enumerate() {
        let set = synthetic_set(n, c, h, w, 10, k);
        let data = DeviceDataset::new(&small, &set).unwrap();
        assert!(data.is_streamed(), "{} bytes over a 1 MiB binding", set.images.len());
        let what = format!("{n} images of {c}x{h}x{w} in batches of {batch}");
        let order = BatchOrder::new(n, batch, r.random()).unwrap();
        let chunks = data.batches(order.epoch(3)).unwrap().chunks();
        assert!(chunks >= 3 && chunks <= set.images.len().div_ceil(1 << 20) + 2, "{what}: {chunks} chunks");
        let augmentation = Augmentation { shift: netmorph::data::RandomShift { max: h.min(w) / 3 }, flip: true, ..Augmentation::NONE };
        let seen = check_pass(&data, &set, order.epoch(3), augmentation, &what);
        assert!(seen.iter().all(|&s| s == 1), "{what}: an epoch sees every image once");
        let seen = check_pass(&data, &set, order.sequential(), Augmentation::NONE, &what);
        assert!(seen.iter().all(|&s| s == 1), "{what}: a sequential pass sees every image once");
        // Random access on a streamed set: the batch is gathered and uploaded alone.
        let indices: Vec<u32> = (0..batch.min(50)).map(|_| r.random_range(0..n as u32)).collect();
        let augments = augmentation.draw(indices.len(), 9);
        let (x, _) = data.batch_augmented(&indices, &augments).unwrap();
        assert!(x.to_vec().unwrap() == set.gather_f32_augmented(&indices, &augments), "{what}: random access");
    }
}

#[test]
fn residency_follows_the_binding_limit_and_the_budget() {
    let dev = device();
    let set = synthetic_set(1000, 1, 16, 16, 10, 0); // 256,000 bytes
    assert!(!DeviceDataset::new(&dev, &set).unwrap().is_streamed());
    assert!(DeviceDataset::new(&dev.with_max_binding_bytes(200_000), &set).unwrap().is_streamed());
    let budget = DeviceDataset::with_residency(&dev, &set, Residency::Auto { budget: 100_000 }).unwrap();
    assert!(budget.is_streamed());
    assert_eq!(budget.images_per_chunk(), Some(50_000 / 256), "two chunks within the budget");
    let forced = DeviceDataset::with_residency(&dev, &set, Residency::Streamed { chunk_bytes: 10_000 }).unwrap();
    assert_eq!(forced.images_per_chunk(), Some(39));
    // Too large for the binding when forced resident, a batch larger than a chunk, an image
    // larger than a chunk: errors that say so.
    let e = DeviceDataset::with_residency(&dev.with_max_binding_bytes(200_000), &set, Residency::Resident).err().unwrap();
    assert!(e.to_string().contains("200000"), "{e}");
    let e = forced.batches(BatchOrder::new(1000, 40, 0).unwrap().sequential()).err().unwrap().to_string();
    assert!(e.contains("batch of 40 images") && e.contains("chunk of 39 images"), "{e}");
    let e = DeviceDataset::with_residency(&dev, &set, Residency::Streamed { chunk_bytes: 255 }).err().unwrap().to_string();
    assert!(e.contains("256 bytes") && e.contains("255 bytes"), "{e}");
    // A streamed pass goes forward: a batch of a dropped chunk is refused.
    let mut pass = forced.batches(BatchOrder::new(1000, 39, 0).unwrap().sequential()).unwrap();
    pass.gather(0, &[]).unwrap();
    pass.gather(5, &[]).unwrap();
    let e = pass.gather(0, &[]).err().unwrap().to_string();
    assert!(e.contains("already dropped"), "{e}");
    let e = forced.batches(vec![vec![0, 1000]]).err().unwrap().to_string();
    assert!(e.contains("index 1000"), "{e}");
}

/// Softmax regression: the same arithmetic on any device, whatever its binding limit.
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Network for Linear {
    fn forward(&self, tape: &Tape, x: &Var, _training: bool, _seed: u64) -> Result<Var> {
        let n = x.shape()[0];
        let x = tape.reshape(x, &[n, self.weight.shape()[0]])?;
        tape.dense(&x, &tape.param(&self.weight), Some(&tape.param(&self.bias)))
    }
    fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.clone(), self.bias.clone()]
    }
}

fn linear(dev: &Device, inputs: usize) -> Linear {
    let mut r = rng(3);
    let w: Vec<f32> = (0..inputs * 10).map(|_| r.random_range(-0.05..0.05)).collect();
    Linear { weight: Tensor::from_slice(dev, &w, &[inputs, 10]).unwrap(), bias: Tensor::zeros(dev, &[10]).unwrap() }
}

#[test]
fn a_streamed_epoch_trains_as_the_resident_one() {
    let dev = device();
    let mnist = Mnist::load(netmorph::data::default_data_dir()).unwrap();
    let (train, val) = (mnist.train.take(6000), mnist.test.take(1500));
    // 4.7 MB of training images over a 1 MiB binding: five chunks.
    let small = dev.with_max_binding_bytes(1 << 20);
    let cfg = FitConfig {
        epochs: 2,
        batch_size: 64,
        seed: 11,
        verbose: false,
        augmentation: Augmentation { shift: netmorph::data::RandomShift { max: 2 }, flip: true, ..Augmentation::NONE },
        ..FitConfig::default()
    };
    let mut runs = Vec::new();
    for (device, residency) in [(&dev, Residency::Resident), (&small, Residency::default())] {
        let train = DeviceDataset::with_residency(device, &train, residency).unwrap();
        let val = DeviceDataset::with_residency(device, &val, residency).unwrap();
        let net = linear(device, 784);
        let history = fit(&net, &mut Sgd::new(0.05).with_momentum(0.9, false), &train, Some(&val), &cfg).unwrap();
        let eval = evaluate(&net, &val, 100).unwrap();
        let out = logits(&net, &val, 128).unwrap();
        runs.push((train.is_streamed(), history.epochs, eval, out, net.weight.to_vec().unwrap()));
    }
    let (resident, streamed) = (&runs[0], &runs[1]);
    assert!(!resident.0 && streamed.0);
    assert_eq!(
        streamed.1.iter().map(|e| (e.loss, e.accuracy, e.val_loss)).collect::<Vec<_>>(),
        resident.1.iter().map(|e| (e.loss, e.accuracy, e.val_loss)).collect::<Vec<_>>(),
        "the same batches, the same steps"
    );
    assert!(resident.1[1].val_accuracy.unwrap() > 0.6, "it learns (of mirrored digits too): {:?}", resident.1);
    assert_eq!(streamed.2, resident.2);
    assert!(streamed.3 == resident.3, "logits of a streamed set");
    assert!(streamed.4 == resident.4, "the trained weights");
}

#[test]
fn a_300_mb_colour_set_streams_through_the_adapters_own_limit() {
    let dev = device();
    let (n, c, h, w) = (100_000, 3, 32, 32);
    let set = synthetic_set(n, c, h, w, 10, 1);
    assert!(set.images.len() > 2 * (128 << 20), "{} bytes", set.images.len());
    let start = std::time::Instant::now();
    // Over lavapipe's 128 MiB binding the set streams by itself; an adapter with larger bindings
    // is told to stream it, in chunks of the default size.
    let residency = if set.images.len() as u64 > dev.max_binding_bytes() {
        Residency::default()
    } else {
        Residency::Streamed { chunk_bytes: netmorph::data::dataset::DEFAULT_CHUNK_BYTES }
    };
    let data = DeviceDataset::with_residency(&dev, &set, residency).unwrap();
    assert!(data.is_streamed());
    let order = BatchOrder::new(n, 500, 4).unwrap();
    let chunks = data.batches(order.epoch(0)).unwrap().chunks();
    assert!(chunks >= 3, "{chunks} chunks");
    let seen = check_pass(&data, &set, order.epoch(0), Augmentation::for_image(c, h, w), "300 MB");
    assert!(seen.iter().all(|&s| s == 1), "an epoch sees every image once");
    eprintln!(
        "[streaming] {} MB in {chunks} chunks: gathered and checked in {:.1} s",
        set.images.len() / 1_000_000,
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn fit_flips_the_training_images_of_a_streamed_set_and_not_the_validation_ones() {
    let dev = device();
    let small = dev.with_max_binding_bytes(64 << 10);
    let (c, h, w) = (3, 8, 9);
    let set = synthetic_set(600, c, h, w, 4, 2); // 130 KB over a 64 KiB binding: two chunks
    let data = DeviceDataset::new(&small, &set).unwrap();
    assert!(data.is_streamed());
    let net = InputRecorder::new(&dev, c * h * w, 10).unwrap();
    let cfg = FitConfig {
        epochs: 1,
        batch_size: 50,
        seed: 3,
        verbose: false,
        augmentation: Augmentation { flip: true, ..Augmentation::NONE },
        ..FitConfig::default()
    };
    fit(&net, &mut Sgd::new(0.1), &data, Some(&data), &cfg).unwrap();
    let seen = net.take_seen();
    let order = BatchOrder::new(set.n, 50, 3).unwrap();
    let (training, validation) = seen.split_at(order.batches_per_epoch());
    let image_len = c * h * w;
    let mut flipped = 0;
    for ((is_training, x), indices) in training.iter().zip(order.epoch(1)) {
        assert!(is_training);
        for (k, &i) in indices.iter().enumerate() {
            let image = &x[k * image_len..][..image_len];
            let mirror = ImageAugment { shift: [0, 0], flip: true, ..ImageAugment::default() };
            if image == set.gather_f32_augmented(&[i], &[mirror]) {
                flipped += 1;
            } else {
                assert_eq!(image, set.gather_f32(&[i]), "training image {i} is itself or its mirror");
            }
        }
    }
    assert!((200..=400).contains(&flipped), "about half the images are mirrored: {flipped} of 600");
    for ((is_training, x), indices) in validation.iter().zip(order.sequential()) {
        assert!(!is_training);
        assert!(*x == set.gather_f32(&indices), "validation images are not augmented");
    }
}
