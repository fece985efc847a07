//! Per-epoch output in the Keras style: a progress bar on a terminal, plain lines otherwise
//! (logs, CI), and the closing "N/N - 12s 25ms/step - loss: ..." line.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub(super) struct Progress {
    bar: Option<ProgressBar>,
    verbose: bool,
    total: usize,
}

impl Progress {
    pub fn new(verbose: bool, epoch: usize, epochs: usize, total: usize) -> Progress {
        if verbose {
            println!("Epoch {epoch}/{epochs}");
        }
        let bar = (verbose && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{pos}/{len} [{bar:30.cyan/blue}] - ETA {eta} - {msg}")
                    .expect("valid template")
                    .progress_chars("=>."),
            );
            bar
        });
        Progress { bar, verbose, total }
    }

    pub fn update(&mut self, seen: usize, mean_loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(seen as u64);
            bar.set_message(format!("loss: {mean_loss:.4}"));
        }
    }

    pub fn finish_line(&mut self, line: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.verbose && !line.is_empty() {
            println!("{0}/{0} - {line}", self.total);
        }
    }
}
