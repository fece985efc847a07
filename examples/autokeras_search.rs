//! AutoKeras 0.3's image classifier on MNIST: search architectures by network morphism within a
//! time limit, choose on the validation set which searched models to average with the best, train
//! a fresh copy of the best on the whole training set as one more member, and report the
//! ensemble's test accuracy. `netmorph search DATA` runs the same job on any data.
//!
//! ```text
//! cargo run --release --example autokeras_search -- --time-limit 2h
//! cargo run --release --example autokeras_search -- --time-limit 2h --resume      # after a crash
//! cargo run --release --example autokeras_search -- --time-limit 2h --storage postgres://host/db --study mnist   # one per worker
//! cargo run --release --example autokeras_search -- --status --storage postgres://host/db --study mnist
//! cargo run --release --example autokeras_search -- --report       # rebuild the search directory's report
//! ```
//!
//! The search directory keeps every model and the history; `--resume` continues it without
//! training any finished model again. At the end it writes `report.html` (the data's health, the
//! search drawn, the final model's mistakes) into it. The test set is only used for the report.

use clap::Parser;
use netmorph::cli::report::write_search_report;
use netmorph::cli::search::{run_search, SearchArgs};
use netmorph::cli::{limit_and_shrink, parse_positive};
use netmorph::data::{default_data_dir, Mnist};
use netmorph::report::Sources;
use netmorph::search::classifier::ClassifierConfig;
use netmorph::Result;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Architecture search by network morphism on MNIST (AutoKeras 0.3's ImageClassifier)", allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    search: SearchArgs,
    /// Use only the first N training images.
    #[arg(long, value_parser = parse_positive)]
    train_limit: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long, value_parser = parse_positive)]
    test_limit: Option<usize>,
    /// Folder holding the MNIST files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shrink the images by averaging FxF blocks (quick runs: 2 gives 14x14 MNIST).
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    downsample: usize,
    /// Print the search's table (its trials, their workers and figures, the best) and exit.
    #[arg(long)]
    status: bool,
    /// Make the report of the search already in --search-dir (or --storage's --study) again, and exit.
    #[arg(long, conflicts_with = "status")]
    report: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if args.status {
        return args.search.storage.print_status();
    }
    args.search.storage.check()?;
    let mnist = Mnist::load(args.data_dir.clone().unwrap_or_else(default_data_dir))?;
    let train = limit_and_shrink(&mnist.train, args.train_limit, args.downsample)?;
    let test = limit_and_shrink(&mnist.test, args.test_limit, args.downsample)?;
    let (train, _) = args.search.exclude.apply(train, Vec::new())?;
    let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let sources = Sources::sets(&train, &test, &digits);
    if args.report {
        let store = args.search.storage.open_existing()?;
        let config = ClassifierConfig { verbose: true, ..args.search.classifier_config(digits.clone(), &train)? };
        return write_search_report(
            &args.search.device.open()?,
            "MNIST",
            &sources,
            &*store,
            &config,
            &args.search.report,
            &args.search.report_dir(),
        );
    }
    run_search(&args.search.device.open()?, &args.search, "MNIST", &sources)
}
