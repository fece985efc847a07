//! A study in PostgreSQL, shared by any number of workers on any machines (Optuna's RDB storage
//! is the model). Everything a search needs is in the database: the study, its settings and
//! deadline, every trial with its state, worker, heartbeat and times, the models' architectures
//! and weights (`bytea`), the history, the best model and the final choices.
//!
//! - **Claims are atomic.** A new trial takes the next id under the study's row lock, and an
//!   architecture can be claimed once per study (a unique index on its descriptor). A trial whose
//!   worker went silent is claimed with `FOR UPDATE SKIP LOCKED`, so two workers never take it.
//! - **Leases.** A worker sends a heartbeat every lease / 6 while it trains. A trial silent for a
//!   lease ([`DEFAULT_LEASE`], 60 s: many heartbeats must be missed, so a slow network or a busy
//!   database does not cost a trial, while a killed worker costs a minute, little against a
//!   model's minutes of training) is claimed again by another worker, at most [`MAX_ATTEMPTS`]
//!   times in all; then it is recorded as failed.
//! - **One transaction per result.** A trial's weights, record and the best model are written
//!   together, and only by the worker that holds the trial.
//! - **Connections drop.** Every call reconnects with backoff (for up to [`RECONNECT_FOR`]) and
//!   runs again from the start; a transaction cut off is rolled back by the server, so nothing is
//!   ever half-written. A restarted database is met the same way.
//! - **The schema has a version** (`netmorph_schema`), migrated at start under an advisory lock;
//!   a database whose schema is newer than this program knows is refused.

use super::{BestModel, Claim, ClaimOutcome, Deadline, ModelBlob, ModelRecord, Running, Store, StudyState, TrialSpec};
use crate::error::{Error, Result};
use postgres::{Client, NoTls, Transaction};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a trial's worker may be silent before another worker takes the trial over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// A trial whose workers were lost this many times is recorded as failed: a model that kills its
/// worker (a driver crash, the host's memory) is not tried forever.
pub const MAX_ATTEMPTS: u32 = 3;
/// How long a call keeps reconnecting to a database that went away before it fails.
pub const RECONNECT_FOR: Duration = Duration::from_secs(300);

/// The schema, one migration per version. A migration is never edited once released: changes
/// are new versions.
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE netmorph_studies (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created timestamptz NOT NULL DEFAULT now(),
    total_seconds double precision,
    deadline timestamptz,
    workers integer NOT NULL DEFAULT 0
);
CREATE TABLE netmorph_values (
    study bigint NOT NULL REFERENCES netmorph_studies ON DELETE CASCADE,
    key text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (study, key)
);
CREATE TABLE netmorph_trials (
    study bigint NOT NULL REFERENCES netmorph_studies ON DELETE CASCADE,
    id integer NOT NULL,
    state text NOT NULL CHECK (state IN ('running', 'finished', 'failed')),
    spec jsonb NOT NULL,
    descriptor text NOT NULL,
    worker text NOT NULL,
    attempt integer NOT NULL,
    claimed timestamptz NOT NULL DEFAULT now(),
    heartbeat timestamptz NOT NULL DEFAULT now(),
    ended timestamptz,
    record jsonb,
    PRIMARY KEY (study, id),
    UNIQUE (study, descriptor)
);
CREATE INDEX netmorph_trials_running ON netmorph_trials (study, heartbeat) WHERE state = 'running';
CREATE TABLE netmorph_models (
    study bigint NOT NULL,
    id integer NOT NULL,
    graph text NOT NULL,
    weights bytea NOT NULL,
    PRIMARY KEY (study, id),
    FOREIGN KEY (study, id) REFERENCES netmorph_trials ON DELETE CASCADE
);
CREATE TABLE netmorph_files (
    study bigint NOT NULL REFERENCES netmorph_studies ON DELETE CASCADE,
    name text NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (study, name)
);
"#];

/// Advisory-lock keys: the schema's migration, and each study's final step.
const MIGRATION_LOCK: i64 = 0x6e65_746d_6f72_7068;
const FINAL_LOCK_CLASS: i32 = 0x6e6d_6669;

/// A study in a PostgreSQL database, opened by one worker.
pub struct PgStore {
    url: String,
    study_name: String,
    study: i64,
    worker: String,
    /// This worker's place among the study's workers, in the order they joined.
    index: usize,
    lease: Duration,
    client: Mutex<Option<Client>>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`, or libpq's `host=... dbname=...`), migrates
    /// the schema, and opens the study `study`, creating it when it does not exist.
    pub fn open(url: &str, study: &str, worker: &str, lease: Duration) -> Result<PgStore> {
        if study.trim().is_empty() {
            return Err(Error::Invalid("--study: the study needs a name".into()));
        }
        if lease < Duration::from_secs(1) {
            return Err(Error::Invalid(format!("--lease: {lease:?} is too short; give at least 1s")));
        }
        let client = connect(url)?;
        let mut store = PgStore {
            url: url.to_string(),
            study_name: study.to_string(),
            study: 0,
            worker: worker.to_string(),
            index: 0,
            lease,
            client: Mutex::new(Some(client)),
        };
        store
            .call(|client| {
                let mut tx = client.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
                tx.batch_execute("CREATE TABLE IF NOT EXISTS netmorph_schema (version integer NOT NULL)")?;
                let version: i32 = match tx.query_opt("SELECT version FROM netmorph_schema", &[])? {
                    Some(row) => row.get(0),
                    None => {
                        tx.execute("INSERT INTO netmorph_schema VALUES (0)", &[])?;
                        0
                    }
                };
                if version as usize > MIGRATIONS.len() {
                    return Ok(Err(version));
                }
                for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                    tx.batch_execute(sql)?;
                    tx.execute("UPDATE netmorph_schema SET version = $1", &[&(i as i32 + 1)])?;
                }
                tx.commit()?;
                Ok(Ok(()))
            })?
            .map_err(|version| {
                Error::Store(format!(
                    "the database at {} holds netmorph schema version {version}, newer than this netmorph's {}: run a newer netmorph",
                    store.redacted_url(),
                    MIGRATIONS.len()
                ))
            })?;
        store.study = store.call(|client| loop {
            // Two statements: the second sees a study that a worker starting at the same moment
            // committed while the first waited on it (one statement's snapshot would not).
            if let Some(row) = client.query_opt(
                "INSERT INTO netmorph_studies (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
                &[&store.study_name],
            )? {
                return Ok(row.get::<_, i64>(0));
            }
            if let Some(row) = client.query_opt("SELECT id FROM netmorph_studies WHERE name = $1", &[&store.study_name])? {
                return Ok(row.get::<_, i64>(0));
            }
        })?;
        store.index = store.call(|client| {
            let row = client
                .query_one("UPDATE netmorph_studies SET workers = workers + 1 WHERE id = $1 RETURNING workers - 1", &[&store.study])?;
            Ok(row.get::<_, i32>(0) as usize)
        })?;
        Ok(store)
    }

    /// The database's address without its password.
    fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Runs `op` on the connection, connecting first when there is none. A lost connection (or a
    /// database that restarts) is retried with backoff, `op` from its start, for up to
    /// [`RECONNECT_FOR`]; other database errors are returned.
    fn call<T>(&self, mut op: impl FnMut(&mut Client) -> Result<T, postgres::Error>) -> Result<T> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            let outcome = match slot.as_mut() {
                Some(client) if !client.is_closed() => op(client),
                _ => Client::connect(&self.url, NoTls).and_then(|mut client| {
                    let outcome = op(&mut client);
                    *slot = Some(client);
                    outcome
                }),
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(e) if is_connection_failure(&e) && start.elapsed() < RECONNECT_FOR => {
                    *slot = None;
                    eprintln!("{}: {}; connecting again in {:.1}s", self.name(), describe(&e), wait.as_secs_f64());
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
                Err(e) => return Err(Error::Store(format!("{}: {}", self.name(), describe(&e)))),
            }
        }
    }

    /// Locks the study's row: claims and results of one study are serialised by it.
    fn lock_study(&self, tx: &mut Transaction) -> Result<(), postgres::Error> {
        tx.execute("SELECT id FROM netmorph_studies WHERE id = $1 FOR UPDATE", &[&self.study])?;
        Ok(())
    }

    /// Records trial `id` as failed because its workers were lost too often.
    fn fail_abandoned(&self, tx: &mut Transaction, id: i32, spec: &TrialSpec, worker: &str, attempts: i32) -> Result<(), postgres::Error> {
        let reason = format!("its worker was lost {attempts} times (last {worker}): recorded as failed after {MAX_ATTEMPTS}");
        let record = ModelRecord::of_trial(id as usize, spec, worker, super::Status::Failed { reason, resource: false });
        tx.execute(
            "UPDATE netmorph_trials SET state = 'failed', ended = now(), record = $3 WHERE study = $1 AND id = $2",
            &[&self.study, &id, &to_json(&record)],
        )?;
        Ok(())
    }

    /// Lists the studies in the database at `url` (for `--status` without a study).
    pub fn studies(url: &str) -> Result<Vec<String>> {
        let mut client = connect(url)?;
        let failed = |e: postgres::Error| Error::Store(format!("{}: {}", redact(url), describe(&e)));
        let exists: bool = client.query_one("SELECT to_regclass('netmorph_studies') IS NOT NULL", &[]).map_err(failed)?.get(0);
        if !exists {
            return Ok(Vec::new());
        }
        let rows = client.query("SELECT name FROM netmorph_studies ORDER BY id", &[]).map_err(failed)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Opens an existing study without joining it as a worker (for `--status`): a study that is
    /// not there is an error that lists those that are.
    pub fn open_existing(url: &str, study: &str) -> Result<PgStore> {
        let studies = PgStore::studies(url)?;
        if !studies.iter().any(|s| s == study) {
            let known = if studies.is_empty() { "none".to_string() } else { studies.join(", ") };
            return Err(Error::Store(format!("{} holds no study `{study}` (its studies: {known})", redact(url))));
        }
        PgStore::open(url, study, "status", DEFAULT_LEASE)
    }
}

/// The first connection, which fails at once: a wrong address or password is the user's to fix;
/// only a connection that worked is retried when it drops.
fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).map_err(|e| Error::Store(format!("cannot connect to the database at {}: {}", redact(url), describe(&e))))
}

/// A database error with what the server or the network said (the crate's own text is terse:
/// "db error", "error connecting to server").
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// `postgres://user:secret@host/db` without the secret.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A connection that broke or could not be made (the database restarting, the network), as
/// opposed to an error in what was asked.
fn is_connection_failure(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exception; 57P01-03: the server shuts down, or is starting.
        return code.starts_with("08") || code.starts_with("57P");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("store records serialise")
}

impl Store for PgStore {
    fn name(&self) -> String {
        format!("study `{}` at {}", self.study_name, self.redacted_url())
    }

    fn worker(&self) -> &str {
        &self.worker
    }

    fn worker_index(&self) -> usize {
        self.index
    }

    fn deadline(&self, limit: Duration) -> Result<Deadline> {
        let (total, left): (f64, f64) = self.call(|client| {
            client.execute(
                "UPDATE netmorph_studies SET total_seconds = $2, deadline = now() + make_interval(secs => $2)
                 WHERE id = $1 AND deadline IS NULL",
                &[&self.study, &limit.as_secs_f64()],
            )?;
            let row = client.query_one(
                "SELECT total_seconds, greatest(extract(epoch FROM deadline - now())::float8, 0) FROM netmorph_studies WHERE id = $1",
                &[&self.study],
            )?;
            Ok((row.get(0), row.get(1)))
        })?;
        Ok(Deadline { total: Duration::from_secs_f64(total), left: Duration::from_secs_f64(left) })
    }

    fn put_if_absent(&self, key: &str, value: &Value) -> Result<Value> {
        self.call(|client| {
            client.execute(
                "INSERT INTO netmorph_values (study, key, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&self.study, &key, value],
            )?;
            Ok(client.query_one("SELECT value FROM netmorph_values WHERE study = $1 AND key = $2", &[&self.study, &key])?.get(0))
        })
    }

    fn put(&self, key: &str, value: &Value) -> Result<()> {
        self.call(|client| {
            client.execute(
                "INSERT INTO netmorph_values (study, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (study, key) DO UPDATE SET value = excluded.value",
                &[&self.study, &key, value],
            )?;
            Ok(())
        })
    }

    fn get(&self, key: &str) -> Result<Option<Value>> {
        self.call(|client| {
            Ok(client.query_opt("SELECT value FROM netmorph_values WHERE study = $1 AND key = $2", &[&self.study, &key])?.map(|r| r.get(0)))
        })
    }

    fn put_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.call(|client| {
            client.execute(
                "INSERT INTO netmorph_files (study, name, bytes) VALUES ($1, $2, $3)
                 ON CONFLICT (study, name) DO UPDATE SET bytes = excluded.bytes",
                &[&self.study, &name, &bytes],
            )?;
            Ok(())
        })
    }

    fn get_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.call(|client| {
            Ok(client
                .query_opt("SELECT bytes FROM netmorph_files WHERE study = $1 AND name = $2", &[&self.study, &name])?
                .map(|r| r.get(0)))
        })
    }

    fn state(&self) -> Result<StudyState> {
        let rows = self.call(|client| {
            client.query(
                "SELECT id, state, spec, worker, attempt, extract(epoch FROM now() - claimed)::float8,
                        extract(epoch FROM now() - heartbeat)::float8, record
                 FROM netmorph_trials WHERE study = $1 ORDER BY id",
                &[&self.study],
            )
        })?;
        let mut state = StudyState::default();
        for row in rows {
            let id: i32 = row.get(0);
            let trial_state: String = row.get(1);
            let bad =
                |what: &str, e: serde_json::Error| Error::Store(format!("{}: trial {id}'s {what} is not netmorph's: {e}", self.name()));
            if trial_state == "running" {
                let spec: TrialSpec = serde_json::from_value(row.get(2)).map_err(|e| bad("spec", e))?;
                let attempt: i32 = row.get(4);
                state.running.push(Running {
                    id: id as usize,
                    spec,
                    worker: row.get(3),
                    attempt: attempt as u32,
                    seconds: row.get(5),
                    silent: row.get(6),
                });
            } else {
                let record: Value = row.get(7);
                state.records.push(serde_json::from_value(record).map_err(|e| bad("record", e))?);
            }
        }
        Ok(state)
    }

    fn claim_new(&self, spec: &TrialSpec, max_models: Option<usize>) -> Result<ClaimOutcome> {
        let spec_json = to_json(spec);
        self.call(|client| {
            let mut tx = client.transaction()?;
            self.lock_study(&mut tx)?;
            let row = tx.query_one(
                "SELECT count(*), coalesce(max(id) + 1, 0), count(*) FILTER (WHERE descriptor = $2) FROM netmorph_trials WHERE study = $1",
                &[&self.study, &spec.descriptor],
            )?;
            let (count, next, taken): (i64, i32, i64) = (row.get(0), row.get(1), row.get(2));
            if taken > 0 {
                return Ok(ClaimOutcome::Taken);
            }
            if max_models.is_some_and(|m| count as usize >= m) {
                return Ok(ClaimOutcome::Full);
            }
            tx.execute(
                "INSERT INTO netmorph_trials (study, id, state, spec, descriptor, worker, attempt) VALUES ($1, $2, 'running', $3, $4, $5, 1)",
                &[&self.study, &next, &spec_json, &spec.descriptor, &self.worker],
            )?;
            tx.commit()?;
            Ok(ClaimOutcome::Claimed(Claim { id: next as usize, spec: spec.clone(), attempt: 1 }))
        })
    }

    fn claim_abandoned(&self) -> Result<Option<Claim>> {
        let lease = self.lease.as_secs_f64();
        let claimed = self.call(|client| loop {
            let mut tx = client.transaction()?;
            let Some(row) = tx.query_opt(
                "SELECT id, spec, attempt, worker FROM netmorph_trials
                 WHERE study = $1 AND state = 'running' AND heartbeat < now() - make_interval(secs => $2)
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&self.study, &lease],
            )?
            else {
                return Ok(Ok(None));
            };
            let (id, spec, attempt, worker): (i32, Value, i32, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
            let spec: TrialSpec = match serde_json::from_value(spec) {
                Ok(spec) => spec,
                Err(e) => return Ok(Err(format!("trial {id}'s spec is not netmorph's: {e}"))),
            };
            if attempt as u32 >= MAX_ATTEMPTS {
                self.fail_abandoned(&mut tx, id, &spec, &worker, attempt)?;
                tx.commit()?;
                continue;
            }
            tx.execute(
                "UPDATE netmorph_trials SET worker = $3, attempt = attempt + 1, claimed = now(), heartbeat = now() WHERE study = $1 AND id = $2",
                &[&self.study, &id, &self.worker],
            )?;
            tx.commit()?;
            return Ok(Ok(Some((Claim { id: id as usize, spec, attempt: attempt as u32 + 1 }, worker))));
        })?
        .map_err(|e| Error::Store(format!("{}: {e}", self.name())))?;
        Ok(claimed.map(|(claim, lost)| {
            eprintln!(
                "{}: trial {} was {lost}'s, silent for over {:?}: trained again (attempt {})",
                self.name(),
                claim.id,
                self.lease,
                claim.attempt
            );
            claim
        }))
    }

    fn heartbeat(&self, id: usize) -> Result<bool> {
        let id = id as i32;
        self.call(|client| {
            let n = client.execute(
                "UPDATE netmorph_trials SET heartbeat = now() WHERE study = $1 AND id = $2 AND worker = $3 AND state = 'running'",
                &[&self.study, &id, &self.worker],
            )?;
            Ok(n == 1)
        })
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn load_model(&self, id: usize) -> Result<ModelBlob> {
        let id32 = id as i32;
        self.call(|client| {
            client.query_opt("SELECT graph, weights FROM netmorph_models WHERE study = $1 AND id = $2", &[&self.study, &id32])
        })?
        .map(|row| ModelBlob { graph: row.get(0), weights: row.get(1) })
        .ok_or_else(|| Error::Store(format!("{}: model {id} has no stored weights", self.name())))
    }

    fn finish(&self, record: &ModelRecord<Value>, model: Option<&ModelBlob>) -> Result<bool> {
        let id = record.id as i32;
        let state = if record.finished() { "finished" } else { "failed" };
        let record_json = to_json(record);
        self.call(|client| {
            let mut tx = client.transaction()?;
            self.lock_study(&mut tx)?;
            let row = tx.query_opt("SELECT state, worker FROM netmorph_trials WHERE study = $1 AND id = $2", &[&self.study, &id])?;
            let Some(row) = row else { return Ok(false) };
            let (current, holder): (String, String) = (row.get(0), row.get(1));
            if holder != self.worker {
                return Ok(false);
            }
            if current != "running" {
                // This worker's own result, committed before a connection drop hid the reply.
                return Ok(true);
            }
            if let Some(model) = model {
                tx.execute(
                    "INSERT INTO netmorph_models (study, id, graph, weights) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (study, id) DO UPDATE SET graph = excluded.graph, weights = excluded.weights",
                    &[&self.study, &id, &model.graph, &model.weights],
                )?;
            }
            tx.execute(
                "UPDATE netmorph_trials SET state = $3, ended = now(), record = $4 WHERE study = $1 AND id = $2",
                &[&self.study, &id, &state, &record_json],
            )?;
            if record.finished() {
                let best: Option<Value> =
                    tx.query_opt("SELECT value FROM netmorph_values WHERE study = $1 AND key = 'best'", &[&self.study])?.map(|r| r.get(0));
                let best: Option<BestModel> = best.and_then(|b| serde_json::from_value(b).ok());
                let better = best.is_none_or(|b| b.beaten_by(record));
                if better {
                    let value = json!({"id": record.id, "val_loss": record.val_loss, "val_accuracy": record.val_accuracy});
                    tx.execute(
                        "INSERT INTO netmorph_values (study, key, value) VALUES ($1, 'best', $2)
                         ON CONFLICT (study, key) DO UPDATE SET value = excluded.value",
                        &[&self.study, &value],
                    )?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
    }

    fn best(&self) -> Result<Option<BestModel>> {
        match self.get("best")? {
            Some(value) => serde_json::from_value(value).map(Some).map_err(|e| Error::Store(format!("{}: best: {e}", self.name()))),
            None => Ok(None),
        }
    }

    fn claim_final(&self) -> Result<bool> {
        let study = self.study as i32;
        let locked: bool =
            self.call(|client| Ok(client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&FINAL_LOCK_CLASS, &study])?.get(0)))?;
        Ok(locked && self.get(super::FINAL_OUTCOME)?.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_left_out_of_messages() {
        assert_eq!(redact("postgres://ann:secret@db.example/search"), "postgres://ann:***@db.example/search");
        assert_eq!(redact("postgres://ann@db.example/search"), "postgres://ann@db.example/search");
        assert_eq!(redact("host=/tmp dbname=x"), "host=/tmp dbname=x");
    }
}
