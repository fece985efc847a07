//! The commands on one model: train an architecture, evaluate, predict, export to ONNX, and
//! summarise.

use super::{model_files, parse_positive, DataArgs, TrainingArgs};
use crate::data::{read_images, ImageSet};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::search::classifier::{FinalFit, ImageClassifier};
use crate::search::options::TestTimeShifts;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `netmorph train`: one given architecture, trained from scratch on the data's training set.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The architecture: a netmorph graph JSON (its weights, if any, are not used).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 12, value_parser = parse_positive)]
    pub epochs: usize,
    #[command(flatten)]
    pub training: TrainingArgs,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the trained model here: <path>.json, <path>.safetensors and <path>.onnx.
    #[arg(long, default_value = "model")]
    pub out: PathBuf,
}

/// Trains the architecture, saves it and reports its test accuracy.
pub fn train(device: &Device, args: &TrainArgs) -> Result<()> {
    let data = args.data.load(args.seed)?;
    let architecture = Graph::load_architecture(&args.model)?;
    let config = args.training.classifier_config(args.seed, data.class_names.clone(), &data.train)?;
    let mut classifier = ImageClassifier::from_architecture(device, config, &architecture, &data.train)?;
    println!("Device: {}", device.name());
    print!("{}", classifier.model_graph().expect("set by from_architecture").summary()?);
    let history = classifier.final_fit(&data.train, args.epochs, FinalFit::Retrain, None)?;
    let seconds: f64 = history.epochs.iter().map(|e| e.seconds).sum();
    println!("Trained {} epochs in {seconds:.1}s", history.epochs.len());
    save(&classifier, &args.out)?;
    if data.test.n > 0 {
        let eval = classifier.evaluate(&data.test)?;
        println!("Test loss {:.4}, test accuracy {:.4} on {} images", eval.loss, eval.accuracy, data.test.n);
    }
    Ok(())
}

/// Writes the classifier's model as `<stem>.json`, `<stem>.safetensors` and `<stem>.onnx`.
fn save(classifier: &ImageClassifier, stem: &Path) -> Result<()> {
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let (json, weights, onnx) = (stem.with_extension("json"), stem.with_extension("safetensors"), stem.with_extension("onnx"));
    classifier.export(&json, &weights)?;
    crate::export::write_onnx(classifier.model_graph().expect("exported above"), &onnx)?;
    println!("Saved the model to {}, {} and {}", json.display(), weights.display(), onnx.display());
    Ok(())
}

/// Which images of the data `netmorph evaluate` scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    Test,
    Train,
    /// Training and test images together (a data set kept only for evaluation).
    All,
}

/// `netmorph evaluate`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvaluateArgs {
    /// The model: <path>.json with <path>.safetensors, or a folder holding model.json or final.json.
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Seeds the test split of data that has none.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub shifts: ShiftsOverride,
}

/// Test-time shifts that replace a saved model's own.
#[derive(clap::Args, Debug, Clone)]
pub struct ShiftsOverride {
    /// Test-time augmentation instead of the model's own: the mean over none, cross (5) or square
    /// (9) shifted copies of each image.
    #[arg(long, value_enum, value_name = "COPIES")]
    pub test_time_shifts: Option<TestTimeShifts>,
}

impl ShiftsOverride {
    /// `graph` with these shifts, if any are given.
    fn apply(&self, graph: &mut Graph) -> Result<()> {
        let Some(kind) = self.test_time_shifts else {
            return Ok(());
        };
        graph.set_test_time_shifts(kind.shifts()).map_err(|e| Error::Invalid(format!("--test-time-shifts {kind}: {e}")))
    }
}

/// Loss and accuracy of a saved model on a data set.
pub fn evaluate(device: &Device, args: &EvaluateArgs) -> Result<()> {
    let classifier = load_classifier(device, &args.model, &args.shifts)?;
    let data = args.data.load(args.seed)?;
    let set = match args.split {
        Split::Test => data.test,
        Split::Train => data.train,
        Split::All => concat(&data.train, &data.test)?,
    };
    let eval = classifier.evaluate(&set)?;
    println!("{}: loss {:.4}, accuracy {:.4} on {} images", args.model.display(), eval.loss, eval.accuracy, set.n);
    Ok(())
}

fn concat(a: &ImageSet, b: &ImageSet) -> Result<ImageSet> {
    ImageSet::new(
        [&a.images[..], &b.images].concat(),
        [&a.labels[..], &b.labels].concat(),
        a.channels,
        a.height,
        a.width,
        a.classes.max(b.classes),
    )
}

fn load_classifier(device: &Device, model: &Path, shifts: &ShiftsOverride) -> Result<ImageClassifier> {
    let (json, weights) = model_files(model)?;
    let mut graph = Graph::load(&json, &weights)?;
    shifts.apply(&mut graph)?;
    ImageClassifier::from_graph(device, graph)
}

/// `netmorph predict`.
#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// The model: <path>.json with <path>.safetensors, or a folder holding model.json or final.json.
    pub model: PathBuf,
    /// Image files (PNG, JPEG, BMP, GIF).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Resize images to the model's input size (otherwise another size is an error).
    #[arg(long)]
    pub resize: bool,
    /// Write the CSV here instead of to standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub shifts: ShiftsOverride,
}

/// Images predicted at a time: bounds the memory of a long list of files.
const PREDICT_CHUNK: usize = 1024;

/// Writes `file,class,probability` for each image: the most probable class (its name when the
/// model has names) and its probability.
pub fn predict(device: &Device, args: &PredictArgs) -> Result<()> {
    let classifier = load_classifier(device, &args.model, &args.shifts)?;
    let graph = classifier.model_graph().expect("a loaded classifier has a model");
    let [c, h, w] = match graph.input_shape() {
        &[c, h, w] => [c, h, w],
        other => return Err(Error::Invalid(format!("predict takes image models; this one takes {other:?}"))),
    };
    let names = graph.class_names().to_vec();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let out_path = args.output.clone().unwrap_or_else(|| PathBuf::from("(standard output)"));
    let write_err = |e| Error::io(&out_path, e);
    writeln!(out, "file,class,probability").map_err(write_err)?;
    for paths in args.images.chunks(PREDICT_CHUNK) {
        let images = read_images(paths, c, h, w, args.resize)?;
        let set = ImageSet::new(images, vec![0; paths.len()], c, h, w, 1)?;
        for (path, probs) in paths.iter().zip(classifier.probabilities(&set)?) {
            let (class, p) = probs.iter().enumerate().fold((0, f32::MIN), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
            let name = names.get(class).cloned().unwrap_or_else(|| class.to_string());
            writeln!(out, "{},{},{p:.6}", csv_field(&path.display().to_string()), csv_field(&name)).map_err(write_err)?;
        }
    }
    out.flush().map_err(write_err)
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `netmorph export`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The model: <path>.json with <path>.safetensors, or a folder holding model.json or final.json.
    pub model: PathBuf,
    /// Write the model as ONNX here.
    #[arg(long)]
    pub onnx: PathBuf,
    #[command(flatten)]
    pub shifts: ShiftsOverride,
}

pub fn export(args: &ExportArgs) -> Result<()> {
    let (json, weights) = model_files(&args.model)?;
    let mut graph = Graph::load(&json, &weights)?;
    args.shifts.apply(&mut graph)?;
    crate::export::write_onnx(&graph, &args.onnx)?;
    println!("Wrote {} (input: float32 NCHW pixels / 255; output: class probabilities)", args.onnx.display());
    Ok(())
}

/// `netmorph summary`.
#[derive(clap::Args, Debug, Clone)]
pub struct SummaryArgs {
    /// The model: <path>.json with <path>.safetensors, or a folder holding model.json or final.json.
    pub model: PathBuf,
}

/// The model's layers, shapes and parameter counts, its input normalisation and class names.
pub fn summary(args: &SummaryArgs) -> Result<()> {
    let (json, weights) = model_files(&args.model)?;
    let graph = Graph::load(&json, &weights)?;
    print!("{}", graph.summary()?);
    match graph.input_normalization() {
        Some(norm) => println!("Input: pixels / 255, normalised per channel: mean {:?}, std {:?}", norm.mean, norm.std),
        None => println!("Input: pixels / 255"),
    }
    if !graph.class_names().is_empty() {
        println!("Classes: {}", graph.class_names().join(", "));
    }
    if !graph.test_time_shifts().is_empty() {
        println!("Test-time augmentation: the mean over {} shifted copies {:?}", graph.test_time_shifts().len(), graph.test_time_shifts());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a.png"), "a.png");
        assert_eq!(csv_field("a,b.png"), "\"a,b.png\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
