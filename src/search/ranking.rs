//! Early ranking of children: the median-stopping rule of Google Vizier (Golovin et al. 2017).
//! A child starts from its father's trained weights, so a few epochs already tell how it compares
//! with the children that finished before it: after each epoch from the grace on, a child whose
//! best validation accuracy so far is below the median (or another quantile) of the same figure of
//! its finished peers at that epoch stops, and its time goes to the next proposal. Generators'
//! models train from scratch and are neither ranked nor peers.

use super::store::ModelRecord;
use crate::error::{Error, Result};
use crate::train::{EpochStats, StopRule};

/// The rule's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyRanking {
    /// The first epoch after which a child may be ranked out (at least 1).
    pub grace_epochs: usize,
    /// A child stops when it is below this quantile of its peers (0.5: the median; lower stops
    /// fewer). Strictly between 0 and 1.
    pub quantile: f64,
}

impl Default for EarlyRanking {
    fn default() -> Self {
        EarlyRanking { grace_epochs: 2, quantile: 0.5 }
    }
}

impl EarlyRanking {
    /// An error that names the setting when the rule cannot work as given.
    pub fn check(&self) -> Result<()> {
        if self.grace_epochs == 0 {
            return Err(Error::Invalid("early ranking: the grace must be at least 1 epoch (leave the rule out to turn it off)".into()));
        }
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(Error::Invalid(format!("early ranking: the quantile {} is not above 0 and below 1", self.quantile)));
        }
        Ok(())
    }

    /// Why a child whose validation accuracies so far (one per epoch) are `child` should stop,
    /// against its `peers`' validation accuracies (each a finished child's, one per epoch); `None`
    /// to go on: before the grace, without a peer that trained as many epochs, or when the child
    /// is at or above the quantile.
    pub fn verdict(&self, child: &[f64], peers: &[Vec<f64>]) -> Option<String> {
        let epoch = child.len();
        if epoch == 0 || epoch < self.grace_epochs {
            return None;
        }
        let best = best_so_far(child)?;
        let mut figures: Vec<f64> = peers.iter().filter(|p| p.len() >= epoch).filter_map(|p| best_so_far(&p[..epoch])).collect();
        if figures.is_empty() {
            return None;
        }
        let bar = quantile(&mut figures, self.quantile);
        if best >= bar {
            return None;
        }
        let named = if self.quantile == 0.5 { "median".to_string() } else { format!("{} quantile", self.quantile) };
        let children = if figures.len() == 1 { "1 child".to_string() } else { format!("{} children", figures.len()) };
        Some(format!(
            "ranked out after epoch {epoch}: best validation accuracy {best:.4} below the {named} {bar:.4} of {children} at that epoch"
        ))
    }

    /// The rule for a child, as `train::fit` asks it after each epoch, against the curves of the
    /// finished children among `records` (those known when the child starts).
    pub fn stop_rule<A>(self, records: &[ModelRecord<A>]) -> StopRule {
        let peers: Vec<Vec<f64>> =
            records.iter().filter(|r| r.father.is_some() && r.finished()).map(|r| validation_accuracies(&r.curve)).collect();
        StopRule::new(move |epochs: &[EpochStats]| self.verdict(&validation_accuracies(epochs), &peers))
    }
}

/// Each epoch's validation accuracy, up to the first epoch without one.
pub fn validation_accuracies(curve: &[EpochStats]) -> Vec<f64> {
    curve.iter().map_while(|e| e.val_accuracy).collect()
}

/// The highest finite figure, if any.
fn best_so_far(accuracies: &[f64]) -> Option<f64> {
    accuracies.iter().copied().filter(|a| a.is_finite()).reduce(f64::max)
}

/// The `q` quantile of `values` (not empty), interpolated linearly between the two nearest ranks
/// (NumPy's default): the median of an even count is the mean of the middle two.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let position = q * (values.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    values[below] + (values[above] - values[below]) * (position - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::store::Status;

    fn median_rule() -> EarlyRanking {
        EarlyRanking::default()
    }

    #[test]
    fn a_child_below_the_median_of_its_peers_stops() {
        let peers = vec![vec![0.90, 0.95, 0.96], vec![0.91, 0.93], vec![0.80, 0.97, 0.98], vec![0.85, 0.94]];
        // Best by epoch 2 of the peers: 0.95, 0.93, 0.97, 0.94; median 0.945.
        let why = median_rule().verdict(&[0.93, 0.94], &peers).expect("0.94 is below 0.945");
        assert_eq!(why, "ranked out after epoch 2: best validation accuracy 0.9400 below the median 0.9450 of 4 children at that epoch");
        // The child's best so far counts, not its last epoch.
        assert!(median_rule().verdict(&[0.96, 0.90], &peers).is_none());
        assert!(median_rule().verdict(&[0.93, 0.95], &peers).is_none(), "above the median goes on");
    }

    #[test]
    fn a_tie_with_the_quantile_goes_on() {
        let peers = vec![vec![0.5, 0.9], vec![0.5, 0.8], vec![0.5, 0.7]];
        assert!(median_rule().verdict(&[0.5, 0.8], &peers).is_none(), "equal to the median");
        assert!(median_rule().verdict(&[0.7, 0.79], &peers).is_some());
        // Everyone equal: nobody is below.
        assert!(median_rule().verdict(&[0.5, 0.5], &[vec![0.5, 0.5], vec![0.5, 0.5]]).is_none());
    }

    #[test]
    fn without_a_peer_at_that_epoch_the_child_goes_on() {
        assert!(median_rule().verdict(&[0.1, 0.1], &[]).is_none());
        // Peers that stopped before epoch 3 say nothing about it.
        let short = vec![vec![0.9, 0.95], vec![0.99]];
        assert!(median_rule().verdict(&[0.1, 0.1, 0.1], &short).is_none());
        assert!(median_rule().verdict(&[0.1, 0.1], &short).is_some(), "one peer has epoch 2");
        // A peer without finite figures is none.
        assert!(median_rule().verdict(&[0.1, 0.1], &[vec![f64::NAN, f64::NAN]]).is_none());
    }

    #[test]
    fn before_the_grace_a_child_never_stops() {
        let peers = vec![vec![0.99, 0.99, 0.99, 0.99]];
        let rule = EarlyRanking { grace_epochs: 3, quantile: 0.5 };
        assert!(rule.verdict(&[], &peers).is_none());
        assert!(rule.verdict(&[0.1], &peers).is_none());
        assert!(rule.verdict(&[0.1, 0.1], &peers).is_none());
        let why = rule.verdict(&[0.1, 0.1, 0.1], &peers).expect("at the grace");
        assert!(why.starts_with("ranked out after epoch 3:") && why.ends_with("the median 0.9900 of 1 child at that epoch"), "{why}");
        assert!(rule.verdict(&[0.1, 0.1, 0.1, 0.1], &peers).is_some(), "and after it");
    }

    #[test]
    fn another_quantile_moves_the_bar() {
        let peers: Vec<Vec<f64>> = [0.60, 0.70, 0.80, 0.90, 1.00].iter().map(|&a| vec![a]).collect();
        let first = |q| EarlyRanking { grace_epochs: 1, quantile: q };
        // Quartiles of 0.6..1.0: 0.7 and 0.9; 0.3 interpolates between 0.7 and 0.8.
        assert!(first(0.25).verdict(&[0.69], &peers).is_some());
        assert!(first(0.25).verdict(&[0.75], &peers).is_none(), "the lower quartile stops fewer than the median");
        assert!(first(0.5).verdict(&[0.75], &peers).is_some());
        assert!(first(0.75).verdict(&[0.85], &peers).is_some(), "the upper quartile stops more");
        let why = first(0.3).verdict(&[0.7], &peers).unwrap();
        assert!(why.contains("below the 0.3 quantile 0.7200 of 5 children"), "{why}");
        assert!(first(0.3).verdict(&[0.72], &peers).is_none());
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&mut [4.0, 1.0, 2.0, 3.0], 0.5), 2.5);
        assert_eq!(quantile(&mut [5.0], 0.9), 5.0);
        assert!((quantile(&mut [0.0, 10.0], 0.25) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn a_bad_setting_is_named() {
        assert!(EarlyRanking::default().check().is_ok());
        for q in [0.0, 1.0, -0.5, f64::NAN] {
            let err = EarlyRanking { quantile: q, ..Default::default() }.check().unwrap_err().to_string();
            assert!(err.contains("quantile") && err.contains("above 0 and below 1"), "{err}");
        }
        let err = EarlyRanking { grace_epochs: 0, ..Default::default() }.check().unwrap_err().to_string();
        assert!(err.contains("grace"), "{err}");
    }

    #[test]
    fn the_stop_rule_compares_with_finished_children_only() {
        let epoch = |e: usize, acc: f64| EpochStats {
            epoch: e,
            seconds: 1.0,
            loss: 1.0 - acc,
            accuracy: acc,
            val_loss: Some(1.0 - acc),
            val_accuracy: Some(acc),
        };
        let record = |id: usize, father: Option<usize>, status: Status, accs: &[f64]| ModelRecord {
            id,
            father,
            operations: vec![],
            architecture: (),
            parameters: 1,
            status,
            epochs: accs.len(),
            seconds: 1.0,
            val_loss: Some(0.1),
            val_accuracy: Some(0.9),
            stopped: None,
            worker: String::new(),
            curve: accs.iter().enumerate().map(|(i, &a)| epoch(i + 1, a)).collect(),
            started_at: None,
            finished_at: None,
        };
        let failed = Status::Failed { reason: "out of memory".into(), resource: true };
        let records = [
            record(0, None, Status::Finished, &[0.99, 0.99]),
            record(1, Some(0), Status::Finished, &[0.80, 0.82]),
            record(2, Some(0), failed, &[0.99, 0.99]),
        ];
        let rule = EarlyRanking::default().stop_rule(&records);
        // Only model 1 is a peer: the generator and the failed child are not.
        let why = rule.check(&[epoch(1, 0.5), epoch(2, 0.81)]).expect("below model 1");
        assert!(why.contains("the median 0.8200 of 1 child"), "{why}");
        assert!(rule.check(&[epoch(1, 0.5), epoch(2, 0.9)]).is_none(), "above model 1, below the generator");
    }
}
