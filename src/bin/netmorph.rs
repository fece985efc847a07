//! `netmorph`: architecture search by network morphism on your own images, and the model's
//! life after it (train, evaluate, predict, export to ONNX, summary). The options and the work
//! live in the library (`netmorph::cli`); this file parses and dispatches.

use clap::{Parser, Subcommand};
use netmorph::cli::model::{EvaluateArgs, ExportArgs, PredictArgs, SummaryArgs, TrainArgs};
use netmorph::cli::report::{run_report, ReportCommandArgs};
use netmorph::cli::search::{run_search, SearchArgs, StorageArgs};
use netmorph::cli::DataArgs;
use netmorph::report::Sources;
use netmorph::{Device, Result};

#[derive(Parser)]
#[command(name = "netmorph", version, about = "Architecture search by network morphism on any GPU (wgpu)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Search architectures within a time limit, then export the best (with its ensemble).
    // Negative values reach the option's own check, which names the problem.
    #[command(allow_negative_numbers = true)]
    Search {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        search: Box<SearchArgs>,
    },
    /// Is the data dirty? Class balance, duplicates, blank images, odd sizes and suspected label
    /// errors, with the search drawn when one is given: one HTML page, with CSV and JSON beside it.
    #[command(allow_negative_numbers = true)]
    Report(Box<ReportCommandArgs>),
    /// The table of a search: its trials by state, each one's worker, times and validation
    /// figures, and the best so far (a study in --storage, or --search-dir).
    Status(StorageArgs),
    /// Train a given architecture (graph JSON) from scratch.
    #[command(allow_negative_numbers = true)]
    Train(TrainArgs),
    /// Loss and accuracy of a saved model on a data set.
    #[command(allow_negative_numbers = true)]
    Evaluate(EvaluateArgs),
    /// Predict the class of image files: CSV of file, class, probability.
    #[command(allow_negative_numbers = true)]
    Predict(PredictArgs),
    /// Write a saved model as ONNX.
    #[command(allow_negative_numbers = true)]
    Export(ExportArgs),
    /// Layers, shapes, parameters, input normalisation and classes of a saved model.
    #[command(allow_negative_numbers = true)]
    Summary(SummaryArgs),
}

fn main() {
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Search { data, search } => {
            search.storage.check()?;
            let mut loaded = data.load(search.seed)?;
            (loaded.train, loaded.train_files) = search.exclude.apply(loaded.train, loaded.train_files)?;
            run_search(&search.device.open()?, &search, &data.data.display().to_string(), &Sources::of(&loaded))
        }
        Command::Report(args) => run_report(&args),
        Command::Status(args) => args.print_status(),
        Command::Train(args) => netmorph::cli::model::train(&Device::new()?, &args),
        Command::Evaluate(args) => netmorph::cli::model::evaluate(&Device::new()?, &args),
        Command::Predict(args) => netmorph::cli::model::predict(&Device::new()?, &args),
        Command::Export(args) => netmorph::cli::model::export(&args),
        Command::Summary(args) => netmorph::cli::model::summary(&args),
    }
}
