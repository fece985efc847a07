//! Trials per hour of a search shared by 1, 2 and 4 workers through PostgreSQL, on the fake
//! trainer (a fixed time per epoch, no device), and the store's own time per trial. A throwaway
//! PostgreSQL server is started for the run (Debian's `postgresql` package).
//!
//! ```text
//! cargo run --release --example worker_throughput -- --seconds 60 --epoch-ms 1000
//! ```

use clap::Parser;
use netmorph::search::store::{BestModel, Claim, ClaimOutcome, Deadline, ModelBlob, ModelRecord, PgStore, StudyState, TrialSpec};
use netmorph::search::{search, SearchConfig, Store};
use netmorph::testing::postgres::PostgresServer;
use netmorph::testing::search::{FakeTrainer, Grid};
use netmorph::Result;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Each study's time limit.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The fake trainer's time per epoch (two epochs per trial).
    #[arg(long, default_value_t = 1000)]
    epoch_ms: u64,
}

/// A store that adds up the time spent in it, heartbeats apart (they run beside training).
struct Timed {
    inner: PgStore,
    spent: Mutex<Duration>,
}

impl Timed {
    fn time<T>(&self, f: impl FnOnce(&PgStore) -> T) -> T {
        let start = Instant::now();
        let out = f(&self.inner);
        *self.spent.lock().unwrap() += start.elapsed();
        out
    }
}

impl Store for Timed {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn worker(&self) -> &str {
        self.inner.worker()
    }
    fn worker_index(&self) -> usize {
        self.inner.worker_index()
    }
    fn deadline(&self, limit: Duration) -> Result<Deadline> {
        self.time(|s| s.deadline(limit))
    }
    fn put_if_absent(&self, key: &str, value: &Value) -> Result<Value> {
        self.time(|s| s.put_if_absent(key, value))
    }
    fn put(&self, key: &str, value: &Value) -> Result<()> {
        self.time(|s| s.put(key, value))
    }
    fn get(&self, key: &str) -> Result<Option<Value>> {
        self.time(|s| s.get(key))
    }
    fn put_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.time(|s| s.put_file(name, bytes))
    }
    fn get_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.time(|s| s.get_file(name))
    }
    fn state(&self) -> Result<StudyState> {
        self.time(|s| s.state())
    }
    fn claim_new(&self, spec: &TrialSpec, max_models: Option<usize>) -> Result<ClaimOutcome> {
        self.time(|s| s.claim_new(spec, max_models))
    }
    fn claim_abandoned(&self) -> Result<Option<Claim>> {
        self.time(|s| s.claim_abandoned())
    }
    fn heartbeat(&self, id: usize) -> Result<bool> {
        self.inner.heartbeat(id)
    }
    fn lease(&self) -> Option<Duration> {
        self.inner.lease()
    }
    fn load_model(&self, id: usize) -> Result<ModelBlob> {
        self.time(|s| s.load_model(id))
    }
    fn finish(&self, record: &ModelRecord<Value>, model: Option<&ModelBlob>) -> Result<bool> {
        self.time(|s| s.finish(record, model))
    }
    fn best(&self) -> Result<Option<BestModel>> {
        self.time(|s| s.best())
    }
    fn claim_final(&self) -> Result<bool> {
        self.time(|s| s.claim_final())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let server = PostgresServer::start();
    let limit = Duration::from_secs(args.seconds);
    let epoch = Duration::from_millis(args.epoch_ms);
    println!(
        "Fake trainer: 2 epochs of {} ms per trial; each study runs {} s (trials per hour of its wall time)",
        args.epoch_ms, args.seconds
    );
    println!("{:>7} {:>7} {:>14} {:>10} {:>16}", "workers", "trials", "trials/hour", "x one", "store ms/trial");
    let mut one = None;
    for workers in [1usize, 2, 4] {
        let study = format!("throughput-{workers}");
        let config = SearchConfig { time_limit: limit, seed: 1, verbose: false, min_epochs: 0, ..Default::default() };
        let start = Instant::now();
        let ends: Vec<(Duration, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (server, study, config) = (&server, &study, &config);
                    scope.spawn(move || {
                        let inner = PgStore::open(&server.url(), study, &format!("worker-{w}"), Duration::from_secs(60)).unwrap();
                        let store = Timed { inner, spent: Mutex::new(Duration::ZERO) };
                        let mut trainer = FakeTrainer { epoch, ..FakeTrainer::new() };
                        // A grid large enough that the search never runs out of architectures.
                        let result = search(Grid { max: 200 }, vec![(1, 1)], &mut trainer, &store, config).unwrap();
                        let spent = *store.spent.lock().unwrap();
                        (spent, result.ended_by)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wall = start.elapsed();
        if let Some((_, why)) = ends.iter().find(|(_, why)| why != "time limit") {
            println!("(a worker ended early: {why})");
        }
        let reader = PgStore::open(&server.url(), &study, "reader", Duration::from_secs(60))?;
        let trials = reader.state()?.records.iter().filter(|r| r.finished()).count();
        let per_hour = trials as f64 * 3600.0 / wall.as_secs_f64();
        let ratio = per_hour / *one.get_or_insert(per_hour);
        let store_ms = ends.iter().map(|e| e.0).sum::<Duration>().as_secs_f64() * 1000.0 / trials.max(1) as f64;
        println!("{workers:>7} {trials:>7} {per_hour:>14.0} {ratio:>10.2} {store_ms:>16.1}");
    }
    Ok(())
}
