//! A GPU with small storage bindings, at small sizes: devices opened with limits far below
//! lavapipe's (wgpu itself then refuses any larger binding). Training splits its work to fit, a
//! model that cannot fit fails alone, and the next one trains as on a fresh device.

use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::data::{ImageSet, RandomShift};
use netmorph::device::DeviceOptions;
use netmorph::graph::{CnnConfig, Graph, Model};
use netmorph::optim::sgd::Sgd;
use netmorph::search::classifier::{ClassifierConfig, Generator, ImageClassifier};
use netmorph::search::Status;
use netmorph::train::{fit, FitConfig, LrSchedule};
use netmorph::Device;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn device_with_bindings_of(bytes: u64) -> Device {
    let device = Device::with_options(&DeviceOptions { max_binding_bytes: Some(bytes), ..DeviceOptions::default() }).unwrap();
    assert_eq!(device.limits().max_storage_buffer_binding_size, bytes, "wgpu opened the device with the lowered limit");
    assert_eq!(device.max_binding_bytes(), bytes);
    device
}

fn mnist_train(n: usize) -> ImageSet {
    Mnist::load(default_data_dir()).expect("MNIST in data/mnist").train.take(n)
}

/// One epoch of SGD from the graph's weights; the trained weights, flattened.
fn train_once(device: &Device, graph: &Graph, data: &ImageSet, batch_size: usize) -> netmorph::Result<Vec<f32>> {
    let model = Model::new(graph, device)?;
    let train = DeviceDataset::new(device, data)?;
    let cfg = FitConfig { epochs: 1, batch_size, seed: 7, verbose: false, ..FitConfig::default() };
    fit(&model, &mut Sgd::new(0.05), &train, None, &cfg)?;
    Ok(weights(&model.to_graph()?))
}

fn weights(graph: &Graph) -> Vec<f32> {
    graph.layers().iter().flat_map(|l| l.params.values().flat_map(|p| p.data.clone())).collect()
}

fn max_relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-6) as f64;
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64 / scale).fold(0.0, f64::max)
}

/// The seed model (the Keras MNIST convnet) at batch 64 under 16 MiB bindings: its second conv's
/// im2col matrix (64 x 576 x 288 floats, 42 MB) and the matching input-gradient matrix exceed the
/// binding and go in chunks. Two training steps give the weights that the unlimited device gives,
/// up to the summation order of the chunks.
#[test]
fn the_seed_model_trains_in_chunks_under_16_mib_bindings() {
    let small = device_with_bindings_of(16 * MIB);
    let full = netmorph::testing::device();
    let graph = Graph::keras_mnist_convnet(&[1, 28, 28], 10, 3).unwrap();
    let data = mnist_train(128);
    let limited = train_once(&small, &graph, &data, 64).expect("training under 16 MiB bindings");
    let reference = train_once(&full, &graph, &data, 64).unwrap();
    let before = weights(&graph);
    assert!(max_relative_difference(&before, &reference) > 1e-3, "the steps changed the weights");
    let diff = max_relative_difference(&limited, &reference);
    assert!(diff < 1e-5, "the chunked steps differ from the unchunked ones by {diff:e} of the largest weight");
}

/// A model whose activations cannot fit a 2 MiB binding fails as too large for the device, and
/// the next model, on the same device, trains exactly as it does on a fresh one.
#[test]
fn after_a_model_too_large_for_the_device_the_next_trains_normally() {
    let data = mnist_train(96);
    let small = device_with_bindings_of(2 * MIB);
    // 32 x 64 x 28 x 28 floats (6.4 MB) after the first conv.
    let wide = Graph::cnn(&[1, 28, 28], 10, &CnnConfig { blocks: 2, width: 64, dense: 16, ..CnnConfig::default() }, 1).unwrap();
    let err = train_once(&small, &wide, &data, 32).expect_err("a 6.4 MB activation in 2 MiB bindings");
    assert!(err.is_resource_failure(), "{err}");
    small.trim_pool();
    small.sync().expect("no error is left queued for the next model");

    let narrow = Graph::cnn(&[1, 28, 28], 10, &CnnConfig { blocks: 2, width: 8, dense: 16, ..CnnConfig::default() }, 2).unwrap();
    let after_failure = train_once(&small, &narrow, &data, 32).expect("the next model trains");
    let fresh = train_once(&device_with_bindings_of(2 * MIB), &narrow, &data, 32).unwrap();
    assert_eq!(after_failure, fresh, "the model after the failure trains bit for bit as on a fresh device");
}

/// A search under 2 MiB bindings: the first generator is too wide for the device and is recorded
/// as a resource failure; the second and its children train (their convs in chunks) and the
/// search ends with a best model.
#[test]
fn a_search_runs_under_2_mib_bindings() {
    let dir = std::env::temp_dir().join(format!("netmorph-low-limits-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let small = device_with_bindings_of(2 * MIB);
    let config = ClassifierConfig {
        search_dir: dir.clone(),
        seed: 1,
        generators: vec![
            Generator::Cnn(CnnConfig { blocks: 2, width: 64, dense: 16, ..Default::default() }),
            Generator::Cnn(CnnConfig { blocks: 2, width: 8, dense: 16, ..Default::default() }),
        ],
        batch_size: 32,
        max_epochs: 1,
        child_epochs: 1,
        max_models: Some(3),
        shift: Some(RandomShift { max: 0 }),
        lr_schedule: LrSchedule::Constant,
        verbose: false,
        ..Default::default()
    };
    let mut classifier = ImageClassifier::new(&small, config);
    let result = classifier.fit(&mnist_train(400), Duration::from_secs(300)).expect("the search").clone();
    let statuses: Vec<&Status> = result.records.iter().map(|r| &r.status).collect();
    assert!(matches!(statuses[0], Status::Failed { resource: true, .. }), "{statuses:?}");
    assert!(result.records[1..].iter().all(|r| r.finished()), "{statuses:?}");
    assert!(result.records.len() >= 3, "{statuses:?}");
    assert!(result.best_record().val_accuracy.unwrap() > 0.2, "{:?}", result.best_record());
    std::fs::remove_dir_all(&dir).unwrap();
}
