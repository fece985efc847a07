//! Where a search keeps what it learns, behind one interface ([`Store`]), so the search loop is the
//! same for one process and for many workers:
//!
//! - [`SearchDir`], the embedded default: a search directory, for one process, locked for the
//!   whole run (a second process gets an error naming the directory and the holder's process id);
//! - [`PgStore`]: a study in a PostgreSQL database that any number of worker processes, on any
//!   machines, share. The database is the only thing they share.
//!
//! A trial is one model of the search. A worker claims it (a new architecture, or one whose
//! worker stopped sending heartbeats), trains it from its father's weights read from the store,
//! and stores its weights and its record together. Architectures and morphisms cross the
//! interface as JSON, so the store knows nothing of graphs.

pub mod directory;
pub mod postgres;

pub use directory::{write_atomic, SearchDir};
pub use postgres::{PgStore, DEFAULT_LEASE, MAX_ATTEMPTS};

use crate::error::{Error, Result};
use crate::train::EpochStats;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a model's training ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Status {
    /// Trained; its weights are stored.
    Finished,
    /// Training failed and the search went on: out of device memory (`resource`), a loss that
    /// became NaN, another error of this one model, or a trial whose workers all died.
    Failed { reason: String, resource: bool },
}

/// One model of a search, as the history keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
pub struct ModelRecord<A> {
    pub id: usize,
    /// The model whose trained weights this one started from (`None`: a generator's model).
    pub father: Option<usize>,
    /// The morphisms applied to the father, described for people.
    pub operations: Vec<String>,
    pub architecture: A,
    pub parameters: u64,
    pub status: Status,
    pub epochs: usize,
    pub seconds: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Why training ended before its epoch cap ("early stopping", "time limit reached").
    pub stopped: Option<String>,
    /// The worker that trained it (host and process id) and its adapter; empty in histories
    /// written before workers existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker: String,
    /// Each epoch's training and validation figures (the report draws them as learning curves);
    /// empty in histories written before they were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<EpochStats>,
    /// When training began and ended, in seconds since the Unix epoch (the report's time axis:
    /// workers on several machines share it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
}

impl<A> ModelRecord<A> {
    pub fn finished(&self) -> bool {
        self.status == Status::Finished && self.val_accuracy.is_some()
    }

    /// True when `self` is a better model than `other`: higher validation accuracy, then lower
    /// validation loss, then the earlier model.
    pub fn better_than(&self, other: &ModelRecord<A>) -> bool {
        ranks_above(self.rank(), other.rank())
    }

    fn rank(&self) -> (f64, f64, usize) {
        (self.val_accuracy.unwrap_or(f64::NEG_INFINITY), self.val_loss.unwrap_or(f64::INFINITY), self.id)
    }

    /// The same record with its architecture converted by `f`.
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> ModelRecord<B> {
        ModelRecord {
            id: self.id,
            father: self.father,
            operations: self.operations,
            architecture: f(self.architecture),
            parameters: self.parameters,
            status: self.status,
            epochs: self.epochs,
            seconds: self.seconds,
            val_loss: self.val_loss,
            val_accuracy: self.val_accuracy,
            stopped: self.stopped,
            worker: self.worker,
            curve: self.curve,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

impl ModelRecord<Value> {
    /// The record of trial `id` (as `spec` describes it) by `worker`, with `status` and nothing
    /// trained yet: the trainer's figures are filled in after.
    pub fn of_trial(id: usize, spec: &TrialSpec, worker: &str, status: Status) -> Self {
        ModelRecord {
            id,
            father: spec.father,
            operations: spec.operations.clone(),
            architecture: spec.architecture.clone(),
            parameters: spec.parameters,
            status,
            epochs: 0,
            seconds: 0.0,
            val_loss: None,
            val_accuracy: None,
            stopped: None,
            worker: worker.to_string(),
            curve: Vec::new(),
            started_at: None,
            finished_at: None,
        }
    }
}

/// Which model is best so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestModel {
    pub id: usize,
    pub val_loss: f64,
    pub val_accuracy: f64,
}

impl BestModel {
    /// True when `record` is a better model than this one (see [`ModelRecord::better_than`]).
    pub fn beaten_by<A>(&self, record: &ModelRecord<A>) -> bool {
        ranks_above(record.rank(), (self.val_accuracy, self.val_loss, self.id))
    }
}

/// Models ranked by (validation accuracy, validation loss, id): higher accuracy, then lower loss,
/// then the earlier model.
fn ranks_above(a: (f64, f64, usize), b: (f64, f64, usize)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && (a.1 < b.1 || (a.1 == b.1 && a.2 < b.2)))
}

/// A model to train, as the store keeps it from its claim until its record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialSpec {
    pub father: Option<usize>,
    /// The morphisms to replay on the father's trained graph (JSON of the search space's ops).
    pub ops: Value,
    /// The same, described for people.
    pub operations: Vec<String>,
    pub architecture: Value,
    /// Its weights, for the record (a trial recorded as failed by the store has not trained).
    pub parameters: u64,
    /// The architecture's identity ([`crate::search::SearchSpace::descriptor`]): a study trains
    /// each at most once.
    pub descriptor: String,
}

/// A trial this worker holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub id: usize,
    pub spec: TrialSpec,
    /// 1 for a new trial; more when it is trained again after its worker was lost.
    pub attempt: u32,
}

/// A trial in training somewhere.
#[derive(Clone, Debug)]
pub struct Running {
    pub id: usize,
    pub spec: TrialSpec,
    pub worker: String,
    pub attempt: u32,
    /// Since its claim.
    pub seconds: f64,
    /// Since its last heartbeat.
    pub silent: f64,
}

/// Everything a study holds about its trials.
#[derive(Clone, Debug, Default)]
pub struct StudyState {
    /// Finished and failed trials, by id.
    pub records: Vec<ModelRecord<Value>>,
    /// Trials in training, by id.
    pub running: Vec<Running>,
}

/// What [`Store::claim_new`] gave.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    Claimed(Claim),
    /// Another worker has the architecture already (finished, failed or in training).
    Taken,
    /// The study holds its `max_models` trials.
    Full,
}

/// A trained model's files: the graph's JSON and its weights as safetensors.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelBlob {
    pub graph: String,
    pub weights: Vec<u8>,
}

/// The time a search has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Deadline {
    /// The whole job's limit, as the study (or this run) was started with.
    pub total: Duration,
    /// What is left of it now.
    pub left: Duration,
}

/// One search's storage: a search directory or a study in a database. Every method either
/// completes or changes nothing, so a crash at any point loses at most the trials in training.
pub trait Store: Send + Sync {
    /// The store for people: "the search directory runs/a", "study `s` at postgres://host/db".
    fn name(&self) -> String;
    /// This worker: host, process id and adapter.
    fn worker(&self) -> &str;
    /// This worker's place among the study's workers, in the order they joined (0: the first,
    /// and a search directory's one process).
    fn worker_index(&self) -> usize;
    /// The study's time: a study keeps the deadline it was created with (every worker shares it);
    /// a search directory gives each run, resumed or not, a fresh `limit`.
    fn deadline(&self, limit: Duration) -> Result<Deadline>;
    /// The value stored under `key`, storing `value` first when there is none: the first worker's
    /// choice (of settings, of the generator's width) is everyone's.
    fn put_if_absent(&self, key: &str, value: &Value) -> Result<Value>;
    /// Stores `value` under `key`, replacing any.
    fn put(&self, key: &str, value: &Value) -> Result<()>;
    fn get(&self, key: &str) -> Result<Option<Value>>;
    /// Stores a file of the study's (the final model), replacing any.
    fn put_file(&self, name: &str, bytes: &[u8]) -> Result<()>;
    fn get_file(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Every trial's record and every trial in training.
    fn state(&self) -> Result<StudyState>;
    /// Claims a new trial, with the next id, unless the architecture is taken or the study holds
    /// `max_models` trials.
    fn claim_new(&self, spec: &TrialSpec, max_models: Option<usize>) -> Result<ClaimOutcome>;
    /// Claims a trial whose worker stopped sending heartbeats for longer than the lease, if any.
    /// A trial lost [`MAX_ATTEMPTS`] times is recorded as failed instead.
    fn claim_abandoned(&self) -> Result<Option<Claim>>;
    /// Says that this worker still trains trial `id`. False when the trial is no longer this
    /// worker's (its lease ran out and another worker took it).
    fn heartbeat(&self, id: usize) -> Result<bool>;
    /// How long a trial's worker may be silent before the trial is another's to take (`None`:
    /// one process, no heartbeats). Heartbeats go every lease / 6.
    fn lease(&self) -> Option<Duration>;
    /// The stored model of a finished trial.
    fn load_model(&self, id: usize) -> Result<ModelBlob>;
    /// Stores a trial's end: its model (when it trained), its record, and the best model when it
    /// is better, all or nothing. False when the trial was no longer this worker's: nothing stored.
    fn finish(&self, record: &ModelRecord<Value>, model: Option<&ModelBlob>) -> Result<bool>;
    fn best(&self) -> Result<Option<BestModel>>;
    /// Claims the study's final step (ensemble selection and final fit), which runs once, on one
    /// worker: true when no other worker holds it (held until the store is dropped) and none has
    /// stored its outcome under [`FINAL_OUTCOME`] yet. A worker lost in the final step leaves it
    /// to the next worker that gets there.
    fn claim_final(&self) -> Result<bool>;
}

/// The key under which the final step stores its outcome (the ensemble, the test figures): once
/// it is there, the study is complete.
pub const FINAL_OUTCOME: &str = "outcome";

/// The best of `records` that finished.
pub fn best_record<A>(records: &[ModelRecord<A>]) -> Option<&ModelRecord<A>> {
    let mut best: Option<&ModelRecord<A>> = None;
    for r in records.iter().filter(|r| r.finished()) {
        if best.is_none_or(|b| r.better_than(b)) {
            best = Some(r);
        }
    }
    best
}

/// The settings that differ between `stored` and `now` (two JSON objects), as
/// "name: stored X, this run Y".
pub fn settings_differences(stored: &Value, now: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (stored.as_object().unwrap_or(&empty), now.as_object().unwrap_or(&empty));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null));
            (x != y).then(|| format!("{k}: stored {x}, this run {y}"))
        })
        .collect()
}

/// Stores `settings` under "settings" or checks them against the stored ones: a study's settings
/// are fixed when it is created, and a worker or resume with other settings is refused, naming them.
pub fn check_settings<T: Serialize>(store: &dyn Store, settings: &T) -> Result<()> {
    let now = serde_json::to_value(settings).map_err(|e| Error::Other(format!("settings: {e}")))?;
    let stored = store.put_if_absent("settings", &now)?;
    let differences = settings_differences(&stored, &now);
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{} was started with other settings ({}); run with the same data and options, or start another search",
        store.name(),
        differences.join("; ")
    )))
}

/// This process on this host, for the trials' `worker` column.
pub fn worker_name(adapter: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    if adapter.is_empty() {
        format!("{host}:{}", std::process::id())
    } else {
        format!("{host}:{} ({adapter})", std::process::id())
    }
}

/// Now, in seconds since the Unix epoch (0 on a clock set before it).
pub fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_differences_name_each_setting() {
        let stored = json!({"seed": 1, "width": 24, "batch_size": 128});
        let now = json!({"seed": 1, "width": 32, "batch_size": 128, "lr": 0.001});
        assert_eq!(settings_differences(&stored, &now), vec!["lr: stored null, this run 0.001", "width: stored 24, this run 32"]);
        assert!(settings_differences(&stored, &stored).is_empty());
    }
}
