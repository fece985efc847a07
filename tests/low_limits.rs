//! A GPU with small storage bindings, at small sizes: devices opened with limits far below
//! lavapipe's (wgpu itself then refuses any larger binding). Training splits its work to fit
//! (convolutions cut their im2col matrices into chunks, batches whose activations exceed a binding
//! go in micro-batches), a model that cannot fit fails alone, and the next one trains as on a
//! fresh device.

use netmorph::autograd::{Tape, Var};
use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::data::{ImageSet, RandomShift};
use netmorph::device::DeviceOptions;
use netmorph::graph::Op;
use netmorph::graph::{CnnConfig, Graph, Model};
use netmorph::optim::sgd::Sgd;
use netmorph::search::classifier::{ClassifierConfig, Generator, ImageClassifier};
use netmorph::search::Status;
use netmorph::train::{fit, micro_batch_size, micro_batches_for, FitConfig, LrSchedule, Network};
use netmorph::{Device, Tensor};
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
    train_network(&model, device, data, batch_size)?;
    Ok(weights(&model.to_graph()?))
}

/// One epoch of SGD of `net`; its mean training loss.
fn train_network(net: &dyn Network, device: &Device, data: &ImageSet, batch_size: usize) -> netmorph::Result<f64> {
    let train = DeviceDataset::new(device, data)?;
    let cfg = FitConfig { epochs: 1, batch_size, seed: 7, verbose: false, ..FitConfig::default() };
    let history = fit(net, &mut Sgd::new(0.05), &train, None, &cfg)?;
    Ok(history.epochs[0].loss)
}

/// A model that does not say how large its activations are, so training does not plan
/// micro-batches and an activation too large for a binding fails in the middle of a step.
struct Unplanned(Model);

impl Network for Unplanned {
    fn forward(&self, tape: &Tape, x: &Var, training: bool, seed: u64) -> netmorph::Result<Var> {
        self.0.forward(tape, x, training, seed)
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.0.parameters()
    }
    fn state(&self) -> Vec<Tensor> {
        self.0.state()
    }
}

/// The seed model with its dropout rates at 0: a micro-batched step is then the same sum of
/// gradients as a whole one, up to the order of the additions.
fn seed_model_without_dropout() -> Graph {
    let mut graph = Graph::keras_mnist_convnet(&[1, 28, 28], 10, 3).unwrap();
    let dropouts: Vec<_> = graph.layers().iter().filter(|l| matches!(l.op, Op::Dropout { .. })).map(|l| l.id).collect();
    assert_eq!(dropouts.len(), 2);
    for id in dropouts {
        graph.layer_mut(id).op = Op::Dropout { rate: 0.0 };
    }
    graph
}

/// The seed model's largest activation, its second conv's output: 64 x 24 x 24 floats an image.
const SEED_LARGEST_BYTES: u64 = 64 * 24 * 24 * 4;

fn weights(graph: &Graph) -> Vec<f32> {
    graph.layers().iter().flat_map(|l| l.params.values().flat_map(|p| p.data.clone())).collect()
}

fn max_relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-6) as f64;
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64 / scale).fold(0.0, f64::max)
}

/// The seed model (the Keras MNIST convnet) at its own batch of 128 under 16 MiB bindings: its
/// second conv's output (128 x 64 x 24 x 24 floats, 18.9 MB) exceeds the binding, so each step
/// goes in micro-batches of 113 and 15 images; its im2col matrices (113 x 576 x 288 floats,
/// 75 MB) go in chunks. Without dropout, two micro-batched steps give the weights that the
/// unlimited device's whole steps give, up to the order of the additions.
#[test]
fn the_seed_model_trains_at_batch_128_in_micro_batches_under_16_mib_bindings() {
    let small = device_with_bindings_of(16 * MIB);
    let full = netmorph::testing::device();
    let graph = seed_model_without_dropout();
    let model = Model::new(&graph, &small).unwrap();
    assert_eq!(model.largest_tensor_bytes_per_image(), Some(SEED_LARGEST_BYTES));
    assert_eq!(micro_batch_size(&model, &small, 128).unwrap(), 113);
    assert_eq!(micro_batch_size(&model, &full, 128).unwrap(), 128, "lavapipe's bindings hold the whole batch");
    let data = mnist_train(256);
    let limited = train_once(&small, &graph, &data, 128).expect("training under 16 MiB bindings");
    let reference = train_once(&full, &graph, &data, 128).unwrap();
    let before = weights(&graph);
    assert!(max_relative_difference(&before, &reference) > 1e-3, "the steps changed the weights");
    let diff = max_relative_difference(&limited, &reference);
    assert!(diff < 1e-5, "the micro-batched steps differ from the whole ones by {diff:e} of the largest weight");
    // The seed model itself, dropout and all: each micro-batch draws its own masks.
    let seed_model = Model::new(&Graph::keras_mnist_convnet(&[1, 28, 28], 10, 3).unwrap(), &small).unwrap();
    let loss = train_network(&seed_model, &small, &mnist_train(384), 128).expect("the seed model under 16 MiB bindings");
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    let accuracy = netmorph::train::evaluate(&seed_model, &DeviceDataset::new(&small, &mnist_train(200)).unwrap(), 128).unwrap();
    assert!(accuracy.loss.is_finite(), "evaluation at batch 128 goes in micro-batches too: {accuracy:?}");
}

/// Batch norm under micro-batching normalises each micro-batch by its own statistics and
/// updates its running statistics; training still learns.
#[test]
fn batch_norm_trains_in_micro_batches() {
    let small = device_with_bindings_of(2 * MIB);
    // 64 x 28 x 28 floats (200 KB) an image after the first conv: micro-batches of 10.
    let graph = Graph::cnn(&[1, 28, 28], 10, &CnnConfig { blocks: 2, width: 64, dense: 16, ..CnnConfig::default() }, 1).unwrap();
    let model = Model::new(&graph, &small).unwrap();
    assert_eq!(micro_batch_size(&model, &small, 32).unwrap(), 10);
    let running = |g: &Graph| -> Vec<f32> {
        g.layers().iter().filter(|l| matches!(l.op, Op::BatchNorm { .. })).flat_map(|l| l.params["running_mean"].data.clone()).collect()
    };
    let before = running(&graph);
    let data = mnist_train(192);
    let first = train_network(&model, &small, &data, 32).expect("micro-batched training with batch norm");
    let second = train_network(&model, &small, &data, 32).unwrap();
    let after = running(&model.to_graph().unwrap());
    assert!(after.iter().all(|v| v.is_finite()), "{after:?}");
    assert_ne!(before, after, "the running statistics moved");
    assert!(second < first, "the loss fell from epoch to epoch: {first} then {second}");
}

#[test]
fn the_micro_batch_is_the_most_images_a_binding_holds() {
    assert_eq!(micro_batches_for(128, SEED_LARGEST_BYTES, 16 * MIB), Some(113));
    assert_eq!(micro_batches_for(64, SEED_LARGEST_BYTES, 16 * MIB), Some(64));
    assert_eq!(micro_batches_for(128, 100, 100), Some(1));
    assert_eq!(micro_batches_for(128, 101, 100), None);
    assert_eq!(micro_batches_for(128, 0, 100), Some(128));
    let small = device_with_bindings_of(2 * MIB);
    // 1024 x 28 x 28 floats (3.2 MB) for a single image.
    let huge = Graph::cnn(&[1, 28, 28], 10, &CnnConfig { blocks: 1, width: 1024, dense: 16, ..CnnConfig::default() }, 1).unwrap();
    let err = micro_batch_size(&Model::new(&huge, &small).unwrap(), &small, 32).unwrap_err();
    assert!(err.is_resource_failure(), "{err}");
    let text = err.to_string();
    assert!(text.contains("the largest activation of one image") && text.contains("3211264") && text.contains("2097152"), "{text}");
}

/// A model whose activations cannot fit a 2 MiB binding, and which plans no micro-batches, fails
/// in the middle of a step as too large for the device, and the next model, on the same device,
/// trains exactly as it does on a fresh one.
#[test]
fn after_a_model_too_large_for_the_device_the_next_trains_normally() {
    let data = mnist_train(96);
    let small = device_with_bindings_of(2 * MIB);
    // 32 x 64 x 28 x 28 floats (6.4 MB) after the first conv.
    let wide = Graph::cnn(&[1, 28, 28], 10, &CnnConfig { blocks: 2, width: 64, dense: 16, ..CnnConfig::default() }, 1).unwrap();
    let unplanned = Unplanned(Model::new(&wide, &small).unwrap());
    let err = train_network(&unplanned, &small, &data, 32).expect_err("a 6.4 MB activation in 2 MiB bindings");
    assert!(err.is_resource_failure(), "{err}");
    drop(unplanned);
    small.trim_pool();
    small.sync().expect("no error is left queued for the next model");

    let narrow = Graph::cnn(&[1, 28, 28], 10, &CnnConfig { blocks: 2, width: 8, dense: 16, ..CnnConfig::default() }, 2).unwrap();
    let after_failure = train_once(&small, &narrow, &data, 32).expect("the next model trains");
    let fresh = train_once(&device_with_bindings_of(2 * MIB), &narrow, &data, 32).unwrap();
    assert_eq!(after_failure, fresh, "the model after the failure trains bit for bit as on a fresh device");
}

/// A search under 2 MiB bindings: the first generator is too wide for the device (one image's
/// activation exceeds a binding) and is recorded as a resource failure; the second, whose batch
/// exceeds a binding, and its children train in micro-batches (their convs in chunks), and the
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
            Generator::Cnn(CnnConfig { blocks: 1, width: 1024, dense: 16, ..Default::default() }),
            Generator::Cnn(CnnConfig { blocks: 2, width: 64, dense: 16, ..Default::default() }),
        ],
        batch_size: Some(32),
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
