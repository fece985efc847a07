//! The search's choices as a command line names them (`clap::ValueEnum`), each turned into the
//! library's configuration with its values checked.

use super::classifier::{FinalFit, OptimizerConfig};
use crate::error::{Error, Result};
use crate::train::LrSchedule;
use std::str::FromStr;

/// The optimizer each searched model trains with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerKind {
    Adam,
    Adadelta,
    Sgd,
}

impl OptimizerKind {
    /// The optimizer at learning rate `lr`, or its usual default: 1e-3 for Adam, 1.0 for
    /// Adadelta (Keras 2's, with rho 0.95 and epsilon 1e-7), 0.01 for SGD; with `weight_decay`
    /// (Adam's decoupled, SGD's L2; Adadelta has none, so it takes only 0).
    pub fn config(self, lr: Option<f32>, weight_decay: f32) -> Result<OptimizerConfig> {
        if let Some(lr) = lr {
            if !(lr > 0.0 && lr.is_finite()) {
                return Err(Error::Invalid(format!("--lr {lr} must be a positive number")));
            }
        }
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return Err(Error::Invalid(format!("--weight-decay {weight_decay} must be a number of at least 0")));
        }
        Ok(match self {
            OptimizerKind::Adam => OptimizerConfig::Adam { lr: lr.unwrap_or(1e-3), weight_decay },
            OptimizerKind::Adadelta if weight_decay != 0.0 => {
                return Err(Error::Invalid(format!("--weight-decay {weight_decay}: adadelta has no weight decay (adam and sgd have)")))
            }
            OptimizerKind::Adadelta => OptimizerConfig::Adadelta { lr: lr.unwrap_or(1.0), rho: 0.95, eps: 1e-7 },
            OptimizerKind::Sgd => OptimizerConfig::Sgd { lr: lr.unwrap_or(0.01), weight_decay },
        })
    }
}

/// The course of each searched model's learning rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleKind {
    /// Down along half a cosine to 2% over the epochs the model's time share holds.
    Cosine,
    Constant,
}

impl ScheduleKind {
    pub fn schedule(self) -> LrSchedule {
        match self {
            ScheduleKind::Cosine => LrSchedule::Cosine { floor: 0.02 },
            ScheduleKind::Constant => LrSchedule::Constant,
        }
    }
}

/// Test-time augmentation of the served model: the shifted copies of each image whose outputs it
/// averages (see [`super::classifier::ClassifierConfig::test_time_shifts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TestTimeShifts {
    /// The images as they are.
    None,
    /// Five copies: the image, and the image moved by one pixel left, right, up and down.
    Cross,
    /// Nine copies: every move by at most one pixel along each axis.
    Square,
}

impl TestTimeShifts {
    /// The shifts `[dx, dy]`, the unshifted image first.
    pub fn shifts(self) -> Vec<[i32; 2]> {
        match self {
            TestTimeShifts::None => vec![],
            TestTimeShifts::Cross => vec![[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]],
            TestTimeShifts::Square => {
                let around = (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| [dx, dy])).filter(|&s| s != [0, 0]);
                std::iter::once([0, 0]).chain(around).collect()
            }
        }
    }
}

/// The option's value, as `--test-time-shifts` takes it.
impl std::fmt::Display for TestTimeShifts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TestTimeShifts::None => "none",
            TestTimeShifts::Cross => "cross",
            TestTimeShifts::Square => "square",
        })
    }
}

/// What the final fit trains (see [`FinalFit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FinalFitKind {
    /// A fresh copy of the best architecture that joins the ensemble.
    Member,
    /// The best model, on from its searched weights.
    Continue,
    /// A fresh copy of the best architecture, in the best's place.
    Retrain,
    /// A member where the final fit has time for 6 epochs or more, else continue.
    Auto,
}

impl From<FinalFitKind> for FinalFit {
    fn from(kind: FinalFitKind) -> FinalFit {
        match kind {
            FinalFitKind::Member => FinalFit::NewMember,
            FinalFitKind::Continue => FinalFit::Continue,
            FinalFitKind::Retrain => FinalFit::Retrain,
            FinalFitKind::Auto => FinalFit::Auto,
        }
    }
}

/// A number, or `auto` for a value the library chooses (`--width`, `--shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoOr {
    #[default]
    Auto,
    Value(usize),
}

impl AutoOr {
    pub fn value(self) -> Option<usize> {
        match self {
            AutoOr::Auto => None,
            AutoOr::Value(v) => Some(v),
        }
    }
}

impl FromStr for AutoOr {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<AutoOr, String> {
        match text.trim() {
            "auto" => Ok(AutoOr::Auto),
            n => n.parse().map(AutoOr::Value).map_err(|_| format!("`{text}` is neither a whole number nor `auto`")),
        }
    }
}

impl std::fmt::Display for AutoOr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AutoOr::Auto => write!(f, "auto"),
            AutoOr::Value(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rates_are_checked() {
        assert_eq!(OptimizerKind::Sgd.config(None, 0.0).unwrap(), OptimizerConfig::sgd(0.01));
        assert_eq!(OptimizerKind::Adam.config(Some(0.5), 0.0).unwrap(), OptimizerConfig::adam(0.5));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(OptimizerKind::Adam.config(Some(bad), 0.0).unwrap_err().to_string().contains("--lr"));
        }
    }

    #[test]
    fn weight_decay_is_checked_and_reaches_the_optimizer() {
        assert_eq!(OptimizerKind::Adam.config(None, 0.01).unwrap(), OptimizerConfig::Adam { lr: 1e-3, weight_decay: 0.01 });
        assert_eq!(OptimizerKind::Sgd.config(Some(0.1), 5e-4).unwrap(), OptimizerConfig::Sgd { lr: 0.1, weight_decay: 5e-4 });
        for bad in [-0.1, f32::NAN, f32::INFINITY] {
            let e = OptimizerKind::Adam.config(None, bad).unwrap_err().to_string();
            assert!(e.contains("--weight-decay") && e.contains(&bad.to_string()), "{e}");
        }
        let e = OptimizerKind::Adadelta.config(None, 0.01).unwrap_err().to_string();
        assert!(e.contains("--weight-decay 0.01") && e.contains("adadelta"), "{e}");
        OptimizerKind::Adadelta.config(None, 0.0).unwrap();
    }

    #[test]
    fn auto_or_a_number() {
        assert_eq!("auto".parse::<AutoOr>().unwrap(), AutoOr::Auto);
        assert_eq!("48".parse::<AutoOr>().unwrap(), AutoOr::Value(48));
        for bad in ["", "-3", "4.5", "wide"] {
            assert!(bad.parse::<AutoOr>().is_err(), "`{bad}` accepted");
        }
    }
}
