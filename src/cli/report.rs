//! The report as `netmorph report`, `netmorph search` (at its end) and `autokeras_search --report`
//! make it, and the exclusion of the training images a report flagged from a new search.

use super::{parse_fraction, parse_positive, parse_share, DataArgs, TrainingArgs};
use crate::data::{ImageFile, ImageSet};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::report::duplicates::DEFAULT_THRESHOLD;
use crate::report::exclusion::{flagged_training_images, without};
use crate::report::labels::{test_label_issues, training_label_issues};
use crate::report::{search_report, CrossValidation, DuplicateOptions, Report, ReportOptions, Sources, TestEvaluation};
use crate::search::classifier::{ClassifierConfig, ImageClassifier};
use crate::search::store::{PgStore, SearchDir, Store};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How the report is made.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Folds of the training set's label check: that many copies of the chosen architecture train
    /// on the other folds and predict theirs (0: no label check of the training set).
    #[arg(long, default_value_t = 4)]
    pub label_folds: usize,
    /// Epochs each copy of the label check trains.
    #[arg(long, default_value_t = 3, value_parser = parse_positive)]
    pub label_epochs: usize,
    /// Two images closer than this are near duplicates: the RMS difference of their 16x16 grey
    /// thumbnails, each normalised to zero mean and unit contrast.
    #[arg(long, default_value_t = DEFAULT_THRESHOLD, value_parser = parse_fraction)]
    pub duplicate_threshold: f64,
}

impl ReportArgs {
    pub fn options(&self) -> Result<ReportOptions> {
        if self.label_folds == 1 {
            return Err(Error::Invalid("--label-folds 1: a label check needs at least 2 folds (or 0 for none)".into()));
        }
        Ok(ReportOptions {
            duplicates: DuplicateOptions { threshold: self.duplicate_threshold },
            cross_validation: (self.label_folds > 0).then_some(CrossValidation { folds: self.label_folds, epochs: self.label_epochs }),
        })
    }
}

/// Leaving out of a search the training images a report flagged.
#[derive(clap::Args, Debug, Clone)]
pub struct ExcludeArgs {
    /// Leave out of the training set the images that the report in this folder flagged: those with
    /// a duplicate in the test set, and the label suspects of at least --exclude-confidence.
    #[arg(long, value_name = "REPORT_DIR")]
    pub exclude_flagged: Option<PathBuf>,
    /// The least confidence in the suggested label for a suspect to be left out.
    #[arg(long, default_value_t = 0.9, value_parser = parse_share)]
    pub exclude_confidence: f64,
}

impl ExcludeArgs {
    /// `train` (and the files behind it, when any) without the flagged images: unchanged without
    /// --exclude-flagged. Says how many it left out.
    pub fn apply(&self, train: ImageSet, files: Vec<ImageFile>) -> Result<(ImageSet, Vec<ImageFile>)> {
        let Some(dir) = &self.exclude_flagged else { return Ok((train, files)) };
        let flagged = flagged_training_images(dir, &train, self.exclude_confidence)?;
        let all = flagged.all();
        println!(
            "Left out {} training images flagged by {}: {} with a duplicate in the test set, {} label suspects of confidence {} or more",
            all.len(),
            dir.display(),
            flagged.leaks.len(),
            flagged.suspects.len(),
            self.exclude_confidence
        );
        let files = files.into_iter().enumerate().filter(|(i, _)| !all.contains(i)).map(|(_, f)| f).collect();
        Ok((without(&train, &all), files))
    }
}

/// Makes the report of the search in `store` and writes it into `dir`.
pub fn write_search_report(
    device: &Device,
    name: &str,
    sources: &Sources,
    store: &dyn Store,
    config: &ClassifierConfig,
    args: &ReportArgs,
    dir: &Path,
) -> Result<()> {
    let report = search_report(device, name, sources, store, config, &args.options()?)?;
    let files = report.write(dir, sources)?;
    println!("Report: {} (made in {:.0}s; lists as CSV and JSON beside it)", files.html.display(), report.seconds);
    Ok(())
}

/// `netmorph report`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportCommandArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub report: ReportArgs,
    /// Where to write report.html and its lists.
    #[arg(long, default_value = "netmorph-report")]
    pub out: PathBuf,
    /// Also draw the search in this search directory, with its final model's mistakes and its best
    /// architecture's label check.
    #[arg(long, conflicts_with = "storage")]
    pub search_dir: Option<PathBuf>,
    /// Also draw this study of a PostgreSQL store (with --study).
    #[arg(long, value_name = "URL", requires = "study")]
    pub storage: Option<String>,
    /// The study in --storage to draw.
    #[arg(long, requires = "storage")]
    pub study: Option<String>,
    /// Without a search: the architecture (graph JSON) whose k-fold copies check the training labels.
    #[arg(long, conflicts_with_all = ["search_dir", "storage"])]
    pub architecture: Option<PathBuf>,
    /// Without a search: a trained model (`<path>.json` + `<path>.safetensors`) whose test-set
    /// predictions give the confusion matrix, the mistakes and the test-set label suspects.
    #[arg(long, conflicts_with_all = ["search_dir", "storage"])]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Seeds the test split (when the data has none) and the label check.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `netmorph report`: the data's health alone, or with a given architecture's label check and a
/// model's test predictions, or with a whole search.
pub fn run_report(args: &ReportCommandArgs) -> Result<()> {
    let options = args.report.options()?;
    // The model and the architecture are read before the data, so a wrong path costs nothing.
    let model = args.model.as_deref().map(super::model_files).transpose()?;
    let architecture = args.architecture.as_deref().map(Graph::load_architecture).transpose()?;
    let loaded = args.data.load(args.seed)?;
    let sources = Sources::of(&loaded);
    let name = args.data.data.display().to_string();
    let config =
        ClassifierConfig { verbose: true, ..args.training.classifier_config(args.seed, loaded.class_names.clone(), &loaded.train)? };
    let store: Option<Box<dyn Store>> = match (&args.search_dir, &args.storage, &args.study) {
        (Some(dir), _, _) => {
            // Reading first: a folder without a search is an error, not a new, empty search.
            SearchDir::read_state(dir)?;
            Some(Box::new(SearchDir::open(dir, true, "report")?))
        }
        (None, Some(url), Some(study)) => Some(Box::new(PgStore::open_existing(url, study)?)),
        _ => None,
    };
    let needs_device = store.is_some() || args.model.is_some() || (args.architecture.is_some() && options.cross_validation.is_some());
    let device = if needs_device { Some(Device::new()?) } else { None };
    let report = match (&store, &device) {
        (Some(store), Some(device)) => search_report(device, &name, &sources, store.as_ref(), &config, &options)?,
        _ => {
            let start = Instant::now();
            let mut report = Report::of_data(&name, &sources, &options);
            println!("Data checked in {:.1}s", report.health.seconds);
            if let (Some(device), Some((json, weights))) = (&device, &model) {
                let took = Instant::now();
                let probabilities = ImageClassifier::load(device, json, weights)?.probabilities(&loaded.test)?;
                report.evaluation = Some(TestEvaluation::of(&probabilities, &loaded.test)?);
                report.test_labels = Some(test_label_issues(&probabilities, &loaded.test, took.elapsed())?);
            }
            if let (Some(device), Some(architecture), Some(cv)) = (&device, &architecture, &options.cross_validation) {
                report.train_labels = Some(training_label_issues(device, &config, architecture, &loaded.train, cv, None)?);
            }
            report.seconds = start.elapsed().as_secs_f64();
            report
        }
    };
    let files = report.write(&args.out, &sources)?;
    println!("Report: {} (made in {:.0}s; lists as CSV and JSON beside it)", files.html.display(), report.seconds);
    Ok(())
}
