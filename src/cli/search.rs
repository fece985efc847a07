//! The search job as `netmorph search` and the `autokeras_search` example run it: search within a
//! time limit, choose the ensemble on the validation set, train the final member, export the
//! model (JSON + safetensors, and ONNX), and report test accuracy. The test set chooses nothing.

use super::report::{write_search_report, ExcludeArgs, ReportArgs};
use super::{parse_fraction, parse_positive, parse_positive_real, parse_quantile, parse_share, parse_time_limit, TrainingArgs};
use crate::data::ImageSet;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{CnnConfig, ResNetConfig};
use crate::report::Sources;
use crate::search::classifier::{ClassifierConfig, Generator, ImageClassifier};
use crate::search::options::{AutoOr, FinalFitKind};
use crate::search::store::{worker_name, PgStore, SearchDir, Store, FINAL_OUTCOME};
use crate::search::{format_duration, EarlyRanking, TimeBudget};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The search's options.
#[derive(clap::Args, Debug, Clone)]
pub struct SearchArgs {
    /// The time for everything, search and final fit, such as 30m or 2h (at most a year).
    #[arg(long, default_value = "2h", value_parser = parse_time_limit)]
    pub time_limit: Duration,
    /// The share of --time-limit kept for the ensemble selection and the final fit (the search gets
    /// the rest). Without a final fit (--final-epochs 0), 2% for the selection alone.
    #[arg(long, default_value_t = 0.25, value_parser = parse_fraction)]
    pub final_share: f64,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    /// Seeds the search: the same seed gives the same sequence of architectures on the same adapter.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Width (filters) of the generator's convolutions, or `auto`: the widest of 64 (AutoKeras's),
    /// 48, 32, 24 and 16 whose first model can train 10 epochs within its share of the search
    /// time, judged by timing a few training steps on this adapter.
    #[arg(long, default_value_t = AutoOr::Auto)]
    pub width: AutoOr,
    /// Number of the generator's conv blocks.
    #[arg(long, default_value_t = 3, value_parser = parse_positive)]
    pub blocks: usize,
    /// Also start from a small ResNet.
    #[arg(long)]
    pub resnet: bool,
    /// Epoch cap of the generators' models.
    #[arg(long, default_value_t = 40, value_parser = parse_positive)]
    pub max_epochs: usize,
    /// Epoch cap of children (they start from their father's trained weights).
    #[arg(long, default_value_t = 15, value_parser = parse_positive)]
    pub child_epochs: usize,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// The most of the search time left that one model may train for (1: no cap, as AutoKeras).
    #[arg(long, default_value_t = 0.4, value_parser = parse_share)]
    pub model_share: f64,
    /// Rank children early (the median-stopping rule): from this epoch on, a child whose best
    /// validation accuracy so far is below --ranking-quantile of the finished children's at the
    /// same epoch stops, and its time goes to other proposals; 0 turns the rule off.
    #[arg(long, value_name = "EPOCHS", default_value_t = 2)]
    pub early_ranking: usize,
    /// The share of finished children a child must not fall below to train on (0.5: the median;
    /// lower stops fewer), above 0 and below 1.
    #[arg(long, value_name = "Q", default_value_t = 0.5, value_parser = parse_quantile)]
    pub ranking_quantile: f64,
    /// Stop the search after this many models in the search directory.
    #[arg(long, value_parser = parse_positive)]
    pub max_models: Option<usize>,
    /// The most searched models averaged into the final model, chosen on the validation set by
    /// greedy selection (1: the best alone, as AutoKeras).
    #[arg(long, default_value_t = 4, value_parser = parse_positive)]
    pub ensemble: usize,
    /// Most epochs of the final fit on the whole training set (0: none); fewer when the time
    /// limit would not hold them. Its learning rate falls along a cosine over the epochs it gets.
    #[arg(long, default_value_t = 30)]
    pub final_epochs: usize,
    /// With --final-fit continue, the final fit trains at the learning rate times this
    /// (default 0.1).
    #[arg(long, value_parser = parse_positive_real)]
    pub final_lr_scale: Option<f32>,
    /// What the final fit trains: a fresh copy of the best architecture that joins the ensemble
    /// (member), the best from its searched weights (continue), a fresh copy in the best's place
    /// (retrain), or auto: a member where the final fit has time for 6 epochs or more, else
    /// continue.
    #[arg(long, value_enum, default_value_t = FinalFitKind::Auto)]
    pub final_fit: FinalFitKind,
    /// Write the final model here (<path>.json, <path>.safetensors and <path>.onnx); default:
    /// <search-dir>/final.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// No report at the end (report.html in the search directory, or <study>-report/).
    #[arg(long)]
    pub no_report: bool,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub exclude: ExcludeArgs,
}

impl SearchArgs {
    /// The classifier's configuration, the generators not yet chosen (see [`run_search`]).
    pub fn classifier_config(&self, class_names: Vec<String>, train: &ImageSet) -> Result<ClassifierConfig> {
        let mut config = ClassifierConfig {
            search_dir: self.storage.search_dir.clone(),
            resume: self.storage.resume,
            max_epochs: self.max_epochs,
            child_epochs: self.child_epochs,
            max_models: self.max_models,
            ensemble_size: self.ensemble,
            model_share: self.model_share,
            early_ranking: (self.early_ranking > 0)
                .then_some(EarlyRanking { grace_epochs: self.early_ranking, quantile: self.ranking_quantile }),
            ..self.training.classifier_config(self.seed, class_names, train)?
        };
        if let Some(scale) = self.final_lr_scale {
            config.final_lr_scale = scale;
        }
        Ok(config)
    }

    /// Where the report goes: the search directory, or `<study>-report` beside a shared study.
    pub fn report_dir(&self) -> PathBuf {
        match &self.storage.study {
            Some(study) => PathBuf::from(format!("{study}-report")),
            None => self.storage.search_dir.clone(),
        }
    }
}

/// Where a search is kept: a search directory (one process), or a study in PostgreSQL that any
/// number of workers share.
#[derive(clap::Args, Debug, Clone)]
pub struct StorageArgs {
    /// Where the history, every model and the best are kept (locked by the process that runs it).
    #[arg(long, default_value = "autokeras-search")]
    pub search_dir: PathBuf,
    /// Continue the search in --search-dir. It gets a fresh --time-limit, counted from now.
    #[arg(long)]
    pub resume: bool,
    /// Share the search with other workers through a PostgreSQL database
    /// (postgres://user:password@host/db) instead of --search-dir. Every process started with the
    /// same --storage and --study joins one search, on any machine; the study's time limit is set
    /// by its first worker and holds for all.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// The study's name in --storage (created by its first worker).
    #[arg(long, requires = "storage")]
    pub study: Option<String>,
    /// How long a worker may be silent (killed, cut off) before another worker trains its model
    /// again. Heartbeats go every sixth of it.
    #[arg(long, default_value = "60s", value_parser = parse_time_limit)]
    pub lease: Duration,
}

impl StorageArgs {
    /// The options that go together: `--storage` with `--study`, and `--resume` without them (a
    /// study is joined, whatever it holds). Checked before the data is read.
    pub fn check(&self) -> Result<()> {
        match (&self.storage, &self.study) {
            (Some(_), None) | (None, Some(_)) => {
                Err(Error::Invalid("--storage needs --study NAME: the study that the workers share".into()))
            }
            (Some(_), Some(_)) if self.resume => {
                Err(Error::Invalid("--resume is for --search-dir: a worker with --storage joins its study, whatever it holds".into()))
            }
            _ => Ok(()),
        }
    }

    /// Opens the store (locking a search directory) for `worker` ([`worker_name`]).
    pub fn open(&self, worker: &str) -> Result<Box<dyn Store>> {
        self.check()?;
        match (&self.storage, &self.study) {
            (Some(url), Some(study)) => Ok(Box::new(PgStore::open(url, study, worker, self.lease)?)),
            _ => Ok(Box::new(SearchDir::open(&self.search_dir, self.resume, worker)?)),
        }
    }

    /// Opens the search that is there already, to read it (a report): the search directory (locked
    /// while open) or the study.
    pub fn open_existing(&self) -> Result<Box<dyn Store>> {
        self.check()?;
        match (&self.storage, &self.study) {
            (Some(url), Some(study)) => Ok(Box::new(PgStore::open_existing(url, study)?)),
            _ => {
                SearchDir::read_state(&self.search_dir)?;
                Ok(Box::new(SearchDir::open(&self.search_dir, true, "report")?))
            }
        }
    }

    /// Prints the study's table (or the search directory's): trials by state, each one's worker,
    /// times and validation figures, and the best so far.
    pub fn print_status(&self) -> Result<()> {
        let (name, state) = match (&self.storage, &self.study) {
            (Some(url), Some(study)) => {
                let store = PgStore::open_existing(url, study)?;
                (store.name(), store.state()?)
            }
            (Some(url), None) => {
                let studies = PgStore::studies(url)?;
                println!("Studies: {}", if studies.is_empty() { "none".to_string() } else { studies.join(", ") });
                return Ok(());
            }
            _ => (format!("the search directory {}", self.search_dir.display()), SearchDir::read_state(&self.search_dir)?),
        };
        print!("{}", crate::search::report::status(&name, &state));
        Ok(())
    }
}

/// Runs the whole job on the training set of `data` (and reports on its test set, which chooses
/// nothing), then writes the report (unless `--no-report`). With a shared store, the ensemble
/// selection, the final fit and the report run on one worker; the others stop after the search.
pub fn run_search(device: &Device, args: &SearchArgs, name: &str, data: &Sources) -> Result<()> {
    let (train, test) = (data.train, data.test);
    let class_names = data.class_names.to_vec();
    args.report.options()?;
    // Checked before the store is opened: a refused option leaves nothing behind.
    let mut config = args.classifier_config(class_names, train)?;
    let start = Instant::now();
    let store = args.storage.open(&worker_name(&device.name()))?;
    let time = store.deadline(args.time_limit)?;
    let budget = TimeBudget::split(time.total, args.final_share, args.final_epochs, args.ensemble)?;
    let used = time.total.saturating_sub(time.left);
    let search_left = budget.search.saturating_sub(used);
    println!("Device: {}", device.name());
    println!("Storage: {} (worker {})", store.name(), store.worker());
    let deadline = start + time.left;
    // A second, or less, went by since the study began: this worker began it.
    if used < Duration::from_secs(1) {
        let fresh = if args.storage.resume && args.storage.storage.is_none() {
            " (a resumed search gets a fresh limit, counted from now)"
        } else {
            ""
        };
        println!(
            "Time limit {}{fresh}: {} for the search, the rest for the ensemble selection and the final fit",
            format_duration(budget.total),
            format_duration(budget.search)
        );
    } else {
        println!(
            "The study's time limit is {} (set by its first worker): {} of it left, {} of that for the search",
            format_duration(time.total),
            format_duration(time.left),
            format_duration(search_left)
        );
    }
    let cnn = CnnConfig { blocks: args.blocks, ..Default::default() };
    let probe = ImageClassifier::new(device, config.clone());
    let width = probe.generator_width(&*store, train, &cnn, args.width.value(), search_left.mul_f64(args.model_share))?;
    println!("Generator width {width}");
    config.generators = vec![Generator::Cnn(CnnConfig { width, ..cnn })];
    if args.resnet {
        config.generators.push(Generator::ResNet(ResNetConfig { width: (width / 4).max(4), ..Default::default() }));
    }
    let mut classifier = ImageClassifier::new(device, config);
    if classifier.fit_with(&*store, train, search_left)?.is_none() {
        println!("This worker's part of the search is done ({})", format_duration(start.elapsed()));
        return Ok(());
    }
    println!("Search and ensemble selection took {}", format_duration(start.elapsed()));
    if let Some(graph) = classifier.best_graph() {
        println!("{}", graph.summary()?);
    }
    if let Some(chosen) = classifier.ensemble().last() {
        println!("Ensemble: models {:?} (val loss {:.4}, val accuracy {:.4})", chosen.members, chosen.val_loss, chosen.val_accuracy);
    }
    let mut final_fit = None;
    if args.final_epochs > 0 {
        println!("Final fit ({:?}) on all {} training images (at most {} epochs)", args.final_fit, train.n, args.final_epochs);
        final_fit = Some(classifier.final_fit(train, args.final_epochs, args.final_fit.into(), Some(deadline))?);
        println!("Search and final fit took {} (limit {})", format_duration(start.elapsed()), format_duration(budget.total));
    }
    let export = args.export.clone().unwrap_or_else(|| match &args.storage.study {
        Some(study) => PathBuf::from(format!("{study}-final")),
        None => args.storage.search_dir.join("final"),
    });
    let (json, weights, onnx) = (export.with_extension("json"), export.with_extension("safetensors"), export.with_extension("onnx"));
    classifier.export(&json, &weights)?;
    println!("Exported the model to {} and {}", json.display(), weights.display());
    let served = classifier.model_graph().expect("exported above");
    // The model is saved already: an ONNX failure is reported, and loses nothing.
    match crate::export::write_onnx(served, &onnx) {
        Ok(()) => println!("Exported the model as ONNX to {}", onnx.display()),
        Err(e) => eprintln!("warning: no ONNX export ({e}); the model is in {}", json.display()),
    }
    let mut outcome = serde_json::json!({
        "worker": store.worker(),
        "ensemble": classifier.ensemble().last().map(|s| s.members.clone()),
        "seconds": start.elapsed().as_secs_f64(),
        "final_fit": final_fit,
        "final_fit_kind": classifier.final_fit_kind().map(|kind| format!("{kind:?}")),
        "test_time_shifts": served.test_time_shifts(),
    });
    if !served.test_time_shifts().is_empty() {
        println!("Test-time augmentation: the model averages {} shifted copies of each image", served.test_time_shifts().len());
    }
    if test.n > 0 {
        let eval = classifier.evaluate(test)?;
        println!("Test loss: {:.4}", eval.loss);
        println!("Test accuracy: {:.4}", eval.accuracy);
        outcome["test_loss"] = eval.loss.into();
        outcome["test_accuracy"] = eval.accuracy.into();
    }
    if let Some(tuning) = device.tuning_summary() {
        println!("{tuning}");
        outcome["kernel_tuning_seconds"] = tuning.spent.as_secs_f64().into();
    }
    // The final model itself is in the study too, for workers on other machines.
    store.put_file("final.json", served.to_json().as_bytes())?;
    store.put_file("final.safetensors", &served.weights_to_safetensors()?)?;
    store.put(FINAL_OUTCOME, &outcome)?;
    if !args.no_report {
        let config = ClassifierConfig { verbose: true, ..args.classifier_config(data.class_names.to_vec(), data.train)? };
        // Everything the search made is saved already: a failed report is reported, and loses nothing.
        if let Err(e) = write_search_report(device, name, data, &*store, &config, &args.report, &args.report_dir()) {
            eprintln!(
                "warning: no report ({e}); the search and its model are saved: `netmorph report DATA --search-dir DIR` makes it again"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        search: SearchArgs,
    }

    fn ranking_of(args: &[&str]) -> std::result::Result<Option<EarlyRanking>, String> {
        let command = Command::try_parse_from(std::iter::once("search").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        let images = ImageSet::new(vec![0; 2 * 28 * 28], vec![0, 1], 1, 28, 28, 2).unwrap();
        Ok(command.search.classifier_config(vec![], &images).unwrap().early_ranking)
    }

    #[test]
    fn early_ranking_is_on_by_default_and_set_by_its_options() {
        assert_eq!(ranking_of(&[]).unwrap(), Some(EarlyRanking { grace_epochs: 2, quantile: 0.5 }));
        assert_eq!(
            ranking_of(&["--early-ranking", "4", "--ranking-quantile", "0.25"]).unwrap(),
            Some(EarlyRanking { grace_epochs: 4, quantile: 0.25 })
        );
        assert_eq!(ranking_of(&["--early-ranking", "0"]).unwrap(), None, "0 turns it off");
        for bad in ["0", "1", "1.5", "-0.2", "NaN", "half"] {
            let err = ranking_of(&[&format!("--ranking-quantile={bad}")]).unwrap_err();
            assert!(err.contains("--ranking-quantile") && err.contains("above 0 and below 1"), "{err}");
        }
        let err = ranking_of(&["--early-ranking=-1"]).unwrap_err();
        assert!(err.contains("--early-ranking"), "{err}");
    }
}
