//! How a user's time limit is shared between the search and what follows it (the ensemble
//! selection and the final fit on the whole training set).

use crate::error::{Error, Result};
use std::time::Duration;

/// The share of the time limit kept for the ensemble selection when there is no final fit: one
/// pass over the validation set per candidate (8 at most), each about a sixteenth of an epoch.
pub const SELECTION_SHARE: f64 = 0.02;

/// A time limit split into the search's part and the rest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeBudget {
    /// Search and final fit together.
    pub total: Duration,
    /// The search's part (the rest goes to the ensemble selection and the final fit).
    pub search: Duration,
}

impl TimeBudget {
    /// Keeps `final_share` of `total` for the final fit when there is one (`final_epochs > 0`),
    /// [`SELECTION_SHARE`] when only an ensemble of several models is to be chosen, and nothing
    /// when neither follows the search.
    pub fn split(total: Duration, final_share: f64, final_epochs: usize, ensemble_size: usize) -> Result<TimeBudget> {
        if !(0.0..1.0).contains(&final_share) {
            return Err(Error::Invalid(format!("--final-share {final_share} must be at least 0 and below 1")));
        }
        let kept = match (final_epochs, ensemble_size) {
            (0, 0 | 1) => 0.0,
            (0, _) => SELECTION_SHARE,
            _ => final_share,
        };
        Ok(TimeBudget { total, search: total.mul_f64(1.0 - kept) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_follows_what_comes_after_the_search() {
        let hour = Duration::from_secs(3600);
        assert_eq!(TimeBudget::split(hour, 0.25, 30, 4).unwrap().search, Duration::from_secs(2700));
        assert_eq!(TimeBudget::split(hour, 0.25, 0, 4).unwrap().search, hour.mul_f64(0.98));
        assert_eq!(TimeBudget::split(hour, 0.25, 0, 1).unwrap().search, hour);
        for bad in [1.0, -0.1, f64::NAN, f64::INFINITY] {
            let e = TimeBudget::split(hour, bad, 30, 4).unwrap_err().to_string();
            assert!(e.contains("--final-share"), "{e}");
        }
    }
}
