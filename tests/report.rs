//! The report: labels flipped on purpose found by k-fold confident learning; a whole report (the
//! data's health, label suspects, a search drawn, the final model's mistakes) rendered in headless
//! Chromium with no console error and no request; its CSV and JSON read back by other parsers and
//! agreeing with the page; and the exclusion of what it flagged.

use netmorph::data::ImageSet;
use netmorph::graph::{CnnConfig, Graph};
use netmorph::report::exclusion::{flagged_training_images, without};
use netmorph::report::labels::{confident_learning, training_label_issues, CrossValidation};
use netmorph::report::page::SECTIONS;
use netmorph::report::{search::search_summary, ImageRef, Report, ReportOptions, Sources, Split, TestEvaluation};
use netmorph::search::classifier::{ClassifierConfig, OptimizerConfig};
use netmorph::search::{search, SearchConfig, SearchDir};
use netmorph::testing::browser::check_self_contained;
use netmorph::testing::search::{FakeTrainer, Grid};
use netmorph::train::LrSchedule;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// `n` images of `side`x`side`, 6 classes, each a shape (vertical, horizontal, diagonal and
/// anti-diagonal bar, plus sign, square ring) on noise. Easy to learn, so a flipped label stands out.
fn shapes(n: usize, side: usize, seed: u64) -> ImageSet {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * side * side);
    let mut labels = Vec::with_capacity(n);
    let (mid, last) = (side / 2, side - 2);
    for i in 0..n {
        let class = i % 6;
        for y in 0..side {
            for x in 0..side {
                let on = match class {
                    0 => x.abs_diff(mid) <= 1,
                    1 => y.abs_diff(mid) <= 1,
                    2 => x.abs_diff(y) <= 1,
                    3 => (x + y).abs_diff(side - 1) <= 1,
                    4 => x.abs_diff(mid) <= 1 || y.abs_diff(mid) <= 1,
                    _ => (x == 1 || x == last || y == 1 || y == last) && (1..=last).contains(&x) && (1..=last).contains(&y),
                };
                let noise: u8 = rng.random_range(0..60);
                images.push(if on { 255 - noise } else { noise });
            }
        }
        labels.push(class as u8);
    }
    ImageSet::new(images, labels, 1, side, side, 6).unwrap()
}

/// Flips the labels of `count` images chosen by `seed` to another class; returns their indices.
fn flip_labels(set: &mut ImageSet, count: usize, seed: u64) -> BTreeSet<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut flipped = BTreeSet::new();
    while flipped.len() < count {
        let i = rng.random_range(0..set.n);
        if flipped.insert(i) {
            let shift = rng.random_range(1..set.classes) as u8;
            set.labels[i] = (set.labels[i] + shift) % set.classes as u8;
        }
    }
    flipped
}

fn precision_recall(found: &BTreeSet<usize>, truth: &BTreeSet<usize>) -> (f64, f64) {
    let hits = found.intersection(truth).count() as f64;
    (hits / found.len().max(1) as f64, hits / truth.len().max(1) as f64)
}

#[test]
fn labels_flipped_on_purpose_are_found_by_k_fold_confident_learning() {
    let device = netmorph::testing::device();
    let mut train = shapes(800, 12, 1);
    let flipped = flip_labels(&mut train, 40, 2);
    let architecture =
        Graph::cnn(&[1, 12, 12], 6, &CnnConfig { blocks: 1, width: 8, dense: 32, dropout: 0.0, ..Default::default() }, 0).unwrap();
    let config = ClassifierConfig {
        seed: 3,
        batch_size: Some(32),
        optimizer: OptimizerConfig::adam(3e-3),
        lr_schedule: LrSchedule::Constant,
        final_lr_schedule: LrSchedule::Constant,
        ..Default::default()
    };
    let cv = CrossValidation { folds: 4, epochs: 24 };
    let issues = training_label_issues(&device, &config, &architecture, &train, &cv, None).unwrap();
    let found: BTreeSet<usize> = issues.suspects.iter().map(|s| s.image.index).collect();
    let (precision, recall) = precision_recall(&found, &flipped);
    println!(
        "flipped labels: {} planted, {} suspects, precision {precision:.3}, recall {recall:.3} in {:.1}s",
        flipped.len(),
        found.len(),
        issues.seconds
    );
    // A detector that guessed, or read the labels it checks, would miss these floors by far.
    assert!(recall >= 0.9, "recall {recall:.3}: found {found:?} of {flipped:?}");
    assert!(precision >= 0.8, "precision {precision:.3}");
    // Each suspect suggests the class its shape shows: the label it had before the flip.
    for s in issues.suspects.iter().filter(|s| flipped.contains(&s.image.index)) {
        assert_eq!(s.suggested, s.image.index % 6, "image {}", s.image.index);
        assert!(s.confidence > s.given_probability);
    }
    // Ranked: the largest margin first.
    assert!(issues.suspects.windows(2).all(|w| w[0].margin() >= w[1].margin()));
}

/// A report with every part filled: planted duplicates and a blank image, label suspects on
/// both sets, a (fake-trained) search and a final model's predictions.
fn full_report(dir: &Path) -> (ImageSet, ImageSet, Report) {
    let mut train = shapes(300, 12, 4);
    let mut test = shapes(60, 12, 5);
    // A test image copied into the training set, and a blank training image.
    let copy = test.image(7).to_vec();
    let len = train.image_len();
    train.images[3 * len..4 * len].copy_from_slice(&copy);
    train.labels[3] = test.labels[7];
    train.images[10 * len..11 * len].fill(0);
    flip_labels(&mut test, 3, 6);
    let names: Vec<String> = (0..6).map(|c| format!("shape {c}")).collect();

    // A search by the fake trainer, stored as a real search directory.
    let store = SearchDir::open(&dir.join("search"), false, "test").unwrap();
    let config = SearchConfig { time_limit: Duration::from_secs(20), max_models: Some(6), verbose: false, ..Default::default() };
    search(
        Grid { max: 6 },
        vec![(1, 1)],
        &mut FakeTrainer { epoch: Duration::from_millis(5), epochs: 3, ..FakeTrainer::new() },
        &store,
        &config,
    )
    .unwrap();

    let sources = Sources::sets(&train, &test, &names);
    let mut report = Report::of_data("bars", &sources, &ReportOptions::default());
    // Probabilities that know the bars: a suspect wherever a label was flipped.
    let truth = |i: usize| -> Vec<f32> { (0..6).map(|c| if c == i % 6 { 0.9 } else { 0.02 }).collect() };
    let train_p: Vec<Vec<f32>> = (0..train.n).map(truth).collect();
    let test_p: Vec<Vec<f32>> = (0..test.n).map(truth).collect();
    let (thresholds, suspects) = confident_learning(&train_p, &train.labels, 6, Split::Train).unwrap();
    report.train_labels = Some(netmorph::report::LabelIssues {
        split: Split::Train,
        method: "test probabilities".into(),
        thresholds,
        suspects,
        examined: train.n,
        seconds: 0.0,
    });
    report.test_labels = Some(netmorph::report::labels::test_label_issues(&test_p, &test, Duration::ZERO).unwrap());
    report.evaluation = Some(TestEvaluation::of(&test_p, &test).unwrap());
    report.search = Some(search_summary(&store).unwrap());
    (train, test, report)
}

/// The `data-count` of the section `id` in the page.
fn count_in_page(html: &str, id: &str) -> usize {
    let at = html.find(&format!("<section id=\"{id}\" data-count=\"")).unwrap_or_else(|| panic!("no counted section {id}"));
    let rest = &html[at + id.len() + 27..];
    rest[..rest.find('"').unwrap()].parse().unwrap()
}

fn csv_rows(path: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).records().map(|r| r.unwrap()).collect()
}

/// The page, its CSV files (read by the `csv` crate) and its JSON (serde_json) tell the same counts.
pub fn check_files_agree(dir: &Path) {
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let len = |path: &[&str]| path.iter().try_fold(&json, |v, k| v.get(k)).and_then(|v| v.as_array()).map_or(0, |a| a.len());
    let duplicates = csv_rows(&dir.join("duplicates.csv"));
    assert_eq!(duplicates.len(), count_in_page(&html, "duplicates"));
    assert_eq!(duplicates.len(), len(&["health", "duplicates", "pairs"]));
    let flat = csv_rows(&dir.join("flat_images.csv"));
    assert_eq!(flat.len(), count_in_page(&html, "flat-images"));
    assert_eq!(flat.len(), len(&["health", "flat"]));
    let suspects = csv_rows(&dir.join("suspects.csv"));
    let (train_suspects, test_suspects) = (count_in_page(&html, "train-labels"), count_in_page(&html, "test-labels"));
    assert_eq!(suspects.len(), train_suspects + test_suspects);
    assert_eq!(suspects.iter().filter(|r| &r[0] == "train").count(), train_suspects);
    assert_eq!(train_suspects, len(&["train_labels", "suspects"]));
    assert_eq!(test_suspects, len(&["test_labels", "suspects"]));
    assert_eq!(count_in_page(&html, "search"), len(&["search", "records"]));
    let epochs: usize =
        json["search"]["records"].as_array().map_or(0, |r| r.iter().map(|m| m["curve"].as_array().map_or(0, |c| c.len())).sum());
    assert_eq!(csv_rows(&dir.join("models.csv")).len(), epochs);
    let wrong = csv_rows(&dir.join("wrong.csv"));
    assert_eq!(wrong.len(), count_in_page(&html, "wrong"));
    if let Some(e) = json.get("evaluation").filter(|e| !e.is_null()) {
        let right: u64 = (0..e["confusion"].as_array().unwrap().len()).map(|c| e["confusion"][c][c].as_u64().unwrap()).sum();
        assert_eq!(wrong.len() as u64 + right, e["predicted"].as_array().unwrap().len() as u64);
    }
    assert_eq!(csv_rows(&dir.join("odd_shapes.csv")).len(), count_in_page(&html, "odd-shapes"));
}

#[test]
fn a_whole_report_renders_in_chromium_and_its_files_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test, report) = full_report(tmp.path());
    // What was planted is in the report.
    let d = &report.health.duplicates;
    assert!(
        d.pairs
            .iter()
            .any(|p| p.exact && p.a == ImageRef { split: Split::Train, index: 3 } && p.b == ImageRef { split: Split::Test, index: 7 }),
        "{:?}",
        d.pairs
    );
    assert!(report.health.flat.iter().any(|f| f.image == ImageRef { split: Split::Train, index: 10 }));
    assert_eq!(report.test_labels.as_ref().unwrap().suspects.len(), 3);
    assert!(report.search.as_ref().unwrap().records.iter().all(|r| r.curve.len() == 3 && r.finished_at >= r.started_at));

    let names: Vec<String> = (0..6).map(|c| format!("shape {c}")).collect();
    let out = tmp.path().join("report");
    let files = report.write(&out, &Sources::sets(&train, &test, &names)).unwrap();
    let rendered = check_self_contained(&files.html, 1280, 2400, &SECTIONS).unwrap_or_else(|e| panic!("{e}"));
    // Every section has its content: the plots and the tree are SVG, the images inline PNG.
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert_eq!(html.matches("<svg").count(), 1 + 1 + 6, "best over time, the tree, six models' curves");
    assert!(html.matches("src=\"data:image/png;base64,").count() >= 2 + 1 + 3 + 3, "duplicates, blank, suspects, mistakes");
    assert!(!html.contains("http://") || html.matches("http://").count() == html.matches("http://www.w3.org/2000/svg").count());
    assert!(rendered.dom.contains("shape 5"), "class names in the page");
    std::fs::copy(&rendered.screenshot, out.join("screenshot.png")).unwrap();
    check_files_agree(&out);
    for grid in ["suspects_train.png", "suspects_test.png"] {
        let image = image::open(out.join(grid)).unwrap_or_else(|e| panic!("{grid}: {e}"));
        assert!(image.width() > 36, "{grid}");
    }
}

#[test]
fn a_report_flags_what_a_new_search_leaves_out_and_only_for_its_own_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test, report) = full_report(tmp.path());
    let names: Vec<String> = (0..6).map(|c| format!("shape {c}")).collect();
    report.write(tmp.path(), &Sources::sets(&train, &test, &names)).unwrap();
    let flagged = flagged_training_images(tmp.path(), &train, 0.5).unwrap();
    assert!(flagged.leaks.contains(&3), "the copy of a test image: {flagged:?}");
    let suspects: BTreeSet<usize> =
        report.train_labels.as_ref().unwrap().suspects.iter().filter(|s| s.confidence >= 0.5).map(|s| s.image.index).collect();
    assert_eq!(flagged.suspects, suspects);
    let kept = without(&train, &flagged.all());
    assert_eq!(kept.n, train.n - flagged.all().len());
    // A report of other data is refused, by name.
    let other = train.take(100);
    let e = flagged_training_images(tmp.path(), &other, 0.5).unwrap_err().to_string();
    assert!(e.contains("another training set"), "{e}");
    let e = flagged_training_images(&tmp.path().join("nowhere"), &train, 0.5).unwrap_err().to_string();
    assert!(e.contains("nowhere"), "{e}");
}
