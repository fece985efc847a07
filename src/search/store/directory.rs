//! The search directory: the store of a search in one process, where nothing a search learns is
//! lost, even to SIGKILL.
//!
//! ```text
//! search-dir/
//!   lock                  locked (flock) by the process that runs the search; holds its process id
//!   settings.json         the search's settings, checked on --resume
//!   history.jsonl         one record per finished or failed model, appended, flushed and fsynced as each ends
//!   models/model_N.*      each model's architecture (.json) and weights (.safetensors), written before its record
//!   best.json             which model is best so far
//!   <key>.json            what else the search keeps (the generator's width, the ensemble)
//! ```
//!
//! The lock is an OS lock on an open file, held from [`SearchDir::open`] until the store is
//! dropped: the OS releases it when the process ends, however it ends, so a crash never leaves a
//! stale lock. A second process gets an error naming the directory and the holder, and changes
//! nothing.
//!
//! Every file other than the history is written to a temporary file with a name of its own (the
//! process id and a counter), fsynced and renamed over the old one, so a crash leaves either the
//! old or the new file, never half of one. The history is append-only; a crash in the middle of a
//! line leaves a partial last line that `open` drops (and rewrites the file without it) before
//! anything is appended again.

use super::{BestModel, Claim, ClaimOutcome, Deadline, ModelBlob, ModelRecord, Store, StudyState, TrialSpec};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const HISTORY: &str = "history.jsonl";
const BEST: &str = "best.json";
const LOCK: &str = "lock";
const TMP_SUFFIX: &str = ".tmp";
/// What a new search in a directory without a history removes: an earlier search's leftovers.
const STARTED_FRESH: [&str; 5] = [HISTORY, BEST, "settings.json", "generator_width.json", "ensemble.json"];

/// An open search directory, locked by this process.
pub struct SearchDir {
    dir: PathBuf,
    worker: String,
    /// Holds the OS lock while open.
    _lock: File,
    /// The next trial's id and the trials stored or claimed (for `max_models`).
    trials: Mutex<(usize, usize)>,
}

impl SearchDir {
    /// Opens and locks `dir` for a search by `worker` ([`super::worker_name`]). With `resume`, an
    /// existing search there continues; without it, a directory that already holds a history is
    /// refused, so no search is overwritten by mistake. A directory that another process holds is
    /// refused either way, before anything in it changes.
    pub fn open(dir: &Path, resume: bool, worker: &str) -> Result<SearchDir> {
        fs::create_dir_all(dir.join("models")).map_err(|e| Error::io(dir, e))?;
        let lock = lock_directory(dir)?;
        let mut store = SearchDir { dir: dir.to_path_buf(), worker: worker.to_string(), _lock: lock, trials: Mutex::new((0, 0)) };
        store.remove_temporaries()?;
        let history = store.dir.join(HISTORY);
        if history.exists() && !resume {
            let text = fs::read_to_string(&history).map_err(|e| Error::io(&history, e))?;
            if !text.trim().is_empty() {
                return Err(Error::Invalid(format!(
                    "the search directory {} already holds a search; pass --resume to continue it, or choose another --search-dir",
                    dir.display()
                )));
            }
        }
        if !resume {
            for name in STARTED_FRESH {
                let path = store.dir.join(name);
                if path.exists() {
                    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        let records: Vec<ModelRecord<Value>> = store.load_history()?;
        let next = records.iter().map(|r| r.id + 1).max().unwrap_or(0);
        store.trials = Mutex::new((next, records.len()));
        Ok(store)
    }

    /// The history of the search in `dir`, read without its lock (for `--status` while a search
    /// runs there): appends are whole lines, so a torn last line is only left out.
    pub fn read_state(dir: &Path) -> Result<StudyState> {
        let path = dir.join(HISTORY);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::io(&path, std::io::Error::new(e.kind(), "no search here (no history)")))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut records = Vec::new();
        for (i, line) in text.split_inclusive('\n').enumerate().filter(|(_, l)| l.ends_with('\n')) {
            records.push(serde_json::from_str(line.trim_end()).map_err(|e| Error::format(&path, format!("line {}: {e}", i + 1)))?);
        }
        Ok(StudyState { records, running: Vec::new() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where model `id`'s files go: `models/model_{id}.{extension}`.
    pub fn model_path(&self, id: usize, extension: &str) -> PathBuf {
        self.dir.join("models").join(format!("model_{id}.{extension}"))
    }

    /// The history's records. A partial last line (a crash while appending) is dropped and the file
    /// rewritten without it, so later appends start on a fresh line.
    pub fn load_history<A: DeserializeOwned>(&self) -> Result<Vec<ModelRecord<A>>> {
        let path = self.dir.join(HISTORY);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut records = Vec::new();
        let mut kept = String::new();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let complete = line.ends_with('\n');
            match (complete, serde_json::from_str::<ModelRecord<A>>(line.trim_end())) {
                (true, Ok(record)) => {
                    records.push(record);
                    kept.push_str(line);
                }
                (true, Err(e)) => return Err(Error::format(&path, format!("line {}: {e}", i + 1))),
                // Only the last line can lack its newline: torn by a crash while appending.
                (false, _) => {}
            }
        }
        if kept.len() != text.len() {
            write_atomic(&path, kept.as_bytes())?;
        }
        Ok(records)
    }

    /// Appends one record and makes it durable before returning.
    fn append<A: Serialize>(&self, record: &ModelRecord<A>) -> Result<()> {
        let path = self.dir.join(HISTORY);
        let mut line = serde_json::to_string(record).map_err(|e| Error::format(&path, e.to_string()))?;
        line.push('\n');
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        file.write_all(line.as_bytes()).map_err(|e| Error::io(&path, e))?;
        file.sync_data().map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir);
        Ok(())
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let path = self.dir.join(name);
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::format(&path, e.to_string()))?;
        write_atomic(&path, text.as_bytes())
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let path = self.dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| Error::format(&path, e.to_string()))
    }

    /// Temporary files are only ever half-written leftovers of a crash: this process holds the
    /// lock, so no other writes any.
    fn remove_temporaries(&self) -> Result<()> {
        for dir in [self.dir.clone(), self.dir.join("models")] {
            let entries = fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        Ok(())
    }
}

/// `name` as a file of the directory itself: no separators, nothing hidden.
fn file_name(name: &str) -> Result<&str> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
        return Err(Error::Invalid(format!("`{name}` is not a file name of a search directory")));
    }
    Ok(name)
}

/// Takes the directory's lock (or names its holder) and writes this process's id into it.
fn lock_directory(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
            return Err(Error::Invalid(format!(
                "the search directory {} is in use by {holder}: one process at a time runs a search directory (wait for it to end, \
                 or give another --search-dir; many workers share a search through --storage postgres://...)",
                dir.display()
            )));
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    file.set_len(0).and_then(|_| file.rewind()).map_err(|e| Error::io(&path, e))?;
    file.write_all(std::process::id().to_string().as_bytes()).and_then(|_| file.sync_data()).map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

impl Store for SearchDir {
    fn name(&self) -> String {
        format!("the search directory {}", self.dir.display())
    }

    fn worker(&self) -> &str {
        &self.worker
    }

    fn worker_index(&self) -> usize {
        0
    }

    fn deadline(&self, limit: Duration) -> Result<Deadline> {
        Ok(Deadline { total: limit, left: limit })
    }

    fn put_if_absent(&self, key: &str, value: &Value) -> Result<Value> {
        let name = format!("{key}.json");
        match self.read_json::<Value>(&name)? {
            Some(stored) => Ok(stored),
            None => {
                self.write_json(&name, value)?;
                Ok(value.clone())
            }
        }
    }

    fn put(&self, key: &str, value: &Value) -> Result<()> {
        self.write_json(&format!("{key}.json"), value)
    }

    fn get(&self, key: &str) -> Result<Option<Value>> {
        self.read_json(&format!("{key}.json"))
    }

    fn put_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.dir.join(file_name(name)?), bytes)
    }

    fn get_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(file_name(name)?);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn state(&self) -> Result<StudyState> {
        Ok(StudyState { records: self.load_history()?, running: Vec::new() })
    }

    fn claim_new(&self, spec: &TrialSpec, max_models: Option<usize>) -> Result<ClaimOutcome> {
        let mut trials = self.trials.lock().expect("trial counter");
        if max_models.is_some_and(|m| trials.1 >= m) {
            return Ok(ClaimOutcome::Full);
        }
        let id = trials.0;
        *trials = (id + 1, trials.1 + 1);
        Ok(ClaimOutcome::Claimed(Claim { id, spec: spec.clone(), attempt: 1 }))
    }

    /// One process: a trial it did not finish died with it, and nothing of it was stored.
    fn claim_abandoned(&self) -> Result<Option<Claim>> {
        Ok(None)
    }

    fn heartbeat(&self, _id: usize) -> Result<bool> {
        Ok(true)
    }

    fn lease(&self) -> Option<Duration> {
        None
    }

    fn load_model(&self, id: usize) -> Result<ModelBlob> {
        let (json, weights) = (self.model_path(id, "json"), self.model_path(id, "safetensors"));
        let graph = fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
        let weights = fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
        Ok(ModelBlob { graph, weights })
    }

    fn finish(&self, record: &ModelRecord<Value>, model: Option<&ModelBlob>) -> Result<bool> {
        // The model's files first: a record in the history always has its files.
        if let Some(model) = model {
            write_atomic(&self.model_path(record.id, "safetensors"), &model.weights)?;
            write_atomic(&self.model_path(record.id, "json"), model.graph.as_bytes())?;
        }
        self.append(record)?;
        if record.finished() && self.best()?.is_none_or(|b| b.beaten_by(record)) {
            let best = BestModel {
                id: record.id,
                val_loss: record.val_loss.expect("finished"),
                val_accuracy: record.val_accuracy.expect("finished"),
            };
            self.write_json(BEST, &best)?;
        }
        Ok(true)
    }

    fn best(&self) -> Result<Option<BestModel>> {
        self.read_json(BEST)
    }

    fn claim_final(&self) -> Result<bool> {
        Ok(true)
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a temporary
/// file beside it with a name no other writer uses, fsynced, renamed over it, then the directory
/// fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.{}{TMP_SUFFIX}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Makes renames and new entries durable (a no-op where directories cannot be opened).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::store::Status;
    use serde_json::json;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netmorph-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn record(id: usize, acc: f64) -> ModelRecord<Value> {
        ModelRecord {
            id,
            father: id.checked_sub(1),
            operations: vec![format!("op {id}")],
            architecture: json!([id, id, id]),
            parameters: 100 * id as u64,
            status: Status::Finished,
            epochs: 2,
            seconds: 1.5,
            val_loss: Some(1.0 - acc),
            val_accuracy: Some(acc),
            stopped: None,
            worker: String::new(),
            curve: vec![],
            started_at: None,
            finished_at: None,
        }
    }

    fn open(dir: &Path, resume: bool) -> Result<SearchDir> {
        SearchDir::open(dir, resume, "test")
    }

    #[test]
    fn history_round_trips_and_survives_a_torn_last_line() {
        let dir = temp_dir("torn");
        let store = open(&dir, false).unwrap();
        store.finish(&record(0, 0.5), None).unwrap();
        store.finish(&record(1, 0.7), None).unwrap();
        // A crash in the middle of the third record.
        let mut f = OpenOptions::new().append(true).open(dir.join(HISTORY)).unwrap();
        f.write_all(b"{\"id\":2,\"father\":1,\"oper").unwrap();
        drop(f);
        drop(store);

        let store = open(&dir, true).unwrap();
        let records: Vec<ModelRecord<Value>> = store.load_history().unwrap();
        assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(records[1].architecture, json!([1, 1, 1]));
        store.finish(&record(2, 0.6), None).unwrap();
        let records = store.state().unwrap().records;
        assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(store.best().unwrap().unwrap().id, 1);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_search_is_not_overwritten_without_resume() {
        let dir = temp_dir("overwrite");
        let store = open(&dir, false).unwrap();
        store.finish(&record(0, 0.5), None).unwrap();
        drop(store);
        let err = open(&dir, false).err().expect("refused");
        assert!(err.to_string().contains("--resume"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_opener_is_refused_with_the_holder_and_changes_nothing() {
        let dir = temp_dir("locked");
        let store = open(&dir, false).unwrap();
        store.finish(&record(0, 0.5), None).unwrap();
        let before = fs::read(dir.join(HISTORY)).unwrap();
        for resume in [false, true] {
            let err = open(&dir, resume).err().expect("the directory is locked");
            let text = err.to_string();
            assert!(text.contains(&format!("process {}", std::process::id())) && text.contains(&dir.display().to_string()), "{text}");
        }
        assert_eq!(fs::read(dir.join(HISTORY)).unwrap(), before);
        drop(store);
        let store = open(&dir, true).expect("the lock goes with the store");
        assert_eq!(store.state().unwrap().records.len(), 1);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn claims_number_trials_after_the_history_and_stop_at_max_models() {
        let dir = temp_dir("claims");
        let store = open(&dir, false).unwrap();
        store.finish(&record(0, 0.5), None).unwrap();
        store.finish(&record(1, 0.6), None).unwrap();
        drop(store);
        let store = open(&dir, true).unwrap();
        let spec =
            TrialSpec { father: None, ops: json!([]), operations: vec![], architecture: json!(1), parameters: 1, descriptor: "a".into() };
        assert!(matches!(store.claim_new(&spec, Some(4)).unwrap(), ClaimOutcome::Claimed(Claim { id: 2, .. })));
        assert!(matches!(store.claim_new(&spec, Some(4)).unwrap(), ClaimOutcome::Claimed(Claim { id: 3, .. })));
        assert_eq!(store.claim_new(&spec, Some(4)).unwrap(), ClaimOutcome::Full);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_writes_leave_no_temporaries_and_leftovers_are_removed() {
        let dir = temp_dir("atomic");
        let store = open(&dir, false).unwrap();
        let blob = ModelBlob { graph: "{}".into(), weights: vec![1, 2, 3] };
        store.finish(&record(3, 0.9), Some(&blob)).unwrap();
        store.finish(&record(4, 0.95), Some(&blob)).unwrap();
        assert_eq!(store.best().unwrap().unwrap().id, 4);
        assert_eq!(store.load_model(3).unwrap(), blob);
        store.put("generator_width", &json!(24)).unwrap();
        assert_eq!(store.put_if_absent("generator_width", &json!(32)).unwrap(), json!(24));
        let leftover = dir.join("models").join("model_7.safetensors.99.0.tmp");
        fs::write(&leftover, b"half").unwrap();
        drop(store);
        let _store = open(&dir, true).unwrap();
        assert!(!leftover.exists());
        let names: Vec<String> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.ends_with(TMP_SUFFIX)), "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn better_than_prefers_accuracy_then_loss() {
        let a = record(0, 0.9);
        let mut b = record(1, 0.9);
        b.val_loss = Some(0.05);
        assert!(b.better_than(&a));
        assert!(!a.better_than(&b));
        assert!(record(2, 0.95).better_than(&b));
    }
}
