//! The architecture search end to end, kept small for CI (lavapipe on two cores): 14x14 MNIST, a
//! few hundred images, a narrow generator and one or two epochs per model.

use netmorph::data::{default_data_dir, ImageSet, Mnist, RandomShift};
use netmorph::graph::{CnnConfig, Graph};
use netmorph::search::classifier::{ClassifierConfig, FinalFit, Generator, ImageClassifier, MEMBER_MIN_EPOCHS};
use netmorph::search::options::TestTimeShifts;
use netmorph::search::{ModelRecord, SearchDir, Status, Store};
use netmorph::train::LrSchedule;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netmorph-search-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// MNIST's first `n` training images, averaged down to 14x14.
fn small_mnist(n: usize) -> ImageSet {
    let set = Mnist::load(default_data_dir()).expect("MNIST in data/mnist").train.take(n);
    let mut images = Vec::with_capacity(n * 196);
    for i in 0..set.n {
        let img = set.image(i);
        for y in 0..14 {
            for x in 0..14 {
                let s: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)].iter().map(|(dy, dx)| img[(2 * y + dy) * 28 + 2 * x + dx] as u32).sum();
                images.push((s / 4) as u8);
            }
        }
    }
    ImageSet { images, height: 14, width: 14, ..set }
}

fn narrow_config(dir: &Path, max_models: usize) -> ClassifierConfig {
    ClassifierConfig {
        search_dir: dir.to_path_buf(),
        seed: 1,
        generators: vec![Generator::Cnn(CnnConfig { blocks: 2, width: 8, dense: 16, ..Default::default() })],
        batch_size: Some(32),
        max_epochs: 5,
        child_epochs: 2,
        max_models: Some(max_models),
        // These tests check the search's mechanics in a few epochs of a tiny model, which shifted
        // images slow down (0.37 validation accuracy instead of over 0.4 here); the shift has
        // tests of its own (tests/data.rs, tests/train.rs).
        shift: Some(RandomShift { max: 0 }),
        // The same for the cosine schedule: 125 steps of a tiny model are too few to settle, and
        // half the rate's integral leaves it at 0.34 validation accuracy.
        lr_schedule: LrSchedule::Constant,
        verbose: false,
        ..Default::default()
    }
}

#[test]
fn a_small_search_trains_children_within_its_limit() {
    let dir = temp_dir("small");
    let device = netmorph::testing::device();
    let data = small_mnist(1000);
    let limit = Duration::from_secs(240);
    let mut classifier = ImageClassifier::new(&device, narrow_config(&dir, 4));
    let start = Instant::now();
    let result = classifier.fit(&data, limit).expect("search").clone();
    let elapsed = start.elapsed();
    assert!(elapsed < limit, "the search took {elapsed:?}, over its limit of {limit:?}");
    assert!(result.records.len() >= 3, "only {} models trained", result.records.len());
    assert!(result.records[0].father.is_none());
    for r in &result.records[1..] {
        assert!(r.father.is_some_and(|f| f < r.id), "model {} has no earlier father", r.id);
        assert!(!r.operations.is_empty(), "model {} records no operation", r.id);
        assert!(r.operations.iter().all(|op| op.starts_with("to_")), "{:?}", r.operations);
    }
    let best = result.best_record();
    assert!(best.val_accuracy.unwrap() > 0.4, "best validation accuracy {:?}", best.val_accuracy);

    // The stored history is the same, and the best model loads on its own.
    let store = SearchDir::open(&dir, true, "test").unwrap();
    let history: Vec<ModelRecord<Value>> = store.load_history().unwrap();
    assert_eq!(history.len(), result.records.len());
    assert_eq!(store.best().unwrap().unwrap().id, best.id);
    let graph = Graph::load(&store.model_path(best.id, "json"), &store.model_path(best.id, "safetensors")).unwrap();
    graph.validate().unwrap();

    // The ensemble starts from the best, each round lowers the validation loss, and the served
    // graph holds exactly the chosen models' weights.
    let steps = classifier.ensemble().to_vec();
    assert_eq!(steps[0].members, vec![best.id]);
    assert_eq!(steps[0].val_accuracy, best.val_accuracy.unwrap());
    assert!(steps.windows(2).all(|w| w[1].val_loss < w[0].val_loss && w[1].members.starts_with(&w[0].members)), "{steps:?}");
    let chosen = &steps.last().unwrap().members;
    let weights_of = |id: usize| result.records.iter().find(|r| r.id == id).unwrap().parameters;
    let served = classifier.model_graph().unwrap();
    let (trainable, frozen) = served.param_counts().unwrap();
    assert_eq!((trainable + frozen) as u64, chosen.iter().map(|&id| weights_of(id)).sum::<u64>(), "members {chosen:?}");
    // It averages five shifted copies of each image by default (test-time augmentation), and
    // without them its logits are the mean of the members' (on this tiny search the best often
    // stands alone).
    assert_eq!(served.test_time_shifts(), TestTimeShifts::Cross.shifts().as_slice());
    let mut plain_served = served.clone();
    plain_served.set_test_time_shifts(vec![]).unwrap();
    let x: Vec<f64> = data.take(3).gather_f32(&[0, 1, 2]).into_iter().map(f64::from).collect();
    let member_logits: Vec<Vec<f64>> = chosen
        .iter()
        .map(|&id| Graph::load(&store.model_path(id, "json"), &store.model_path(id, "safetensors")).unwrap().forward_cpu(&x, 3).unwrap())
        .collect();
    for (i, got) in plain_served.forward_cpu(&x, 3).unwrap().iter().enumerate() {
        let mean = member_logits.iter().map(|l| l[i]).sum::<f64>() / chosen.len() as f64;
        assert!((got - mean).abs() < 1e-4 * (1.0 + mean.abs()), "logit {i}: {got} vs {mean}");
    }
    let stored: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("ensemble.json")).unwrap()).unwrap();
    assert_eq!(stored.len(), steps.len());
    // Without ensembling and test-time shifts, a resumed search serves the best alone, as saved.
    drop(store);
    let config = ClassifierConfig { resume: true, ensemble_size: 1, test_time_shifts: Some(vec![]), ..narrow_config(&dir, 4) };
    let mut alone = ImageClassifier::new(&device, config);
    alone.fit(&data, limit).unwrap();
    assert_eq!(alone.model_graph(), Some(&graph));

    // Predict, evaluate and export.
    let eval = classifier.evaluate(&data.take(200)).unwrap();
    assert!(eval.accuracy > 0.3, "{eval:?}");
    let predictions = classifier.predict(&data.take(50)).unwrap();
    assert_eq!(predictions.len(), 50);
    assert!(predictions.iter().all(|&p| p < 10));
    let (json, weights) = (dir.join("export.json"), dir.join("export.safetensors"));
    classifier.export(&json, &weights).unwrap();
    let loaded = ImageClassifier::load(&device, &json, &weights).unwrap();
    assert_eq!(loaded.predict(&data.take(50)).unwrap(), predictions, "the exported model predicts the same");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The small-data check: with the library's defaults (the 64-wide generator, the epoch
/// caps, the model share, early ranking and the default augmentation), a search of two minutes on
/// about a thousand small images still tries several architectures, and stops on time.
#[test]
fn a_two_minute_search_on_a_thousand_small_images_trains_three_models_on_time() {
    let dir = temp_dir("two-minutes");
    let device = netmorph::testing::device();
    let data = small_mnist(1000);
    let limit = Duration::from_secs(120);
    let config = ClassifierConfig { search_dir: dir.clone(), seed: 1, verbose: false, ..Default::default() };
    let mut classifier = ImageClassifier::new(&device, config);
    let start = Instant::now();
    let result = classifier.fit(&data, limit).expect("search").clone();
    let elapsed = start.elapsed();
    let finished = result.records.iter().filter(|r| r.finished()).count();
    let summary: Vec<String> =
        result.records.iter().map(|r| format!("model {}: {} epochs in {:.1}s, {:?}", r.id, r.epochs, r.seconds, r.stopped)).collect();
    assert!(finished >= 3, "only {finished} models finished in {elapsed:?}: {summary:?}");
    // The search stops the model in training after the epoch during which the limit passes, and
    // the ensemble selection is one pass over the validation set per candidate.
    let longest_epoch = result.records.iter().filter(|r| r.epochs > 0).map(|r| r.seconds / r.epochs as f64).fold(0.0, f64::max);
    let allowed = limit + Duration::from_secs_f64(longest_epoch) + Duration::from_secs(10);
    assert!(elapsed <= allowed, "the search took {elapsed:?} against a limit of {limit:?} (+ one epoch: {allowed:?}): {summary:?}");
    // The library's default batch suits the set: 16 images, 52 steps an epoch on 833 images.
    let settings: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["batch_size"], 16, "{settings}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_same_seed_repeats_the_sequence_of_architectures() {
    let device = netmorph::testing::device();
    let data = small_mnist(400);
    let run = |name: &str| {
        let dir = temp_dir(name);
        let mut classifier = ImageClassifier::new(&device, ClassifierConfig { max_epochs: 2, child_epochs: 1, ..narrow_config(&dir, 4) });
        let result = classifier.fit(&data, Duration::from_secs(300)).expect("search").clone();
        std::fs::remove_dir_all(&dir).unwrap();
        result.records.iter().map(|r| (r.father, r.operations.clone(), r.val_loss)).collect::<Vec<_>>()
    };
    assert_eq!(run("seed-a"), run("seed-b"));
}

#[test]
fn images_of_other_sizes_channels_and_classes() {
    // 3x9x7 images of 3 classes: the class is the channel that is brightest.
    let (n, c, h, w) = (300, 3, 9, 7);
    let mut rng = netmorph::testing::rng(5);
    let mut images = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 3;
        for ch in 0..c {
            for _ in 0..h * w {
                let base = if ch == class { 120.0 } else { 0.0 };
                images.push((base + 100.0 * rand::Rng::random::<f64>(&mut rng)) as u8);
            }
        }
        labels.push(class as u8);
    }
    let data = ImageSet::new(images, labels, c, h, w, 3).unwrap();
    let dir = temp_dir("shapes");
    let device = netmorph::testing::device();
    let mut classifier = ImageClassifier::new(&device, narrow_config(&dir, 3));
    let result = classifier.fit(&data, Duration::from_secs(120)).expect("search").clone();
    assert_eq!(result.records.len(), 3);
    assert!(result.best_record().val_accuracy.unwrap() > 0.6, "{:?}", result.best_record());
    assert_eq!(classifier.best_graph().unwrap().input_shape(), &[3, 9, 7]);
    assert!(classifier.predict(&data.take(10)).unwrap().iter().all(|&p| p < 3));
    // The final fit trains on all the images, and stays out of a deadline it cannot meet.
    let before = classifier.evaluate(&data).unwrap();
    let h = classifier.final_fit(&data, 2, FinalFit::Continue, None).unwrap();
    assert_eq!(h.epochs.len(), 2);
    let after = classifier.evaluate(&data).unwrap();
    assert!(after.loss < before.loss, "final fit on all images: loss {} -> {}", before.loss, after.loss);
    let h = classifier.final_fit(&data, 2, FinalFit::Continue, Some(std::time::Instant::now())).unwrap();
    assert!(h.epochs.is_empty() && h.stopped_early.as_deref().unwrap_or("").contains("time limit"), "{h:?}");
    assert_eq!(classifier.evaluate(&data).unwrap(), after, "a skipped final fit keeps the weights");
    // A fresh copy trained on all the images joins the ensemble; the best stays as it was.
    let (best, served) = (classifier.best_graph().unwrap().clone(), classifier.model_graph().unwrap().clone());
    let h = classifier.final_fit(&data, 2, FinalFit::NewMember, None).unwrap();
    assert_eq!(h.epochs.len(), 2);
    assert_eq!(classifier.best_graph(), Some(&best));
    let count = |g: &Graph| g.param_counts().map(|(t, f)| t + f).unwrap();
    assert_eq!(count(classifier.model_graph().unwrap()), count(&served) + count(&best));
    let x: Vec<f64> = data.take(4).gather_f32(&[0, 1, 2, 3]).into_iter().map(f64::from).collect();
    assert_ne!(classifier.model_graph().unwrap().forward_cpu(&x, 4).unwrap(), served.forward_cpu(&x, 4).unwrap());
    assert!(classifier.evaluate(&data).unwrap().accuracy > 0.6);
    // Auto: a fresh member where the final fit has MEMBER_MIN_EPOCHS epochs, else the best trains on.
    let (below, enough) = (MEMBER_MIN_EPOCHS - 1, MEMBER_MIN_EPOCHS);
    let members = classifier.model_graph().map(count).unwrap();
    classifier.final_fit(&data, below, FinalFit::Auto, None).unwrap();
    assert_eq!(classifier.final_fit_kind(), Some(FinalFit::Continue));
    assert_eq!(classifier.model_graph().map(count), Some(members), "continuing adds no member");
    classifier.final_fit(&data, enough, FinalFit::Auto, None).unwrap();
    assert_eq!(classifier.final_fit_kind(), Some(FinalFit::NewMember));
    assert_eq!(classifier.model_graph().map(count), Some(members + count(&best)), "one more member");
    let mut unsearched = ImageClassifier::from_architecture(&device, narrow_config(&dir, 1), &best, &data).unwrap();
    let err = unsearched.final_fit(&data, 1, FinalFit::Auto, None).unwrap_err().to_string();
    assert!(err.contains("Auto") && err.contains("no search"), "{err}");
    let wrong = ImageSet::new(vec![0; 2 * 9 * 7], vec![0], 2, 9, 7, 3).unwrap();
    let err = classifier.evaluate(&wrong).unwrap_err();
    assert!(err.to_string().contains("[2, 9, 7]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_early_ranking_setting_is_named_before_anything_trains() {
    let dir = temp_dir("bad-ranking");
    let device = netmorph::testing::device();
    let ranking = netmorph::search::EarlyRanking { grace_epochs: 2, quantile: 2.0 };
    let mut classifier = ImageClassifier::new(&device, ClassifierConfig { early_ranking: Some(ranking), ..narrow_config(&dir, 3) });
    let err = classifier.fit(&small_mnist(100), Duration::from_secs(60)).expect_err("a quantile of 2 is refused");
    assert!(err.to_string().contains("early ranking: the quantile 2 is not above 0 and below 1"), "{err}");
    let history = SearchDir::open(&dir, true, "test").unwrap().load_history::<Value>().unwrap();
    assert!(history.is_empty(), "{history:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_search_fails_clearly_when_the_limit_is_already_spent() {
    let dir = temp_dir("nolimit");
    let device = netmorph::testing::device();
    let mut classifier = ImageClassifier::new(&device, narrow_config(&dir, 3));
    let err = classifier.fit(&small_mnist(100), Duration::ZERO).expect_err("no model can train in no time");
    assert!(err.to_string().contains("no model could be trained"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn search_command(dir: &Path, max_models: usize) -> Command {
    let mut cmd = Command::new(netmorph::testing::example_binary("autokeras_search"));
    // The rules' kernels: the same seed gives the same run, whatever the machine's load.
    cmd.env("NETMORPH_TUNING", "off");
    cmd.args(["--search-dir", dir.to_str().unwrap(), "--time-limit", "10m", "--train-limit", "600", "--test-limit", "200"])
        .args(["--downsample", "2", "--width", "8", "--blocks", "2", "--max-epochs", "2", "--child-epochs", "1"])
        .args(["--batch-size", "32", "--seed", "7", "--final-epochs", "0", "--max-models", &max_models.to_string()]);
    cmd
}

fn history_lines(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("history.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn a_killed_search_resumes_without_training_a_finished_model_again() {
    let dir = temp_dir("kill");
    let mut child = search_command(&dir, 6).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the search");
    let start = Instant::now();
    while history_lines(&dir).len() < 2 {
        assert!(child.try_wait().unwrap().is_none(), "the search ended before its second model finished");
        assert!(start.elapsed() < Duration::from_secs(300), "no second model after 5 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = history_lines(&dir);
    assert!(before.len() >= 2);

    let output = search_command(&dir, 4).arg("--resume").output().expect("resume the search");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "resume failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let after = history_lines(&dir);
    let ids: Vec<u64> = after.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (0..after.len() as u64).collect::<Vec<_>>(), "the history is whole, each model once");
    assert!(after.len() >= 4, "{} models after resuming", after.len());
    assert_eq!(&after[..before.len()], &before[..], "finished models are kept as they were");
    for r in &before {
        let id = r["id"].as_u64().unwrap();
        assert!(!stdout.contains(&format!("Training model {id} ")), "model {id} was trained again:\n{stdout}");
        assert!(dir.join(format!("models/model_{id}.safetensors")).exists());
    }
    assert!(stdout.contains("Test accuracy"), "{stdout}");
    for r in &after {
        let status: Status = serde_json::from_value(r["status"].clone()).unwrap();
        assert_eq!(status, Status::Finished, "{r}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_affordable_width_is_the_widest_that_fits_the_budget() {
    let dir = temp_dir("width");
    let device = netmorph::testing::device();
    let classifier = ImageClassifier::new(&device, narrow_config(&dir, 1));
    let data = small_mnist(600);
    let base = CnnConfig { blocks: 2, dense: 16, ..Default::default() };
    let hour = Duration::from_secs(3600);
    assert_eq!(classifier.affordable_cnn_width(&data, &base, &[4, 8], 3, hour).unwrap(), 8);
    assert_eq!(classifier.affordable_cnn_width(&data, &base, &[8, 4], 3, Duration::ZERO).unwrap(), 4, "none fits: the narrowest");
    assert!(classifier.affordable_cnn_width(&data, &base, &[], 3, hour).is_err());
}
