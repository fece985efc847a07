//! Test accuracy of a saved model (`<name>.json` and `<name>.safetensors`, as the search and
//! `mnist_baseline --save` write them) on the MNIST test set.
//!
//! ```text
//! cargo run --release --example evaluate_model -- autokeras-search/models/model_3
//! ```

use netmorph::data::{default_data_dir, Mnist};
use netmorph::search::classifier::ImageClassifier;
use netmorph::{Device, Error, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let base = std::env::args().nth(1).map(PathBuf::from).ok_or_else(|| {
        Error::Invalid("usage: evaluate_model <path without extension> (reads <path>.json and <path>.safetensors)".into())
    })?;
    let device = Device::new()?;
    let classifier = ImageClassifier::load(&device, &base.with_extension("json"), &base.with_extension("safetensors"))?;
    let test = Mnist::load(default_data_dir())?.test;
    let score = classifier.evaluate(&test)?;
    println!("{}: test loss {:.4}, test accuracy {:.4} on {} images", base.display(), score.loss, score.accuracy, test.n);
    Ok(())
}
