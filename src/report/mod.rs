//! Is the data dirty, and what did the search do? The data health report (class balance,
//! duplicates, blank images, odd sizes, suspected label errors) and the search drawn (learning
//! curves, best accuracy against time, the tree of models, the confusion matrix, the test images
//! it gets wrong), written as one self-contained HTML page with CSV and JSON beside it.

mod csv;
pub mod duplicates;
pub mod exclusion;
pub mod health;
pub mod images;
pub mod labels;
pub mod page;
pub mod plots;
pub mod search;
pub mod tree;

pub use duplicates::{find_duplicates, DuplicateOptions, Duplicates};
pub use health::{check_data, check_sets, check_sources, odd_shapes, DataHealth};
pub use labels::{confident_learning, CrossValidation, LabelIssues, LabelSuspect};
pub use search::search_report;

use crate::data::{ImageFile, ImageSet, LoadedData};
use crate::error::{Error, Result};
use crate::search::store::ModelRecord;
use crate::train::History;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which set an image belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// One image of a data set: its set and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    pub split: Split,
    pub index: usize,
}

/// Images shown on the page per list (every one is in the CSV files).
pub const SHOWN: usize = 30;

/// What the report covers and where its images come from: the two sets, their class names, and
/// the files behind them when the data came from an image folder (empty otherwise).
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub train: &'a ImageSet,
    pub test: &'a ImageSet,
    pub class_names: &'a [String],
    pub train_files: &'a [ImageFile],
    pub test_files: &'a [ImageFile],
}

impl<'a> Sources<'a> {
    /// The sets of a loaded data set, with their files.
    pub fn of(data: &'a LoadedData) -> Sources<'a> {
        Sources {
            train: &data.train,
            test: &data.test,
            class_names: &data.class_names,
            train_files: &data.train_files,
            test_files: &data.test_files,
        }
    }

    /// Two sets that came from no files (IDX, CIFAR, `.npy`, or built in memory).
    pub fn sets(train: &'a ImageSet, test: &'a ImageSet, class_names: &'a [String]) -> Sources<'a> {
        Sources { train, test, class_names, train_files: &[], test_files: &[] }
    }

    pub fn set(&self, split: Split) -> &'a ImageSet {
        match split {
            Split::Train => self.train,
            Split::Test => self.test,
        }
    }

    /// The file an image came from, when the data came from files.
    pub fn file(&self, image: ImageRef) -> Option<&'a ImageFile> {
        let files = match image.split {
            Split::Train => self.train_files,
            Split::Test => self.test_files,
        };
        files.get(image.index)
    }
}

/// The data set in a line, and a fingerprint that ties the report's indices to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataSummary {
    pub name: String,
    pub train: usize,
    pub test: usize,
    /// [channels, height, width].
    pub shape: [usize; 3],
    pub class_names: Vec<String>,
    /// SHA-256 of the training set's labels and images: an exclusion list made from this report
    /// applies only to the same training set.
    pub train_fingerprint: String,
}

/// The SHA-256 of a set's labels and images, as hex.
pub fn fingerprint(set: &ImageSet) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update((set.n as u64).to_le_bytes());
    hash.update(&set.labels);
    hash.update(&set.images);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The search as its store holds it.
#[derive(Clone, Debug, Serialize)]
pub struct SearchSummary {
    /// The store, as it names itself (a directory, or a study in a database).
    pub store: String,
    pub records: Vec<ModelRecord<Value>>,
    pub best: Option<usize>,
    /// The searched models averaged into the final model.
    pub ensemble: Vec<usize>,
    /// The final fit's epochs, when there was one.
    pub final_fit: Option<History>,
    /// What the search's last step stored: its test figures, time and worker.
    pub outcome: Option<Value>,
}

impl SearchSummary {
    /// The search in one sentence.
    pub fn describe(&self) -> String {
        let finished = self.records.iter().filter(|r| r.finished()).count();
        let mut text = format!("{} models ({} finished) in {}", self.records.len(), finished, self.store);
        if let Some(best) = self.best {
            text += &format!("; the best is model {best}");
        }
        if !self.ensemble.is_empty() {
            text += &format!("; the ensemble averages models {:?}", self.ensemble);
        }
        if let Some(seconds) = self.outcome.as_ref().and_then(|o| o.get("seconds")).and_then(Value::as_f64) {
            text += &format!("; search and final fit took {}", crate::search::format_duration(std::time::Duration::from_secs_f64(seconds)));
        }
        text + "."
    }
}

/// The final model on the test set: what it predicts, how sure it is, and the confusion matrix.
#[derive(Clone, Debug, Serialize)]
pub struct TestEvaluation {
    /// The given labels.
    pub labels: Vec<usize>,
    pub predicted: Vec<usize>,
    /// The probability of the predicted class.
    pub confidence: Vec<f64>,
    pub accuracy: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

impl TestEvaluation {
    /// From each test image's class probabilities.
    pub fn of(probabilities: &[Vec<f32>], test: &ImageSet) -> Result<TestEvaluation> {
        if probabilities.len() != test.n {
            return Err(Error::Invalid(format!("{} predictions for {} test images", probabilities.len(), test.n)));
        }
        let mut confusion = vec![vec![0; test.classes]; test.classes];
        let (mut predicted, mut confidence) = (Vec::with_capacity(test.n), Vec::with_capacity(test.n));
        for (row, &label) in probabilities.iter().zip(&test.labels) {
            let (class, p) = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or((0, 0.0), |(c, &p)| (c, p as f64));
            if class >= test.classes {
                return Err(Error::Invalid(format!("a prediction of class {class}, but the test set has {} classes", test.classes)));
            }
            confusion[label as usize][class] += 1;
            predicted.push(class);
            confidence.push(p);
        }
        let right = (0..test.classes).map(|c| confusion[c][c]).sum::<usize>();
        Ok(TestEvaluation {
            labels: test.labels.iter().map(|&l| l as usize).collect(),
            predicted,
            confidence,
            accuracy: right as f64 / test.n.max(1) as f64,
            confusion,
        })
    }

    /// The indices of the wrong predictions, the most confident first.
    pub fn wrong(&self) -> Vec<usize> {
        let mut wrong: Vec<usize> = (0..self.predicted.len()).filter(|&i| self.labels[i] != self.predicted[i]).collect();
        wrong.sort_by(|&a, &b| self.confidence[b].total_cmp(&self.confidence[a]).then(a.cmp(&b)));
        wrong
    }
}

/// The whole report: the data's health, the label checks, and the search when there was one.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub title: String,
    pub data: DataSummary,
    pub health: DataHealth,
    pub train_labels: Option<LabelIssues>,
    pub test_labels: Option<LabelIssues>,
    pub search: Option<SearchSummary>,
    pub evaluation: Option<TestEvaluation>,
    /// Seconds the report took to make (the label check's training included).
    pub seconds: f64,
}

/// The files [`Report::write`] makes.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub json: PathBuf,
    /// The CSV lists and the PNG grids.
    pub others: Vec<PathBuf>,
}

/// The report's options.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub duplicates: DuplicateOptions,
    /// How the training set's out-of-sample probabilities are made; `None`: no label check of the
    /// training set (it trains `folds` copies of a model).
    pub cross_validation: Option<CrossValidation>,
}

impl Default for ReportOptions {
    fn default() -> ReportOptions {
        ReportOptions { duplicates: DuplicateOptions::default(), cross_validation: Some(CrossValidation::default()) }
    }
}

impl Report {
    /// The part that needs no model: class balance, duplicates, blank images, odd sizes.
    pub fn of_data(name: &str, sources: &Sources, options: &ReportOptions) -> Report {
        let start = Instant::now();
        let health = check_sources(sources, &options.duplicates);
        Report {
            title: format!("netmorph report: {name}"),
            data: DataSummary {
                name: name.to_string(),
                train: sources.train.n,
                test: sources.test.n,
                shape: sources.train.image_shape(),
                class_names: sources.class_names.to_vec(),
                train_fingerprint: fingerprint(sources.train),
            },
            health,
            train_labels: None,
            test_labels: None,
            search: None,
            evaluation: None,
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// Writes `report.html` and, beside it, `report.json` and the lists as CSV (suspects,
    /// duplicates, flat images, odd shapes, the models' epochs, the wrong test images), and the
    /// top suspects as PNG grids, into `dir` (made if missing).
    pub fn write(&self, dir: &Path, sources: &Sources) -> Result<ReportFiles> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut others = Vec::new();
        let put = |name: &str, text: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
            Ok(path)
        };
        let html = put("report.html", page::render(self, sources)?)?;
        let json = put("report.json", serde_json::to_string_pretty(self).map_err(|e| Error::Other(format!("the report as JSON: {e}")))?)?;
        for (name, text) in csv::all(self, sources) {
            others.push(put(name, text)?);
        }
        for issues in [&self.train_labels, &self.test_labels].into_iter().flatten() {
            let indices: Vec<usize> = issues.suspects.iter().take(SHOWN).map(|s| s.image.index).collect();
            if !indices.is_empty() {
                let path = dir.join(format!("suspects_{}.png", issues.split));
                images::write_grid(sources.set(issues.split), &indices, 10, 3, &path)?;
                others.push(path);
            }
        }
        Ok(ReportFiles { html, json, others })
    }
}
