//! A search space and a trainer that need no device, for tests and benchmarks of the search's
//! bookkeeping: architectures are points of a grid, an epoch is a sleep, and the accuracy is a
//! known function of the point.

use crate::error::{Error, Result};
use crate::search::store::{ModelBlob, Store};
use crate::search::{Job, SearchSpace, Trained, Trainer};
use crate::train::{EpochStats, StopRule};
use rand::rngs::StdRng;
use rand::Rng;
use std::time::{Duration, Instant};

/// Architectures are points on a grid (depth, width); morphisms step one unit along an axis.
#[derive(Clone)]
pub struct Grid {
    pub max: i64,
}

impl SearchSpace for Grid {
    type Arch = (i64, i64);
    type Op = (i64, i64);
    fn distance(&self, a: &(i64, i64), b: &(i64, i64)) -> f64 {
        ((a.0 - b.0).abs() + (a.1 - b.1).abs()) as f64
    }
    fn descriptor(&self, a: &(i64, i64)) -> String {
        format!("{a:?}")
    }
    fn neighbours(&self, a: &(i64, i64), n: usize, rng: &mut StdRng) -> Vec<((i64, i64), (i64, i64))> {
        let steps = [(1, 0), (-1, 0), (0, 1), (0, -1)];
        let mut out = Vec::new();
        for _ in 0..2 * n {
            let s = steps[rng.random_range(0..4)];
            let b = (a.0 + s.0, a.1 + s.1);
            if (0..=self.max).contains(&b.0) && (0..=self.max).contains(&b.1) && !out.iter().any(|(_, x)| *x == b) {
                out.push((s, b));
            }
            if out.len() >= n {
                break;
            }
        }
        out
    }
    fn size(&self, a: &(i64, i64)) -> u64 {
        (a.0 * a.1) as u64
    }
    fn parameters(&self, a: &(i64, i64)) -> u64 {
        (a.0 * a.1) as u64
    }
    fn describe(&self, op: &(i64, i64)) -> String {
        format!("step {op:?}")
    }
}

/// Accuracy peaking at (6, 6).
pub fn score(a: (i64, i64)) -> f64 {
    1.0 - 0.01 * (((a.0 - 6).pow(2) + (a.1 - 6).pow(2)) as f64)
}

/// A fake model's validation accuracy after an epoch (from 1) of its training.
pub type FakeCurve = Box<dyn Fn(&Job<(i64, i64), (i64, i64)>, usize) -> f64 + Send>;

/// Trains nothing: an epoch is a short sleep; the validation accuracy after each epoch is `curve`'s
/// (without one, rising evenly to the grid's score at the epoch cap), and the model's figures are
/// its best epoch's, as a restored best epoch gives them. Architectures at least `oom_size` large
/// run out of memory; `diverges` has a NaN loss. A stop rule is followed as `train::fit` does.
pub struct FakeTrainer {
    pub trained: Vec<Job<(i64, i64), (i64, i64)>>,
    /// The time each model was given.
    pub budgets: Vec<Duration>,
    /// Whether each model was given a stop rule.
    pub stop_rules: Vec<bool>,
    pub epoch: Duration,
    pub epochs: usize,
    pub curve: Option<FakeCurve>,
    pub oom_size: i64,
    pub diverges: Option<(i64, i64)>,
    /// The device is lost when model `lost_at` trains.
    pub lost_at: Option<usize>,
    /// Model `bug_at` fails with a programming error (a shape error).
    pub bug_at: Option<usize>,
}

impl Default for FakeTrainer {
    fn default() -> Self {
        FakeTrainer::new()
    }
}

impl FakeTrainer {
    pub fn new() -> Self {
        FakeTrainer {
            trained: Vec::new(),
            budgets: Vec::new(),
            stop_rules: Vec::new(),
            epoch: Duration::from_millis(1),
            epochs: 2,
            curve: None,
            oom_size: i64::MAX,
            diverges: None,
            lost_at: None,
            bug_at: None,
        }
    }

    /// Model `job`'s validation accuracy after `epoch`.
    fn accuracy(&self, job: &Job<(i64, i64), (i64, i64)>, epoch: usize) -> f64 {
        match &self.curve {
            Some(curve) => curve(job, epoch),
            None => score(job.arch) * epoch as f64 / self.epochs as f64,
        }
    }
}

impl Trainer<Grid> for FakeTrainer {
    fn train(
        &mut self,
        job: &Job<(i64, i64), (i64, i64)>,
        store: &dyn Store,
        deadline: Instant,
        stop_rule: Option<StopRule>,
    ) -> Result<Trained> {
        self.trained.push(job.clone());
        self.stop_rules.push(stop_rule.is_some());
        if let Some(father) = job.father {
            // The father's weights come from the store, as a real trainer's do.
            if store.load_model(father)?.weights != b"weights" {
                return Err(Error::Other(format!("model {father}'s stored weights are not what was stored")));
            }
        }
        self.budgets.push(deadline.saturating_duration_since(Instant::now()));
        if job.arch.0 * job.arch.1 >= self.oom_size {
            return Err(Error::OutOfMemory(format!("{:?} does not fit", job.arch)));
        }
        if Some(job.id) == self.lost_at {
            return Err(Error::DeviceLost("the fake device was lost".into()));
        }
        if Some(job.id) == self.bug_at {
            return Err(Error::shape("fake", "a fake shape rule refused the model"));
        }
        if Some(job.arch) == self.diverges {
            return Err(Error::Diverged("the loss became NaN".into()));
        }
        let start = Instant::now();
        let mut curve: Vec<EpochStats> = Vec::new();
        let mut stopped = None;
        for epoch in 1..=self.epochs {
            std::thread::sleep(self.epoch);
            let accuracy = self.accuracy(job, epoch);
            curve.push(EpochStats {
                epoch,
                seconds: self.epoch.as_secs_f64(),
                loss: 1.0 - accuracy,
                accuracy,
                val_loss: Some(1.0 - accuracy),
                val_accuracy: Some(accuracy),
            });
            if let Some(why) = stop_rule.as_ref().filter(|_| epoch < self.epochs).and_then(|rule| rule.check(&curve)) {
                stopped = Some(why);
                break;
            }
            if Instant::now() >= deadline {
                stopped = Some("time limit reached".to_string());
                break;
            }
        }
        // The best epoch's figures, as restoring it gives them.
        let best = curve.iter().filter_map(|e| e.val_accuracy).fold(f64::NEG_INFINITY, f64::max);
        let model = ModelBlob { graph: format!("{:?}", job.arch), weights: b"weights".to_vec() };
        Ok(Trained {
            epochs: curve.len(),
            seconds: start.elapsed().as_secs_f64(),
            val_loss: 1.0 - best,
            val_accuracy: best,
            stopped,
            curve,
            model,
        })
    }
}
