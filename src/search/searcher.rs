//! The search loop: train the generators' models, then, until the time limit, the children the
//! Bayesian optimiser proposes, each from its father's trained weights. Every model ends in one
//! durable history record; a resumed search starts from those records and trains none of them again.
//!
//! The loop is generic over the [`SearchSpace`] and the [`Trainer`], so its bookkeeping (time limit,
//! failures, resume) is tested without a GPU; `classifier` binds it to graphs and the device.

use super::bayesian::{BayesianConfig, BayesianOptimizer, Planner, SearchSpace};
use super::duration::format_duration;
use super::ranking::EarlyRanking;
use super::report;
use super::store::{best_record, unix_seconds, Claim, ClaimOutcome, ModelBlob, ModelRecord, Running, Status, Store, TrialSpec};
use crate::error::{Error, Result};
use crate::train::{EpochStats, StopRule};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// The search stops training new models when this runs out; the model in training stops after
    /// the epoch during which it does.
    pub time_limit: Duration,
    /// Seeds the optimiser (and, through the trainer, weight initialisation and shuffling).
    pub seed: u64,
    /// Stop after this many models in the search directory (finished or failed), if set.
    pub max_models: Option<usize>,
    /// A model may train for at most this share of the search time left when it starts (1.0:
    /// until the search's limit, as AutoKeras). Below 1, a long first model cannot take the whole
    /// budget: the search tries at least a few architectures whatever the limit.
    pub model_share: f64,
    /// A child starts only when the time left holds this many epochs of its father (scaled by
    /// their costs, with a 15% margin; else the search ends, leaving the time to what follows it),
    /// and its share is stretched to hold them.
    pub min_epochs: usize,
    /// Children below their finished peers after a few epochs stop early (see
    /// [`super::ranking`]); `None`: every child trains its whole share.
    pub early_ranking: Option<EarlyRanking>,
    pub bayesian: BayesianConfig,
    /// Print the tables.
    pub verbose: bool,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            time_limit: Duration::from_secs(3600),
            seed: 0,
            max_models: None,
            model_share: 1.0,
            min_epochs: 0,
            early_ranking: Some(EarlyRanking::default()),
            bayesian: BayesianConfig::default(),
            verbose: true,
        }
    }
}

/// A model to train: a generator's architecture (`father` is `None`) or a father's trained model
/// through morphisms.
#[derive(Clone, Debug)]
pub struct Job<A, O> {
    pub id: usize,
    pub father: Option<usize>,
    pub ops: Vec<O>,
    pub arch: A,
}

/// What training one model gave.
#[derive(Clone, Debug)]
pub struct Trained {
    pub epochs: usize,
    pub seconds: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// Why training ended before the epoch cap (the time limit, early stopping, the stop rule).
    pub stopped: Option<String>,
    /// Each epoch's figures.
    pub curve: Vec<EpochStats>,
    /// The trained model, stored with the trial's record.
    pub model: ModelBlob,
}

/// Trains the search's models on the device.
pub trait Trainer<S: SearchSpace> {
    /// Trains `job` (from its father's weights, read from `store`, or from scratch) and stops after
    /// the epoch during which `deadline` passes, or after an epoch (not the last) for which
    /// `stop_rule` gives a reason, which becomes [`Trained::stopped`]; the figures are those of the
    /// best epoch either way. Errors for which `continues_search` is true are recorded as the
    /// model's failure; any other error ends the search.
    fn train(&mut self, job: &Job<S::Arch, S::Op>, store: &dyn Store, deadline: Instant, stop_rule: Option<StopRule>) -> Result<Trained>;
}

/// A model that runs out of device memory, diverges, or fails for another reason of its own is
/// recorded as failed and the search goes on. Everything else ends it: failures of the disk, of the
/// store or of the adapter as a whole (a lost device included), and programming errors (a shape
/// error, an invalid argument, a shader that does not compile or anything else wgpu's validation
/// reports), which would fail every model the same way and, recorded as model failures, hide a bug.
pub fn continues_search(e: &Error) -> bool {
    matches!(e, Error::OutOfMemory(_) | Error::TooLarge { .. } | Error::Diverged(_) | Error::Other(_))
}

/// Every model of the search (resumed ones and other workers' included) and the best.
#[derive(Clone, Debug)]
pub struct SearchResult<A> {
    pub records: Vec<ModelRecord<A>>,
    pub best: usize,
    /// Why the search ended ("time limit", "model limit", "no new architecture").
    pub ended_by: String,
}

impl<A> SearchResult<A> {
    pub fn best_record(&self) -> &ModelRecord<A> {
        self.records.iter().find(|r| r.id == self.best).expect("the best model is in the history")
    }

    /// The epochs that trained model `id`'s weights: its own up to the epoch it kept (the lowest
    /// validation loss, where its curve is known) and, since a child starts from its father's
    /// kept weights, its fathers' likewise.
    pub fn lineage_epochs(&self, id: usize) -> usize {
        let mut total = 0;
        let mut next = Some(id);
        // At most one visit per record: a damaged history with a cycle ends the walk.
        for _ in 0..self.records.len() {
            let Some(record) = next.and_then(|id| self.records.iter().find(|r| r.id == id)) else { break };
            total += kept_epoch(record);
            next = record.father;
        }
        total
    }
}

/// The epoch whose weights `record` kept: the lowest validation loss of its curve, else its last.
fn kept_epoch<A>(record: &ModelRecord<A>) -> usize {
    let lowest = record
        .curve
        .iter()
        .filter_map(|e| Some((e.epoch, e.val_loss?)))
        .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
    lowest.map_or(record.epochs, |(epoch, _)| epoch)
}

/// How often a worker with nothing to train looks again for results or abandoned trials.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What the planner has been told of a study's trials.
#[derive(Default)]
struct Told {
    /// Trials whose result was fed.
    done: HashSet<usize>,
    /// The trials in flight, as last told.
    running: Vec<usize>,
}

/// Runs (or, when `store` holds trials, resumes or joins) a search starting from the
/// `generators`' architectures. Any number of workers may run it on one store at once: each
/// claims its trials from the store, so none is trained twice.
pub fn search<S, T>(
    space: S,
    generators: Vec<S::Arch>,
    trainer: &mut T,
    store: &dyn Store,
    config: &SearchConfig,
) -> Result<SearchResult<S::Arch>>
where
    S: SearchSpace + Clone,
    S::Arch: Serialize + DeserializeOwned,
    S::Op: Serialize + DeserializeOwned,
    T: Trainer<S>,
{
    let start = Instant::now();
    let deadline = start + config.time_limit;
    if let Some(ranking) = &config.early_ranking {
        ranking.check()?;
    }
    // Workers that joined later draw other proposals from the same results, so that workers
    // asking at once seldom propose the same architecture; the first draws what one process does.
    let planner_seed = config.seed ^ (store.worker_index() as u64).wrapping_mul(0xA24B_AED4_963E_E407);
    let mut planner = Planner::spawn(BayesianOptimizer::new(space.clone(), config.bayesian.clone()), planner_seed);
    let mut told = Told::default();
    let first = store.state()?;
    if config.verbose && !(first.records.is_empty() && first.running.is_empty()) {
        println!(
            "Continuing the search in {}: {} models in its history, {} in training",
            store.name(),
            first.records.len(),
            first.running.len()
        );
    }
    let mut generators: VecDeque<S::Arch> = generators.into();
    let ended_by;
    loop {
        let state = store.state()?;
        let records = typed_records::<S::Arch>(state.records.clone(), store)?;
        tell_planner(&planner, &space, &records, &state.running, &mut told, store)?;
        if config.max_models.is_some_and(|m| records.len() >= m) {
            ended_by = "model limit".to_string();
            break;
        }
        if Instant::now() >= deadline {
            ended_by = "time limit".to_string();
            break;
        }
        let next_guess = state.records.iter().map(|r| r.id + 1).chain(state.running.iter().map(|r| r.id + 1)).max().unwrap_or(0);
        let any_finished = records.iter().any(|r| r.finished());
        let claim = match store.claim_abandoned()? {
            Some(claim) => claim,
            None => {
                if !generators.is_empty() {
                    // A resumed or joined search trains no generator's model twice.
                    let taken: HashSet<String> = records
                        .iter()
                        .map(|r| space.descriptor(&r.architecture))
                        .chain(state.running.iter().map(|r| r.spec.descriptor.clone()))
                        .collect();
                    generators.retain(|g| !taken.contains(&space.descriptor(g)));
                }
                let Some(spec) = next_spec(&space, &mut generators, &mut planner, next_guess, any_finished, config.verbose)? else {
                    if state.running.is_empty() {
                        ended_by = if any_finished { "no new architecture" } else { "every model failed" }.to_string();
                        break;
                    }
                    // Other workers' results may open new ways: wait for them.
                    std::thread::sleep(IDLE_POLL.min(deadline.saturating_duration_since(Instant::now())));
                    continue;
                };
                // A new trial is claimed only when the time left holds its minimum epochs.
                let arch: S::Arch =
                    serde_json::from_value(spec.architecture.clone()).map_err(|e| not_this_search(store, next_guess, "architecture", e))?;
                let left = deadline.saturating_duration_since(Instant::now());
                if least_time(child_epoch(&records, spec.father, &arch, |a| space.training_cost(a)), config.min_epochs) > left {
                    if config.verbose {
                        println!("{} left: too little for {} epochs of another model", format_duration(left), config.min_epochs);
                    }
                    ended_by = "time limit".to_string();
                    break;
                }
                match store.claim_new(&spec, config.max_models)? {
                    ClaimOutcome::Claimed(claim) => claim,
                    ClaimOutcome::Taken => continue,
                    ClaimOutcome::Full if state.running.is_empty() => {
                        ended_by = "model limit".to_string();
                        break;
                    }
                    ClaimOutcome::Full => {
                        // A trial in training elsewhere may yet lose its worker and need this one.
                        std::thread::sleep(IDLE_POLL.min(deadline.saturating_duration_since(Instant::now())));
                        continue;
                    }
                }
            }
        };
        let job = job_of::<S>(&claim, store)?;
        // While this model trains, the optimiser proposes the next from the results so far.
        if generators.is_empty() && any_finished && !planner.has_pending() {
            planner.request(next_guess + 1);
        }
        if config.verbose {
            print!("{}", report::training(job.id, job.father, &claim.spec.operations));
        }
        let began = Instant::now();
        let left = deadline.saturating_duration_since(began);
        let epoch = child_epoch(&records, job.father, &job.arch, |a| space.training_cost(a));
        let mut record = ModelRecord::of_trial(job.id, &claim.spec, store.worker(), Status::Finished);
        record.started_at = Some(unix_seconds());
        if claim.attempt > 1 && least_time(epoch, config.min_epochs) > left {
            // A trial taken over from a lost worker, with too little time left to train it again:
            // recorded, so that no worker waits for it.
            if config.verbose {
                println!("{} left: too little for {} epochs of model {}", format_duration(left), config.min_epochs, job.id);
            }
            record.status = Status::Failed { reason: "the time limit came before it could train again".into(), resource: false };
            store.finish(&record, None)?;
            ended_by = "time limit".to_string();
            break;
        }
        let model_deadline = began + model_budget(left, config.model_share, epoch, config.min_epochs);
        // A child is ranked against the children finished when it starts; a generator's model,
        // trained from scratch, against nothing.
        let stop_rule = config.early_ranking.filter(|_| job.father.is_some()).map(|ranking| ranking.stop_rule(&records));
        let outcome = with_heartbeat(store, job.id, || trainer.train(&job, store, model_deadline, stop_rule));
        record.seconds = began.elapsed().as_secs_f64();
        record.finished_at = Some(unix_seconds());
        let mut model = None;
        match outcome {
            Ok(t) => {
                record.epochs = t.epochs;
                record.seconds = t.seconds;
                record.val_loss = Some(t.val_loss);
                record.val_accuracy = Some(t.val_accuracy);
                record.stopped = t.stopped;
                record.curve = t.curve;
                if !t.val_accuracy.is_finite() || !t.val_loss.is_finite() {
                    record.status = Status::Failed { reason: format!("validation loss {} is not finite", t.val_loss), resource: false };
                } else {
                    model = Some(t.model);
                }
            }
            Err(e) if continues_search(&e) => {
                record.status = Status::Failed { reason: e.to_string(), resource: e.is_resource_failure() };
            }
            Err(Error::DeviceLost(msg)) => {
                return Err(Error::DeviceLost(format!(
                    "{msg}; the search stopped with every finished model kept in {}: run it again (with --resume for a search \
                     directory) to continue",
                    store.name()
                )))
            }
            Err(e @ (Error::Shape { .. } | Error::Invalid(_) | Error::Gpu(_))) => {
                return Err(Error::Other(format!(
                    "model {} failed with a programming error, not one of its own: {e}. This is a bug in netmorph; the search \
                     stopped with every finished model kept in {}",
                    job.id,
                    store.name()
                )))
            }
            Err(e) => return Err(e),
        }
        if !store.finish(&record, model.as_ref())? {
            eprintln!(
                "model {} was taken over by another worker while this one trained it (this worker was silent for a lease): its result is dropped",
                record.id
            );
            continue;
        }
        if config.verbose {
            print!("{}", report::result(&record));
        }
    }
    drop(planner);
    study_result(store, ended_by, config.time_limit, start.elapsed(), config.verbose)
}

/// Every record of the study in `store` and the best (printed as a summary when `verbose`); an
/// error that says why when no model finished (the search had `limit` and took `elapsed`).
pub fn study_result<A: DeserializeOwned>(
    store: &dyn Store,
    ended_by: String,
    limit: Duration,
    elapsed: Duration,
    verbose: bool,
) -> Result<SearchResult<A>> {
    let records = typed_records::<A>(store.state()?.records, store)?;
    let best_id = best_record(&records).map(|b| b.id);
    if verbose {
        print!("{}", report::summary(&records, best_id));
    }
    match best_id {
        Some(best) => Ok(SearchResult { records, best, ended_by }),
        None => Err(no_model_error(&records, limit, elapsed)),
    }
}

/// Waits until no other worker trains a model of `store`'s study, so that a final step sees every
/// result. A trial whose worker was lost is recorded as failed: the search's time is over.
pub fn wait_for_other_workers(store: &dyn Store, verbose: bool) -> Result<()> {
    let Some(lease) = store.lease() else { return Ok(()) };
    let mut said = false;
    loop {
        while let Some(claim) = store.claim_abandoned()? {
            let reason = "its worker was lost, and the search's time ran out before another could train it".to_string();
            let record = ModelRecord::of_trial(claim.id, &claim.spec, store.worker(), Status::Failed { reason, resource: false });
            store.finish(&record, None)?;
        }
        let running: Vec<Running> = store.state()?.running.into_iter().filter(|r| r.silent < lease.as_secs_f64()).collect();
        if running.is_empty() {
            return Ok(());
        }
        if verbose && !said {
            let ids: Vec<String> = running.iter().map(|r| format!("{} ({})", r.id, r.worker)).collect();
            println!("Waiting for the models in training elsewhere to end: {}", ids.join(", "));
            said = true;
        }
        std::thread::sleep(IDLE_POLL);
    }
}

/// Runs `train` while a thread tells the store, every lease / 6, that this worker still holds
/// trial `id`.
fn with_heartbeat<R>(store: &dyn Store, id: usize, train: impl FnOnce() -> R) -> R {
    let Some(lease) = store.lease() else { return train() };
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(lease / 6) {
                match store.heartbeat(id) {
                    Ok(true) => {}
                    Ok(false) => {
                        eprintln!("model {id}: another worker has taken this trial over (this worker was silent for a lease)");
                        return;
                    }
                    Err(e) => eprintln!("model {id}: heartbeat failed: {e}"),
                }
            }
        });
        let outcome = train();
        drop(stop);
        outcome
    })
}

/// The next trial to claim: a generator's model not yet taken, else the optimiser's proposal.
fn next_spec<S>(
    space: &S,
    generators: &mut VecDeque<S::Arch>,
    planner: &mut Planner<S>,
    next_guess: usize,
    any_finished: bool,
    verbose: bool,
) -> Result<Option<TrialSpec>>
where
    S: SearchSpace,
    S::Arch: Serialize,
    S::Op: Serialize,
{
    if let Some(arch) = generators.pop_front() {
        return spec_of(space, None, &[], arch).map(Some);
    }
    let asked = Instant::now();
    let proposal = next_proposal(planner, next_guess, any_finished);
    let waited = asked.elapsed();
    if verbose && waited > Duration::from_millis(100) {
        println!("(waited {} for the Bayesian optimiser)", format_duration(waited));
    }
    match proposal {
        Some(p) => spec_of(space, Some(p.father), &p.ops, p.arch).map(Some),
        None => Ok(None),
    }
}

fn spec_of<S>(space: &S, father: Option<usize>, ops: &[S::Op], arch: S::Arch) -> Result<TrialSpec>
where
    S: SearchSpace,
    S::Arch: Serialize,
    S::Op: Serialize,
{
    let json = |what: &str, e: serde_json::Error| Error::Other(format!("the trial's {what} does not serialise: {e}"));
    Ok(TrialSpec {
        father,
        ops: serde_json::to_value(ops).map_err(|e| json("morphisms", e))?,
        operations: ops.iter().map(|op| space.describe(op)).collect(),
        parameters: space.parameters(&arch),
        descriptor: space.descriptor(&arch),
        architecture: serde_json::to_value(&arch).map_err(|e| json("architecture", e))?,
    })
}

fn not_this_search(store: &dyn Store, id: usize, what: &str, e: serde_json::Error) -> Error {
    Error::Store(format!("{}: trial {id}'s {what} is not this search's: {e}", store.name()))
}

fn job_of<S>(claim: &Claim, store: &dyn Store) -> Result<Job<S::Arch, S::Op>>
where
    S: SearchSpace,
    S::Arch: DeserializeOwned,
    S::Op: DeserializeOwned,
{
    Ok(Job {
        id: claim.id,
        father: claim.spec.father,
        ops: serde_json::from_value(claim.spec.ops.clone()).map_err(|e| not_this_search(store, claim.id, "morphisms", e))?,
        arch: serde_json::from_value(claim.spec.architecture.clone()).map_err(|e| not_this_search(store, claim.id, "architecture", e))?,
    })
}

fn typed_records<A: DeserializeOwned>(records: Vec<ModelRecord<Value>>, store: &dyn Store) -> Result<Vec<ModelRecord<A>>> {
    records
        .into_iter()
        .map(|r| {
            let arch = serde_json::from_value(r.architecture.clone()).map_err(|e| not_this_search(store, r.id, "architecture", e))?;
            Ok(r.map(|_| arch))
        })
        .collect()
}

/// Tells the planner the results it has not seen, and which architectures are in training.
fn tell_planner<S: SearchSpace>(
    planner: &Planner<S>,
    space: &S,
    records: &[ModelRecord<S::Arch>],
    running: &[Running],
    told: &mut Told,
    store: &dyn Store,
) -> Result<()>
where
    S::Arch: DeserializeOwned,
{
    for r in records {
        if told.done.insert(r.id) {
            feed_planner(planner, space, r);
        }
    }
    let ids: Vec<usize> = running.iter().map(|r| r.id).collect();
    if ids != told.running {
        let archs = running
            .iter()
            .map(|r| serde_json::from_value(r.spec.architecture.clone()).map_err(|e| not_this_search(store, r.id, "architecture", e)))
            .collect::<Result<Vec<S::Arch>>>()?;
        planner.set_in_flight(archs);
        told.running = ids;
    }
    Ok(())
}

/// The pipelined proposal if one was requested, else a fresh one. A pipelined request that found
/// nothing new is retried once with the latest results, which add new starting points.
fn next_proposal<S: SearchSpace>(
    planner: &mut Planner<S>,
    id: usize,
    any_finished: bool,
) -> Option<super::bayesian::Proposal<S::Arch, S::Op>> {
    if planner.has_pending() {
        if let Some(p) = planner.receive() {
            return Some(p);
        }
    }
    if !any_finished {
        return None;
    }
    planner.request(id);
    planner.receive()
}

/// A child's estimated epoch is off by some percent: in a 2-hour MNIST search one ran 304 s
/// against an estimate of about 300, and a budget of exactly three estimated epochs held two.
const EPOCH_ESTIMATE_MARGIN: f64 = 1.15;

/// The time `min_epochs` of an estimated `epoch` need, with the margin for the estimate.
fn least_time(epoch: Duration, min_epochs: usize) -> Duration {
    epoch.mul_f64(min_epochs as f64 * EPOCH_ESTIMATE_MARGIN)
}

/// The time a model may train: `share` of the time `left`, but at least [`least_time`], and never
/// past the search's limit (a model only starts when `left` holds `least_time`).
fn model_budget(left: Duration, share: f64, epoch: Duration, min_epochs: usize) -> Duration {
    left.mul_f64(share.clamp(0.0, 1.0)).max(least_time(epoch, min_epochs)).min(left)
}

/// A child's epoch time before it trains: its father's mean epoch time scaled by their training
/// costs (zero for a generator's model or an unknown father). A child two conv layers deeper can
/// take 1.8 times its father's epoch; judged by the father alone, it got one epoch, not the
/// minimum.
fn child_epoch<A>(records: &[ModelRecord<A>], father: Option<usize>, child: &A, cost: impl Fn(&A) -> f64) -> Duration {
    father.and_then(|f| records.iter().find(|r| r.id == f)).filter(|r| r.epochs > 0).map_or(Duration::ZERO, |r| {
        let ratio = cost(child) / cost(&r.architecture);
        let ratio = if ratio.is_finite() && ratio > 0.0 { ratio } else { 1.0 };
        Duration::from_secs_f64(r.seconds / r.epochs as f64 * ratio)
    })
}

fn feed_planner<S: SearchSpace>(planner: &Planner<S>, space: &S, r: &ModelRecord<S::Arch>) {
    match &r.status {
        Status::Finished if r.finished() => planner.add_result(r.id, r.architecture.clone(), r.val_accuracy.expect("finished")),
        Status::Failed { resource: true, .. } => {
            planner.limit_size(space.size(&r.architecture));
            planner.exclude(r.architecture.clone());
        }
        _ => planner.exclude(r.architecture.clone()),
    }
}

fn no_model_error<A>(records: &[ModelRecord<A>], limit: Duration, elapsed: Duration) -> Error {
    if records.is_empty() {
        return Error::Other(format!(
            "no model could be trained: the time limit of {} ran out before the first model started (preparing the data took {}); \
             give a limit longer than that plus the first model's training, such as {}",
            format_duration(limit),
            format_duration(elapsed),
            format_duration(elapsed * 2 + Duration::from_secs(600))
        ));
    }
    let reasons: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.status {
            Status::Failed { reason, .. } => Some(format!("model {}: {reason}", r.id)),
            Status::Finished => None,
        })
        .collect();
    let hint = if records.iter().any(|r| matches!(r.status, Status::Failed { resource: true, .. })) {
        "use a narrower generator, smaller images or a smaller batch"
    } else {
        "a lower learning rate or another optimizer may keep the loss finite"
    };
    Error::Other(format!("no model finished: all {} models failed ({}); {hint}", records.len(), reasons.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::store::SearchDir;
    use crate::testing::search::{FakeTrainer, Grid};
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netmorph-search-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn config(max_models: usize) -> SearchConfig {
        SearchConfig { time_limit: Duration::from_secs(60), seed: 5, max_models: Some(max_models), verbose: false, ..Default::default() }
    }

    #[test]
    fn trains_generators_then_children_with_fathers_and_operations() {
        let dir = temp_dir("basic");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let mut trainer = FakeTrainer::new();
        let result = search(Grid { max: 12 }, vec![(1, 1), (2, 3)], &mut trainer, &store, &config(8)).unwrap();
        assert_eq!(result.records.len(), 8);
        assert_eq!(result.records.iter().map(|r| r.id).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
        assert!(result.records[..2].iter().all(|r| r.father.is_none() && r.operations.is_empty()));
        for r in &result.records[2..] {
            let father = r.father.expect("a child has a father");
            assert!(father < r.id && !r.operations.is_empty(), "model {} from {father}: {:?}", r.id, r.operations);
        }
        let archs: HashSet<_> = result.records.iter().map(|r| r.architecture).collect();
        assert_eq!(archs.len(), 8, "an architecture was trained twice");
        let best = result.records.iter().max_by(|a, b| a.val_accuracy.partial_cmp(&b.val_accuracy).unwrap()).unwrap();
        assert_eq!(result.best, best.id);
        assert_eq!(store.best().unwrap().unwrap().id, best.id);
        assert_eq!(result.ended_by, "model limit");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_models_are_recorded_and_large_ones_avoided() {
        let dir = temp_dir("failures");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let mut trainer = FakeTrainer { oom_size: 6, diverges: Some((1, 2)), ..FakeTrainer::new() };
        let result = search(Grid { max: 12 }, vec![(1, 1), (1, 2), (2, 3)], &mut trainer, &store, &config(10)).unwrap();
        let failed: Vec<_> = result.records.iter().filter(|r| !r.finished()).collect();
        assert!(matches!(&failed[0].status, Status::Failed { resource: false, reason } if reason.contains("NaN")));
        assert!(matches!(&failed[1].status, Status::Failed { resource: true, .. }));
        assert_eq!(failed.len(), 2, "after running out of memory at size 6, nothing as large is tried: {failed:?}");
        assert!(result.records.iter().filter(|r| r.id > 2).all(|r| r.architecture.0 * r.architecture.1 < 6));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resuming_after_a_crash_trains_no_finished_model_again() {
        let dir = temp_dir("resume");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let mut first = FakeTrainer::new();
        search(Grid { max: 12 }, vec![(1, 1), (2, 3)], &mut first, &store, &config(4)).unwrap();
        // A crash while appending the fifth record.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("history.jsonl")).unwrap();
        f.write_all(b"{\"id\":4,\"fat").unwrap();
        drop(f);
        drop(store);

        let store = SearchDir::open(&dir, true, "test").unwrap();
        let mut second = FakeTrainer::new();
        let result = search(Grid { max: 12 }, vec![(1, 1), (2, 3)], &mut second, &store, &config(7)).unwrap();
        assert_eq!(result.records.iter().map(|r| r.id).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
        assert_eq!(second.trained.iter().map(|j| j.id).collect::<Vec<_>>(), vec![4, 5, 6]);
        let before: HashSet<_> = first.trained.iter().map(|j| j.arch).collect();
        assert!(second.trained.iter().all(|j| !before.contains(&j.arch)), "a finished model was trained again");
        assert!(second.trained.iter().all(|j| j.father.is_some_and(|f| f < j.id)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_time_limit_holds_within_one_epoch() {
        let dir = temp_dir("time");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let epoch = Duration::from_millis(100);
        let mut trainer = FakeTrainer { epoch, epochs: 3, ..FakeTrainer::new() };
        let limit = Duration::from_millis(700);
        let cfg = SearchConfig { time_limit: limit, max_models: None, ..config(0) };
        let start = Instant::now();
        let result = search(Grid { max: 30 }, vec![(1, 1)], &mut trainer, &store, &cfg).unwrap();
        let elapsed = start.elapsed();
        // One epoch past the limit at most, with room for a loaded machine's scheduling.
        assert!(elapsed < limit + epoch + Duration::from_millis(80), "ran {elapsed:?} with a limit of {limit:?}");
        assert_eq!(result.ended_by, "time limit");
        assert!(result.records.len() >= 2);
        // The model in training when the limit passed stopped early (unless the limit fell between models).
        let last = result.records.last().unwrap();
        // (or was ranked out before it came).
        let stopped = last.stopped.as_deref().unwrap_or("");
        assert!(stopped == "time limit reached" || stopped.starts_with("ranked out") || last.epochs == 3, "{last:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lost_device_ends_the_search_with_the_store_intact() {
        let dir = temp_dir("lost");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let mut trainer = FakeTrainer { lost_at: Some(2), ..FakeTrainer::new() };
        let err = search(Grid { max: 12 }, vec![(1, 1)], &mut trainer, &store, &config(6)).unwrap_err().to_string();
        assert!(err.contains("device was lost") && err.contains("--resume") && err.contains(&dir.display().to_string()), "{err}");
        let records = store.state().unwrap().records;
        assert_eq!(records.len(), 2, "the models before the loss are kept, and the lost one is no failure: {records:?}");
        drop(store);
        let store = SearchDir::open(&dir, true, "test").unwrap();
        let mut again = FakeTrainer::new();
        search(Grid { max: 12 }, vec![(1, 1)], &mut again, &store, &config(6)).unwrap();
        assert_eq!(again.trained.iter().map(|j| j.id).collect::<Vec<_>>(), vec![2, 3, 4, 5], "--resume continues");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_programming_error_ends_the_search_and_is_no_model_failure() {
        let dir = temp_dir("bug");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let mut trainer = FakeTrainer { bug_at: Some(2), ..FakeTrainer::new() };
        let err = search(Grid { max: 12 }, vec![(1, 1)], &mut trainer, &store, &config(6)).unwrap_err().to_string();
        assert!(err.contains("programming error") && err.contains("model 2") && err.contains("fake shape rule"), "{err}");
        let records = store.state().unwrap().records;
        assert_eq!(records.len(), 2, "the models before it are kept, and model 2 is not recorded as failed: {records:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_search_where_every_model_fails_says_so() {
        let dir = temp_dir("allfail");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let mut trainer = FakeTrainer { oom_size: 0, ..FakeTrainer::new() };
        let err = search(Grid { max: 12 }, vec![(1, 1), (2, 2)], &mut trainer, &store, &config(5)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no model finished") && text.contains("does not fit") && text.contains("narrower"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_same_seed_gives_the_same_architectures() {
        let run = |name: &str| {
            let dir = temp_dir(name);
            let store = SearchDir::open(&dir, false, "test").unwrap();
            let mut trainer = FakeTrainer::new();
            let result = search(Grid { max: 12 }, vec![(1, 1)], &mut trainer, &store, &config(10)).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            result.records.iter().map(|r| (r.father, r.architecture)).collect::<Vec<_>>()
        };
        assert_eq!(run("seed-a"), run("seed-b"));
    }

    #[test]
    fn each_model_gets_its_share_of_the_time_left() {
        let dir = temp_dir("share");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let mut trainer = FakeTrainer::new();
        let cfg = SearchConfig { time_limit: Duration::from_secs(100), model_share: 0.4, ..config(3) };
        search(Grid { max: 12 }, vec![(1, 1)], &mut trainer, &store, &cfg).unwrap();
        let secs: Vec<f64> = trainer.budgets.iter().map(Duration::as_secs_f64).collect();
        // 40% of the 100 s left, then 40% of what the (millisecond) models left: about 40 s each.
        assert!(secs.iter().all(|&s| (39.0..=40.0).contains(&s)), "{secs:?}");
        let cfg = SearchConfig { model_share: 1.0, ..cfg };
        let (mut trainer, dir_all) = (FakeTrainer::new(), temp_dir("share-all"));
        search(Grid { max: 12 }, vec![(1, 1)], &mut trainer, &SearchDir::open(&dir_all, false, "test").unwrap(), &cfg).unwrap();
        assert!(trainer.budgets[0].as_secs_f64() > 99.0, "share 1 gives the whole limit: {:?}", trainer.budgets);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&dir_all).unwrap();
    }

    #[test]
    fn a_child_starts_only_with_time_for_its_minimum_epochs() {
        let dir = temp_dir("min-epochs");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        // Twice the times of the first version, same proportions: under a loaded CI machine the
        // store's work per trial took the search 60 ms past a 1 s limit.
        let epoch = Duration::from_millis(100);
        let mut trainer = FakeTrainer { epoch, epochs: 4, ..FakeTrainer::new() };
        let cfg = SearchConfig { time_limit: Duration::from_millis(2000), model_share: 0.3, min_epochs: 3, max_models: None, ..config(0) };
        let start = Instant::now();
        let result = search(Grid { max: 30 }, vec![(1, 1)], &mut trainer, &store, &cfg).unwrap();
        // Every child was given at least three of its father's epochs and the margin (about
        // 344 ms), even when 30% of the time left was less, and none started without them.
        assert!(trainer.budgets[1..].iter().all(|b| *b >= Duration::from_millis(330)), "{:?}", trainer.budgets);
        assert!(result.records.len() >= 3, "{:?}", result.records.len());
        assert!(start.elapsed() < cfg.time_limit + epoch, "{:?}", start.elapsed());
        assert_eq!(result.ended_by, "time limit");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_model_budget_holds_its_minimum_epochs_with_a_margin_within_the_limit() {
        let s = Duration::from_secs;
        // 40% of 1000 s is more than 3 epochs of 100 s.
        assert_eq!(model_budget(s(1000), 0.4, s(100), 3), s(400));
        // 40% of 500 s is less: 3 epochs and the margin, 345 s.
        assert_eq!(model_budget(s(500), 0.4, s(100), 3), s(345));
        // Never past the search's limit.
        assert_eq!(model_budget(s(320), 0.4, s(100), 3), s(320));
        assert_eq!(model_budget(s(320), 2.0, Duration::ZERO, 3), s(320), "a share is at most all of it");
    }

    /// A trainer of `epochs` epochs of `epoch` whose accuracy curves are `curve`'s, by model id.
    fn trainer_with_curves(epoch: Duration, epochs: usize, curve: impl Fn(usize, usize) -> f64 + Send + 'static) -> FakeTrainer {
        FakeTrainer { epoch, epochs, curve: Some(Box::new(move |job, e| curve(job.id, e))), ..FakeTrainer::new() }
    }

    fn ranked_out<A>(r: &ModelRecord<A>) -> bool {
        r.stopped.as_deref().is_some_and(|s| s.starts_with("ranked out"))
    }

    #[test]
    fn the_worse_of_two_children_is_ranked_out_at_the_grace_epoch() {
        // Model 0 is the generator's; children 1 and 2 rise by 0.05 an epoch, one from 0.5 and the
        // other from 0.3.
        let run = |name: &str, worse: usize| {
            let dir = temp_dir(name);
            let store = SearchDir::open(&dir, false, "test").unwrap();
            let mut trainer = trainer_with_curves(Duration::from_millis(1), 6, move |id, e| {
                let from = if id == 0 {
                    0.4
                } else if id == worse {
                    0.3
                } else {
                    0.5
                };
                from + 0.05 * e as f64
            });
            let result = search(Grid { max: 12 }, vec![(1, 1)], &mut trainer, &store, &config(3)).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            assert_eq!(trainer.stop_rules, vec![false, true, true], "children, and only they, are ranked");
            assert!(result.records[1..].iter().all(|r| r.father.is_some()));
            result.records
        };
        // The worse trains second: it stops after epoch 2, 0.40 against the better's 0.60.
        let records = run("rank-worse-second", 2);
        assert_eq!((records[0].epochs, records[1].epochs, records[2].epochs), (6, 6, 2));
        assert_eq!((records[0].stopped.as_deref(), records[1].stopped.as_deref()), (None, None), "the better runs on");
        assert_eq!(
            records[2].stopped.as_deref(),
            Some("ranked out after epoch 2: best validation accuracy 0.4000 below the median 0.6000 of 1 child at that epoch")
        );
        // Recorded as a finished model, with its best epoch's figures for the optimiser.
        assert!(records[2].finished() && (records[2].val_accuracy.unwrap() - 0.4).abs() < 1e-12, "{:?}", records[2]);
        assert_eq!(records[2].curve.len(), 2);
        // The worse trains first: with no peer it runs on, and the better is above it.
        let records = run("rank-worse-first", 1);
        assert!(records.iter().all(|r| r.epochs == 6 && r.stopped.is_none()), "{records:?}");
    }

    #[test]
    fn the_rule_keeps_the_time_limit_and_leaves_time_for_more_models() {
        // Every child is flat at a figure below every earlier child's: from the second child on,
        // each is below the median after its second epoch.
        let epoch = Duration::from_millis(20);
        let limit = Duration::from_millis(1500);
        let run = |name: &str, early_ranking: Option<EarlyRanking>| {
            let dir = temp_dir(name);
            let store = SearchDir::open(&dir, false, "test").unwrap();
            let mut trainer = trainer_with_curves(epoch, 10, |id, e| if id == 0 { 0.08 * e as f64 } else { 0.9 - 0.01 * id as f64 });
            let cfg = SearchConfig { time_limit: limit, max_models: None, early_ranking, ..config(0) };
            let start = Instant::now();
            let result = search(Grid { max: 30 }, vec![(1, 1)], &mut trainer, &store, &cfg).unwrap();
            let elapsed = start.elapsed();
            std::fs::remove_dir_all(&dir).unwrap();
            // One epoch past the limit at most, with room for a loaded machine's scheduling.
            assert!(elapsed < limit + epoch + Duration::from_millis(80), "ran {elapsed:?} with a limit of {limit:?}");
            assert_eq!(result.ended_by, "time limit");
            result.records
        };
        let with = run("rank-time-with", Some(EarlyRanking::default()));
        let without = run("rank-time-without", None);
        let ranked = with.iter().filter(|r| ranked_out(r)).count();
        assert!(without.iter().all(|r| !ranked_out(r)));
        assert!(ranked >= 3 && with.iter().filter(|r| ranked_out(r)).all(|r| r.epochs == 2), "{with:?}");
        // Ten epochs a model without the rule, two for each child it ranks out.
        assert!(with.len() > without.len() + 2, "{} models with the rule, {} without", with.len(), without.len());
    }

    #[test]
    fn generators_are_never_ranked_and_a_resumed_search_ranks_against_ranked_out_children() {
        let dir = temp_dir("rank-resume");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let epoch = Duration::from_millis(1);
        // Child 1 at 0.9; children 2 and 3 at 0.5, below it (and, for 3, below the median 0.7).
        let mut first = trainer_with_curves(epoch, 4, |id, e| match id {
            0 => 0.2 * e as f64,
            1 => 0.9,
            _ => 0.5,
        });
        let result = search(Grid { max: 12 }, vec![(1, 1)], &mut first, &store, &config(4)).unwrap();
        assert!(!ranked_out(&result.records[1]) && ranked_out(&result.records[2]) && ranked_out(&result.records[3]), "{result:?}");
        drop(store);

        // Resumed with a second generator whose model is worse than every child: it trains on, with
        // no rule. Child 5 (0.95) is above every child; child 6 (0.4) is below the median of 1, 2, 3
        // and 5 after epoch 2, 0.7: the ranked-out children are finished peers.
        let store = SearchDir::open(&dir, true, "test").unwrap();
        let mut second = trainer_with_curves(epoch, 4, |id, _| match id {
            4 => 0.1,
            5 => 0.95,
            _ => 0.4,
        });
        let result = search(Grid { max: 12 }, vec![(1, 1), (5, 5)], &mut second, &store, &config(7)).unwrap();
        assert_eq!(second.trained.iter().map(|j| (j.id, j.father.is_some())).collect::<Vec<_>>(), vec![(4, false), (5, true), (6, true)]);
        assert_eq!(second.stop_rules, vec![false, true, true]);
        let records = &result.records;
        assert_eq!(records.len(), 7);
        assert!(records[..4].iter().all(|r| r.finished()), "ranked-out records stay finished: {records:?}");
        assert!(records[4].epochs == 4 && records[4].stopped.is_none(), "the generator's model: {:?}", records[4]);
        assert!(records[5].epochs == 4 && records[5].stopped.is_none(), "{:?}", records[5]);
        assert_eq!(
            records[6].stopped.as_deref(),
            Some("ranked out after epoch 2: best validation accuracy 0.4000 below the median 0.7000 of 4 children at that epoch")
        );
        assert!(records.iter().filter(|r| r.father.is_none()).all(|r| !ranked_out(r)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_ranking_setting_ends_the_search_before_any_model() {
        let dir = temp_dir("rank-bad");
        let store = SearchDir::open(&dir, false, "test").unwrap();
        let cfg = SearchConfig { early_ranking: Some(EarlyRanking { grace_epochs: 2, quantile: 1.5 }), ..config(3) };
        let mut trainer = FakeTrainer::new();
        let err = search(Grid { max: 12 }, vec![(1, 1)], &mut trainer, &store, &cfg).unwrap_err().to_string();
        assert!(err.contains("quantile 1.5"), "{err}");
        assert!(trainer.trained.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_child_epoch_is_its_father_epoch_scaled_by_their_costs() {
        let father = ModelRecord {
            id: 0,
            father: None,
            operations: vec![],
            architecture: (2i64, 3i64),
            parameters: 6,
            status: Status::Finished,
            epochs: 4,
            seconds: 8.0,
            val_loss: Some(0.1),
            val_accuracy: Some(0.9),
            stopped: None,
            worker: String::new(),
            curve: vec![],
            started_at: None,
            finished_at: None,
        };
        let cost = |a: &(i64, i64)| (a.0 * a.1) as f64;
        let records = [father];
        assert_eq!(child_epoch(&records, Some(0), &(4, 3), cost), Duration::from_secs(4), "twice the cost, twice 2 s");
        assert_eq!(child_epoch(&records, Some(0), &(1, 3), cost), Duration::from_secs(1));
        assert_eq!(child_epoch(&records, Some(0), &(0, 3), cost), Duration::from_secs(2), "a meaningless cost keeps the father's");
        assert_eq!(child_epoch(&records, None, &(4, 3), cost), Duration::ZERO);
        assert_eq!(child_epoch(&records, Some(7), &(4, 3), cost), Duration::ZERO);
    }

    #[test]
    fn lineage_epochs_count_each_ancestor_to_the_epoch_it_kept() {
        let stats = |epoch: usize, val_loss: f64| EpochStats {
            epoch,
            seconds: 1.0,
            loss: 1.0,
            accuracy: 0.5,
            val_loss: Some(val_loss),
            val_accuracy: Some(0.5),
        };
        let record = |id: usize, father: Option<usize>, epochs: usize, curve: Vec<EpochStats>| ModelRecord {
            id,
            father,
            operations: vec![],
            architecture: (1i64, 1i64),
            parameters: 1,
            status: Status::Finished,
            epochs,
            seconds: epochs as f64,
            val_loss: Some(0.1),
            val_accuracy: Some(0.9),
            stopped: None,
            worker: String::new(),
            curve,
            started_at: None,
            finished_at: None,
        };
        // Model 0 kept its 3rd of 4 epochs; model 1 (no curve kept) ran 5; model 2 kept its 2nd.
        let records = vec![
            record(0, None, 4, vec![stats(1, 0.5), stats(2, 0.3), stats(3, 0.2), stats(4, 0.25)]),
            record(1, Some(0), 5, vec![]),
            record(2, Some(1), 3, vec![stats(1, 0.3), stats(2, 0.1), stats(3, 0.1)]),
            record(3, Some(3), 2, vec![]),
        ];
        let result = SearchResult { records, best: 2, ended_by: String::new() };
        assert_eq!(result.lineage_epochs(0), 3);
        assert_eq!(result.lineage_epochs(1), 8);
        assert_eq!(result.lineage_epochs(2), 10, "3 + 5 + 2: ties keep the earlier epoch");
        assert_eq!(result.lineage_epochs(3), 8, "a record that is its own father is counted once per record");
        assert_eq!(result.lineage_epochs(9), 0);
    }

    /// The search shared by workers through a real PostgreSQL server (started by the test).
    mod workers {
        use super::*;
        use crate::search::store::{PgStore, StudyState, DEFAULT_LEASE, MAX_ATTEMPTS};
        use crate::search::SearchSpace;
        use crate::testing::postgres::PostgresServer;
        use serde_json::json;

        fn open(server: &PostgresServer, study: &str, worker: &str, lease: Duration) -> PgStore {
            PgStore::open(&server.url(), study, worker, lease).unwrap()
        }

        fn spec(arch: (i64, i64)) -> TrialSpec {
            TrialSpec {
                father: None,
                ops: json!([]),
                operations: vec![],
                architecture: json!(arch),
                parameters: (arch.0 * arch.1) as u64,
                descriptor: Grid { max: 12 }.descriptor(&arch),
            }
        }

        fn record_of(claim: &Claim, acc: f64, worker: &str) -> ModelRecord<Value> {
            ModelRecord {
                id: claim.id,
                father: None,
                operations: vec![],
                architecture: claim.spec.architecture.clone(),
                parameters: 1,
                status: Status::Finished,
                epochs: 1,
                seconds: 0.1,
                val_loss: Some(1.0 - acc),
                val_accuracy: Some(acc),
                stopped: None,
                worker: worker.into(),
                curve: vec![],
                started_at: None,
                finished_at: None,
            }
        }

        /// Runs `workers` searches on one study at once, each in its thread with its own
        /// connection; returns the ids each trained.
        fn run_workers(server: &PostgresServer, study: &str, workers: usize, cfg: &SearchConfig, epoch: Duration) -> Vec<Vec<usize>> {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|w| {
                        scope.spawn(move || {
                            let store = open(server, study, &format!("worker-{w}"), Duration::from_secs(60));
                            let mut trainer = FakeTrainer { epoch, ..FakeTrainer::new() };
                            search(Grid { max: 12 }, vec![(1, 1), (2, 3)], &mut trainer, &store, cfg).unwrap();
                            trainer.trained.iter().map(|j| j.id).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        }

        /// Every trial of `study` ended, once each, ids 0..n; architectures distinct.
        fn check_whole(server: &PostgresServer, study: &str, n: usize) -> StudyState {
            let state = open(server, study, "reader", DEFAULT_LEASE).state().unwrap();
            assert!(state.running.is_empty(), "{:?}", state.running);
            assert_eq!(state.records.iter().map(|r| r.id).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
            let archs: HashSet<String> = state.records.iter().map(|r| r.architecture.to_string()).collect();
            assert_eq!(archs.len(), n, "an architecture was trained twice");
            state
        }

        #[test]
        fn four_workers_share_one_search_and_train_each_architecture_once() {
            let server = PostgresServer::start();
            let cfg =
                SearchConfig { time_limit: Duration::from_secs(120), seed: 5, max_models: Some(16), verbose: false, ..Default::default() };
            let trained = run_workers(&server, "grid", 4, &cfg, Duration::from_millis(40));
            let state = check_whole(&server, "grid", 16);
            let mut all: Vec<usize> = trained.iter().flatten().copied().collect();
            all.sort();
            assert_eq!(all, (0..16).collect::<Vec<_>>(), "each trial trained by exactly one worker: {trained:?}");
            assert!(trained.iter().filter(|t| !t.is_empty()).count() >= 2, "one worker did everything: {trained:?}");
            let workers: HashSet<&str> = state.records.iter().map(|r| r.worker.as_str()).collect();
            assert!(workers.len() >= 2 && workers.iter().all(|w| w.starts_with("worker-")), "{workers:?}");
            // Children name fathers that finished before them, whose weights they read.
            assert!(state.records.iter().filter_map(|r| r.father).all(|f| state.records[f].finished()));
            let best = best_record(&state.records).unwrap();
            assert_eq!(open(&server, "grid", "reader", DEFAULT_LEASE).best().unwrap().unwrap().id, best.id);
        }

        #[test]
        fn the_search_completes_when_the_database_restarts() {
            let server = PostgresServer::start();
            let cfg =
                SearchConfig { time_limit: Duration::from_secs(120), seed: 3, max_models: Some(10), verbose: false, ..Default::default() };
            let finished = std::sync::atomic::AtomicBool::new(false);
            let restarted_midway = std::thread::scope(|scope| {
                let restart = scope.spawn(|| {
                    std::thread::sleep(Duration::from_millis(800));
                    server.restart();
                    !finished.load(std::sync::atomic::Ordering::SeqCst)
                });
                run_workers(&server, "restart", 2, &cfg, Duration::from_millis(150));
                finished.store(true, std::sync::atomic::Ordering::SeqCst);
                restart.join().unwrap()
            });
            assert!(restarted_midway, "the search ended before the restart: make its models slower");
            check_whole(&server, "restart", 10);
        }

        #[test]
        fn a_silent_workers_trial_is_trained_again_and_failed_after_max_attempts() {
            let server = PostgresServer::start();
            let lease = Duration::from_secs(1);
            let ghost = open(&server, "lost", "ghost", lease);
            let ClaimOutcome::Claimed(first) = ghost.claim_new(&spec((1, 1)), None).unwrap() else { panic!("claim") };
            let ClaimOutcome::Claimed(second) = ghost.claim_new(&spec((2, 3)), None).unwrap() else { panic!("claim") };
            // The second trial has lost its workers as often as allowed already.
            let mut client = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
            client
                .execute("UPDATE netmorph_trials SET attempt = $1 WHERE id = $2", &[&(MAX_ATTEMPTS as i32), &(second.id as i32)])
                .unwrap();
            // The ghost goes silent (killed); after a lease, a worker takes its trial over.
            std::thread::sleep(lease + Duration::from_millis(300));
            let store = open(&server, "lost", "worker", lease);
            let mut trainer = FakeTrainer::new();
            let cfg =
                SearchConfig { time_limit: Duration::from_secs(60), seed: 1, max_models: Some(5), verbose: false, ..Default::default() };
            search(Grid { max: 12 }, vec![(1, 1), (2, 3)], &mut trainer, &store, &cfg).unwrap();
            assert_eq!(trainer.trained[0].id, first.id, "the abandoned trial is trained first");
            assert!(trainer.trained.iter().all(|j| j.id != second.id), "a trial lost {MAX_ATTEMPTS} times is not trained again");
            let state = check_whole(&server, "lost", 5);
            assert_eq!(state.records[first.id].worker, "worker");
            assert!(state.records[first.id].finished());
            match &state.records[second.id].status {
                Status::Failed { reason, .. } => assert!(reason.contains("lost 3 times"), "{reason}"),
                s => panic!("{s:?}"),
            }
            // The ghost's late result is refused: the trial is no longer its.
            assert!(!ghost.heartbeat(first.id).unwrap());
            assert!(!ghost.finish(&record_of(&first, 0.99, "ghost"), None).unwrap());
            assert!(state.records[first.id].val_accuracy < Some(0.99));
        }

        #[test]
        fn claims_deadlines_and_settings_are_the_studys() {
            let server = PostgresServer::start();
            let (a, b) = (open(&server, "s", "a", DEFAULT_LEASE), open(&server, "s", "b", DEFAULT_LEASE));
            let ClaimOutcome::Claimed(claim) = a.claim_new(&spec((1, 1)), Some(2)).unwrap() else { panic!("claim") };
            assert_eq!(b.claim_new(&spec((1, 1)), Some(2)).unwrap(), ClaimOutcome::Taken);
            assert!(matches!(b.claim_new(&spec((2, 2)), Some(2)).unwrap(), ClaimOutcome::Claimed(Claim { id: 1, .. })));
            assert_eq!(b.claim_new(&spec((3, 3)), Some(2)).unwrap(), ClaimOutcome::Full);
            assert_eq!(a.state().unwrap().running.len(), 2);
            // Only the holder stores a result; with it, the model and the best.
            let blob = ModelBlob { graph: "{}".into(), weights: vec![7; 1000] };
            assert!(!b.heartbeat(claim.id).unwrap() && a.heartbeat(claim.id).unwrap());
            assert!(!b.finish(&record_of(&claim, 0.9, "b"), Some(&blob)).unwrap());
            assert!(a.finish(&record_of(&claim, 0.9, "a"), Some(&blob)).unwrap());
            assert!(a.finish(&record_of(&claim, 0.9, "a"), Some(&blob)).unwrap(), "a retried finish is the same result");
            assert_eq!(b.load_model(claim.id).unwrap(), blob);
            assert_eq!(b.best().unwrap().unwrap().id, claim.id);
            // The first worker's deadline, settings and width are everyone's.
            let first = a.deadline(Duration::from_secs(100)).unwrap();
            let second = b.deadline(Duration::from_secs(5)).unwrap();
            assert_eq!((first.total, second.total), (Duration::from_secs(100), Duration::from_secs(100)));
            assert!(second.left <= first.left && second.left > Duration::from_secs(90));
            crate::search::store::check_settings(&a, &json!({"seed": 1, "batch_size": 128})).unwrap();
            let err = crate::search::store::check_settings(&b, &json!({"seed": 1, "batch_size": 64})).unwrap_err().to_string();
            assert!(err.contains("batch_size: stored 128, this run 64") && err.contains("study `s`"), "{err}");
            // One worker gets the final step.
            assert!(a.claim_final().unwrap());
            assert!(!b.claim_final().unwrap());
            a.put_file("final.safetensors", &[1, 2, 3]).unwrap();
            assert_eq!(b.get_file("final.safetensors").unwrap(), Some(vec![1, 2, 3]));
        }

        #[test]
        fn one_worker_on_postgres_proposes_what_the_search_directory_does() {
            let server = PostgresServer::start();
            let cfg = SearchConfig { seed: 1, ..config(10) };
            // Four epochs, so that children below the median are ranked out after the second.
            let mut on_postgres = FakeTrainer { epochs: 4, ..FakeTrainer::new() };
            let pg_store = open(&server, "same", "only", DEFAULT_LEASE);
            search(Grid { max: 12 }, vec![(1, 1)], &mut on_postgres, &pg_store, &cfg).unwrap();
            let dir = temp_dir("same-as-postgres");
            let mut in_directory = FakeTrainer { epochs: 4, ..FakeTrainer::new() };
            let dir_store = SearchDir::open(&dir, false, "only").unwrap();
            search(Grid { max: 12 }, vec![(1, 1)], &mut in_directory, &dir_store, &cfg).unwrap();
            let sequence = |t: &FakeTrainer| t.trained.iter().map(|j| (j.id, j.father, j.arch)).collect::<Vec<_>>();
            assert_eq!(sequence(&on_postgres), sequence(&in_directory));
            assert_eq!(on_postgres.trained.len(), 10);
            // Both stores keep each model's curve and why it stopped, ranked-out children included.
            let (pg, directory) = (pg_store.state().unwrap().records, dir_store.state().unwrap().records);
            let kept = |records: &[ModelRecord<Value>]| {
                records.iter().map(|r| (r.id, r.epochs, r.stopped.clone(), r.curve.clone())).collect::<Vec<_>>()
            };
            assert_eq!(kept(&pg), kept(&directory));
            assert!(pg.iter().all(|r| r.curve.len() == r.epochs && r.epochs > 0), "{pg:?}");
            assert!(pg.iter().any(ranked_out), "no child was ranked out: {pg:?}");
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_newer_schema_is_refused() {
            let server = PostgresServer::start();
            drop(open(&server, "s", "a", DEFAULT_LEASE));
            let mut client = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
            client.execute("UPDATE netmorph_schema SET version = 99", &[]).unwrap();
            let err = PgStore::open(&server.url(), "s", "a", DEFAULT_LEASE).err().expect("refused").to_string();
            assert!(err.contains("schema version 99") && err.contains("newer"), "{err}");
        }
    }
}
