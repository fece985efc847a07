//! A search space and a trainer that need no device, for tests and benchmarks of the search's
//! bookkeeping: architectures are points of a grid, an epoch is a sleep, and the accuracy is a
//! known function of the point.

use crate::error::{Error, Result};
use crate::search::store::{ModelBlob, Store};
use crate::search::{Job, SearchSpace, Trained, Trainer};
use crate::train::EpochStats;
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

/// Trains nothing: an epoch is a short sleep; the accuracy is the grid's score. Architectures
/// at least `oom_size` large run out of memory; `diverges` has a NaN loss.
pub struct FakeTrainer {
    pub trained: Vec<Job<(i64, i64), (i64, i64)>>,
    /// The time each model was given.
    pub budgets: Vec<Duration>,
    pub epoch: Duration,
    pub epochs: usize,
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
            epoch: Duration::from_millis(1),
            epochs: 2,
            oom_size: i64::MAX,
            diverges: None,
            lost_at: None,
            bug_at: None,
        }
    }
}

impl Trainer<Grid> for FakeTrainer {
    fn train(&mut self, job: &Job<(i64, i64), (i64, i64)>, store: &dyn Store, deadline: Instant) -> Result<Trained> {
        self.trained.push(job.clone());
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
        let mut epochs = 0;
        let mut stopped = None;
        for _ in 0..self.epochs {
            std::thread::sleep(self.epoch);
            epochs += 1;
            if Instant::now() >= deadline {
                stopped = Some("time limit reached".to_string());
                break;
            }
        }
        let acc = score(job.arch);
        let model = ModelBlob { graph: format!("{:?}", job.arch), weights: b"weights".to_vec() };
        // A curve that rises to the model's score, as a real one would.
        let curve = (1..=epochs)
            .map(|e| {
                let reached = acc * e as f64 / epochs as f64;
                EpochStats {
                    epoch: e,
                    seconds: self.epoch.as_secs_f64(),
                    loss: 1.0 - reached,
                    accuracy: reached,
                    val_loss: Some(1.0 - reached),
                    val_accuracy: Some(reached),
                }
            })
            .collect();
        Ok(Trained { epochs, seconds: start.elapsed().as_secs_f64(), val_loss: 1.0 - acc, val_accuracy: acc, stopped, curve, model })
    }
}
