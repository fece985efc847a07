//! End-to-end training on real MNIST: a small convnet on the first 2,000 training images for one
//! epoch must reach 90% on the first 1,000 test images, and the training loop's contracts hold.

use netmorph::autograd::{Tape, Var};
use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::ops::conv2d::{Conv2dConfig, Padding};
use netmorph::ops::pool::Pool2dConfig;
use netmorph::optim::adam::Adam;
use netmorph::optim::sgd::Sgd;
use netmorph::optim::Optimizer;
use netmorph::testing::{device, InputRecorder};
use netmorph::train::{evaluate, fit, FitConfig, Network};
use netmorph::{Device, Error, Result, Tensor};
use rand::{Rng, SeedableRng};

struct SmallConvnet {
    params: Vec<Tensor>,
}

impl SmallConvnet {
    fn new(dev: &Device, seed: u64) -> SmallConvnet {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut glorot = |shape: &[usize], fan_in: usize, fan_out: usize| {
            let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
            let v: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.random_range(-limit..limit)).collect();
            Tensor::from_slice(dev, &v, shape).unwrap()
        };
        let params = vec![
            glorot(&[16, 1, 3, 3], 9, 144),
            Tensor::zeros(dev, &[16]).unwrap(),
            glorot(&[32, 16, 3, 3], 144, 288),
            Tensor::zeros(dev, &[32]).unwrap(),
            glorot(&[32 * 5 * 5, 10], 800, 10),
            Tensor::zeros(dev, &[10]).unwrap(),
        ];
        SmallConvnet { params }
    }
}

impl Network for SmallConvnet {
    fn forward(&self, tape: &Tape, x: &Var, _training: bool, _seed: u64) -> Result<Var> {
        let p: Vec<Var> = self.params.iter().map(|t| tape.param(t)).collect();
        let conv = Conv2dConfig { stride: 1, padding: Padding::Valid };
        let pool = Pool2dConfig { kernel: 2, stride: 2 };
        let x = tape.relu(&tape.conv2d(x, &p[0], Some(&p[1]), conv)?)?; // 26x26
        let x = tape.max_pool2d(&x, pool)?; // 13x13
        let x = tape.relu(&tape.conv2d(&x, &p[2], Some(&p[3]), conv)?)?; // 11x11
        let x = tape.max_pool2d(&x, pool)?; // 5x5
        let n = x.shape()[0];
        let x = tape.reshape(&x, &[n, 800])?;
        tape.dense(&x, &p[4], Some(&p[5]))
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.params.clone()
    }
}

fn mnist() -> Mnist {
    Mnist::load(default_data_dir()).expect("MNIST in data/mnist")
}

#[test]
fn one_epoch_on_2000_images_reaches_90_percent() {
    let dev = device();
    let data = mnist();
    let train = DeviceDataset::new(&dev, &data.train.take(2000)).unwrap();
    let test = DeviceDataset::new(&dev, &data.test.take(1000)).unwrap();
    let net = SmallConvnet::new(&dev, 7);
    let mut opt = Adam::new(2e-3, 0.9, 0.999, 1e-8, 0.0);
    let cfg = FitConfig { epochs: 1, batch_size: 10, seed: 7, verbose: false, ..FitConfig::default() };
    let history = fit(&net, &mut opt, &train, None, &cfg).unwrap();
    let score = evaluate(&net, &test, 100).unwrap();
    eprintln!(
        "[train] 1 epoch on 2000 images: loss {:.4} train acc {:.4}; test on 1000: loss {:.4} acc {:.4}",
        history.epochs[0].loss, history.epochs[0].accuracy, score.loss, score.accuracy
    );
    assert!(score.accuracy >= 0.90, "test accuracy {:.4} < 0.90", score.accuracy);
    assert!(history.epochs[0].loss.is_finite());
}

#[test]
fn label_smoothing_trains_and_the_validation_loss_stays_plain_cross_entropy() {
    use netmorph::ops::softmax::cpu;
    let dev = device();
    let data = mnist();
    let train = DeviceDataset::new(&dev, &data.train.take(256)).unwrap();
    let val = DeviceDataset::new(&dev, &data.test.take(64)).unwrap();
    let net = SmallConvnet::new(&dev, 5);
    let mut opt = Adam::new(2e-3, 0.9, 0.999, 1e-8, 0.0);
    let cfg = FitConfig { epochs: 3, batch_size: 32, seed: 5, verbose: false, label_smoothing: 0.2, ..FitConfig::default() };
    let h = fit(&net, &mut opt, &train, Some(&val), &cfg).unwrap();
    let losses: Vec<f64> = h.epochs.iter().map(|e| e.loss).collect();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "the smoothed training loss falls every epoch: {losses:?}");
    let reported = h.epochs.last().unwrap().val_loss.unwrap();
    assert_eq!(evaluate(&net, &val, 32).unwrap().loss, reported, "the reported validation loss is evaluate's");
    // ... which is the plain cross-entropy of the validation logits, not the smoothed one.
    let logits: Vec<f64> = netmorph::train::logits(&net, &val, 32).unwrap().into_iter().map(f64::from).collect();
    let labels: Vec<u32> = data.test.take(64).labels.iter().map(|&l| l as u32).collect();
    let plain = cpu::softmax_cross_entropy(&logits, &labels, 10);
    let smoothed = cpu::softmax_cross_entropy_smoothed(&logits, &labels, 10, 0.2);
    eprintln!(
        "[train] smoothed fit: training losses {losses:?}; validation: reported {reported:.5}, plain {plain:.5}, smoothed {smoothed:.5}"
    );
    assert!((reported - plain).abs() < 1e-4 * plain.max(1.0), "reported {reported} vs plain {plain}");
    assert!((reported - smoothed).abs() > 1e-2, "the smoothed loss differs enough to tell: {smoothed}");

    let bad = FitConfig { label_smoothing: 1.0, ..cfg };
    match fit(&net, &mut opt, &train, None, &bad) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("label smoothing 1"), "{msg}"),
        other => panic!("expected label smoothing 1 refused, got {other:?}"),
    }
}

#[test]
fn a_diverging_run_stops_with_a_message_naming_epoch_and_step() {
    let dev = device();
    let data = mnist();
    let train = DeviceDataset::new(&dev, &data.train.take(256)).unwrap();
    let net = SmallConvnet::new(&dev, 1);
    let mut opt = Sgd::new(1e20);
    let cfg = FitConfig { epochs: 3, batch_size: 32, seed: 1, verbose: false, log_every: 4, ..FitConfig::default() };
    match fit(&net, &mut opt, &train, None, &cfg) {
        Err(Error::Diverged(msg)) => assert!(msg.contains("epoch") && msg.contains("step"), "{msg}"),
        other => panic!("expected a divergence error, got {other:?}"),
    }
}

#[test]
fn early_stopping_and_deadline_end_training() {
    let dev = device();
    let data = mnist();
    let train = DeviceDataset::new(&dev, &data.train.take(64)).unwrap();
    let val = DeviceDataset::new(&dev, &data.test.take(64)).unwrap();
    let net = SmallConvnet::new(&dev, 2);
    // A learning rate of zero never improves the validation loss: patience 2 stops after 3 epochs.
    let mut opt = Sgd::new(0.0);
    let es = netmorph::train::EarlyStopping { patience: 2, min_delta: 1e-4 };
    let cfg = FitConfig { epochs: 10, batch_size: 32, verbose: false, early_stopping: Some(es), ..FitConfig::default() };
    let h = fit(&net, &mut opt, &train, Some(&val), &cfg).unwrap();
    assert_eq!(h.epochs.len(), 3, "{h:?}");
    assert!(h.stopped_early.is_some());
    let cfg = FitConfig { epochs: 10, batch_size: 32, verbose: false, deadline: Some(std::time::Instant::now()), ..FitConfig::default() };
    let h = fit(&net, &mut opt, &train, None, &cfg).unwrap();
    assert_eq!(h.epochs.len(), 1, "a passed deadline still finishes the current epoch, then stops");
}

#[test]
fn restore_best_puts_back_the_weights_and_batch_norm_statistics_of_the_best_epoch() {
    use netmorph::graph::{CnnConfig, Graph, Model};
    let dev = device();
    let data = mnist();
    let train = DeviceDataset::new(&dev, &data.train.take(64)).unwrap();
    let val = DeviceDataset::new(&dev, &data.test.take(64)).unwrap();
    let cfg_net = CnnConfig { blocks: 2, width: 4, dense: 8, ..CnnConfig::default() };
    let graph = Graph::cnn(&[1, 28, 28], 10, &cfg_net, 3).unwrap();
    let model = Model::new(&graph, &dev).unwrap();
    // Gradient ascent: every epoch's validation loss is worse than the one before, so the best is
    // epoch 1, and restoring it must reproduce epoch 1's validation figures exactly.
    let mut opt = Sgd::new(-0.05);
    let cfg = FitConfig { epochs: 3, batch_size: 32, verbose: false, restore_best: true, ..FitConfig::default() };
    let h = fit(&model, &mut opt, &train, Some(&val), &cfg).unwrap();
    let losses: Vec<f64> = h.epochs.iter().map(|e| e.val_loss.unwrap()).collect();
    assert!(losses.windows(2).all(|w| w[1] > w[0]), "ascent should worsen every epoch: {losses:?}");
    assert_eq!(h.restored_epoch, Some(1));
    assert_eq!(h.final_epoch().unwrap().epoch, 1);
    let after = evaluate(&model, &val, 32).unwrap();
    assert_eq!(after.loss, losses[0], "the restored model's validation loss");
    assert_eq!(Some(after.accuracy), h.epochs[0].val_accuracy);

    let cfg = FitConfig { restore_best: true, ..FitConfig::default() };
    match fit(&model, &mut opt, &train, None, &cfg) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("validation"), "{msg}"),
        other => panic!("restore_best without validation data must be refused, got {other:?}"),
    }
}

#[test]
fn a_stop_rule_ends_training_after_a_validated_epoch_and_the_best_is_restored() {
    use netmorph::graph::{CnnConfig, Graph, Model};
    use netmorph::train::StopRule;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dev = device();
    let data = mnist();
    let train = DeviceDataset::new(&dev, &data.train.take(64)).unwrap();
    let val = DeviceDataset::new(&dev, &data.test.take(64)).unwrap();
    let graph = Graph::cnn(&[1, 28, 28], 10, &CnnConfig { blocks: 2, width: 4, dense: 8, ..CnnConfig::default() }, 3).unwrap();
    let model = Model::new(&graph, &dev).unwrap();
    // Gradient ascent: epoch 1 is the best, and the rule stops after epoch 2, whose figures it saw.
    let mut opt = Sgd::new(-0.05);
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let rule = StopRule::new(move |epochs| {
        counter.fetch_add(1, Ordering::SeqCst);
        let last = epochs.last()?;
        let accuracy = last.val_accuracy?;
        (epochs.len() >= 2).then(|| format!("ranked out after epoch {} at {accuracy:.4}", last.epoch))
    });
    let cfg =
        FitConfig { epochs: 5, batch_size: 32, verbose: false, restore_best: true, stop_rule: Some(rule.clone()), ..FitConfig::default() };
    let h = fit(&model, &mut opt, &train, Some(&val), &cfg).unwrap();
    assert_eq!(h.epochs.len(), 2, "{h:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 2, "asked once an epoch");
    let why = h.stopped_early.clone().expect("the rule's reason");
    assert_eq!(why, format!("ranked out after epoch 2 at {:.4}", h.epochs[1].val_accuracy.unwrap()));
    assert_eq!(h.restored_epoch, Some(1));
    assert_eq!(evaluate(&model, &val, 32).unwrap().loss, h.epochs[0].val_loss.unwrap(), "the best epoch is restored");
    // After the last epoch the rule is not asked: training ended anyway.
    asked.store(0, Ordering::SeqCst);
    let cfg = FitConfig { epochs: 2, ..cfg };
    let h = fit(&model, &mut opt, &train, Some(&val), &cfg).unwrap();
    assert_eq!((h.epochs.len(), h.stopped_early.as_deref()), (2, None));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[test]
fn the_baseline_example_saves_a_model_that_loads_and_scores_the_same() {
    use netmorph::graph::{Graph, Model};
    let dir = std::env::temp_dir().join(format!("netmorph-baseline-save-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(netmorph::testing::example_binary("mnist_baseline"))
        .env("NETMORPH_TUNING", "off")
        .args(["--epochs", "1", "--train-limit", "256", "--test-limit", "200", "--save", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let printed: f64 = stdout.lines().find_map(|l| l.strip_prefix("Test accuracy: ")).expect(&stdout).trim().parse().unwrap();
    let graph = Graph::load(&dir.join("model.json"), &dir.join("model.safetensors")).unwrap();
    let dev = device();
    let model = Model::new(&graph, &dev).unwrap();
    let test = DeviceDataset::new(&dev, &mnist().test.take(200)).unwrap();
    let score = evaluate(&model, &test, 128).unwrap();
    assert!((score.accuracy - printed).abs() < 1e-4, "loaded model scores {} against the printed {printed}", score.accuracy);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Records the learning rate of every step and otherwise does nothing but wait `pause`.
struct RateRecorder {
    lr: f32,
    seen: Vec<f32>,
    pause: std::time::Duration,
}

impl Optimizer for RateRecorder {
    fn step(&mut self, _params: &[(&Tensor, &Tensor)]) -> Result<()> {
        self.seen.push(self.lr);
        std::thread::sleep(self.pause);
        Ok(())
    }
    fn name(&self) -> String {
        "rate recorder".into()
    }
    fn learning_rate(&self) -> f32 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }
}

#[test]
fn a_cosine_schedule_lowers_the_rate_step_by_step_and_fit_puts_the_rate_back() {
    use netmorph::train::LrSchedule;
    let dev = device();
    let data = mnist();
    // 70 images in batches of 32: 3 steps per epoch, the last one short; 2 epochs.
    let train = DeviceDataset::new(&dev, &data.train.take(70)).unwrap();
    let net = SmallConvnet::new(&dev, 3);
    let mut opt = RateRecorder { lr: 0.5, seen: Vec::new(), pause: std::time::Duration::ZERO };
    let schedule = LrSchedule::Cosine { floor: 0.1 };
    let cfg = FitConfig { epochs: 2, batch_size: 32, verbose: false, lr_schedule: schedule, ..FitConfig::default() };
    fit(&net, &mut opt, &train, None, &cfg).unwrap();
    let expected: Vec<f32> = (0..6).map(|s| 0.5 * schedule.factor(s, 6)).collect();
    assert_eq!(opt.seen, expected);
    assert_eq!(opt.seen[0], 0.5, "the first step runs at the optimizer's own rate");
    assert!(opt.seen.windows(2).all(|w| w[1] < w[0]), "{:?}", opt.seen);
    assert!(opt.seen[5] > 0.05 && opt.seen[5] < 0.1, "the last step nears the floor: {:?}", opt.seen);
    assert_eq!(opt.learning_rate(), 0.5, "fit puts the optimizer's rate back");
    // Constant leaves the rate alone.
    opt.seen.clear();
    let cfg = FitConfig { lr_schedule: LrSchedule::Constant, ..cfg };
    fit(&net, &mut opt, &train, None, &cfg).unwrap();
    assert_eq!(opt.seen, vec![0.5; 6]);
}

#[test]
fn with_a_deadline_the_cosine_ends_where_training_does() {
    use netmorph::train::LrSchedule;
    use std::time::{Duration, Instant};
    let dev = device();
    let train = DeviceDataset::new(&dev, &mnist().train.take(70)).unwrap();
    let net = SmallConvnet::new(&dev, 3);
    // 3 steps of at least 40 ms per epoch: about 15 epochs fit the deadline, of the 100 allowed.
    let mut opt = RateRecorder { lr: 0.5, seen: Vec::new(), pause: Duration::from_millis(40) };
    // A first epoch compiles the pipelines, so that compiling does not eat the deadline's epochs.
    fit(&net, &mut opt, &train, None, &FitConfig { epochs: 1, batch_size: 32, verbose: false, ..FitConfig::default() }).unwrap();
    opt.seen.clear();
    let schedule = LrSchedule::Cosine { floor: 0.1 };
    let cfg = FitConfig {
        epochs: 100,
        batch_size: 32,
        verbose: false,
        lr_schedule: schedule,
        deadline: Some(Instant::now() + Duration::from_millis(2000)),
        ..FitConfig::default()
    };
    let history = fit(&net, &mut opt, &train, None, &cfg).unwrap();
    let epochs = history.epochs.len();
    assert!((2..100).contains(&epochs), "the deadline stops training: {epochs} epochs");
    assert_eq!(history.stopped_early.as_deref(), Some("time limit reached"));
    assert_eq!(opt.seen.len(), 3 * epochs);
    // Over 100 epochs the last step would run at 0.5 * factor(3 * epochs, 300), above 0.45.
    let last = *opt.seen.last().unwrap();
    assert!(last < 0.5 * 0.3, "the rate nears its floor (0.05) at the last step: {:?}", opt.seen);
    // Epoch times vary (a loaded CI machine), so the plan grows and shrinks; the rate only falls.
    assert!(opt.seen.windows(2).all(|w| w[1] <= w[0]), "the rate never rises when the plan changes: {:?}", opt.seen);
}

#[test]
fn fit_shifts_the_training_batches_and_nothing_else() {
    use netmorph::data::{Augmentation, BatchOrder, RandomShift};
    let dev = device();
    let set = mnist().train.take(40);
    let train = DeviceDataset::new(&dev, &set).unwrap();
    let net = InputRecorder::new(&dev, 28 * 28, 10).unwrap();
    let mut opt = RateRecorder { lr: 0.1, seen: Vec::new(), pause: std::time::Duration::ZERO };
    let shift = RandomShift { max: 2 };
    let cfg = FitConfig {
        epochs: 1,
        batch_size: 16,
        seed: 5,
        verbose: false,
        augmentation: Augmentation { shift, ..Augmentation::NONE },
        ..FitConfig::default()
    };
    fit(&net, &mut opt, &train, Some(&train), &cfg).unwrap();
    let seen = net.take_seen();
    let order = BatchOrder::new(40, 16, 5).unwrap();
    let (training, validation) = seen.split_at(order.batches_per_epoch());
    let mut moved = 0;
    for ((is_training, x), indices) in training.iter().zip(order.epoch(1)) {
        assert!(is_training);
        for (k, &i) in indices.iter().enumerate() {
            let image = &x[k * 784..][..784];
            let shifts: Vec<[i32; 2]> = (-2..=2).flat_map(|dx| (-2..=2).map(move |dy| [dx, dy])).collect();
            let found = shifts.iter().find(|s| set.gather_f32_shifted(&[i], &[**s]) == image);
            let found = found.unwrap_or_else(|| panic!("training image {i} is no shift of at most 2 pixels"));
            moved += (*found != [0, 0]) as usize;
        }
    }
    assert!(moved > 30, "most training images are moved: {moved} of 40");
    for ((is_training, x), indices) in validation.iter().zip(order.sequential()) {
        assert!(!is_training);
        assert_eq!(*x, set.gather_f32(&indices), "validation images are not shifted");
    }
}

#[test]
fn with_every_augmentation_on_validation_evaluate_logits_and_predict_see_the_images_as_they_are() {
    use netmorph::data::{Augmentation, BatchOrder, RandomShift};
    use netmorph::train::{logits, predict};
    let dev = device();
    let set = mnist().train.take(100);
    let all = Augmentation { shift: RandomShift { max: 2 }, flip: true, rotation_degrees: 20.0, scale: 0.2, elastic: 2.0, cutout: 8 };
    let cfg = FitConfig { epochs: 1, batch_size: 16, seed: 5, verbose: false, augmentation: all, ..FitConfig::default() };
    let order = BatchOrder::new(set.n, 16, 5).unwrap();
    // 78 KB of images over a 64 KiB binding stream; the same set resident.
    let small = dev.with_max_binding_bytes(64 << 10);
    for (device, streamed) in [(&dev, false), (&small, true)] {
        let data = DeviceDataset::new(device, &set).unwrap();
        assert_eq!(data.is_streamed(), streamed);
        let net = InputRecorder::new(device, 784, 10).unwrap();
        fit(&net, &mut Sgd::new(0.1), &data, Some(&data), &cfg).unwrap();
        let seen = net.take_seen();
        let (training, validation) = seen.split_at(order.batches_per_epoch());
        let mut augmented = 0;
        for ((is_training, x), indices) in training.iter().zip(order.epoch(1)) {
            assert!(is_training);
            let plain = set.gather_f32(&indices);
            augmented += (0..indices.len()).filter(|&k| x[k * 784..][..784] != plain[k * 784..][..784]).count();
        }
        assert_eq!(augmented, set.n, "every training image is rotated, so resampled (streamed: {streamed})");
        for ((is_training, x), indices) in validation.iter().zip(order.sequential()) {
            assert!(!is_training);
            assert!(*x == set.gather_f32(&indices), "validation images are not augmented (streamed: {streamed})");
        }
        let sequential = BatchOrder::new(set.n, 16, 0).unwrap().sequential();
        evaluate(&net, &data, 16).unwrap();
        logits(&net, &data, 16).unwrap();
        let images = Tensor::from_slice(device, &set.gather_f32(&sequential[0]), &[16, 1, 28, 28]).unwrap();
        predict(&net, &images).unwrap();
        let seen = net.take_seen();
        let wanted = sequential.iter().chain(&sequential).chain(&sequential[..1]);
        assert_eq!(seen.len(), 2 * sequential.len() + 1, "evaluate, logits, then predict");
        for ((is_training, x), indices) in seen.iter().zip(wanted) {
            assert!(!is_training);
            assert!(*x == set.gather_f32(indices), "evaluate, logits and predict see the images as they are (streamed: {streamed})");
        }
    }
}
