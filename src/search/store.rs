//! The search directory: nothing a search learns is lost, even to SIGKILL.
//!
//! ```text
//! search-dir/
//!   search.json           settings and data shape, checked on --resume
//!   history.jsonl         one record per finished or failed model, appended, flushed and fsynced as each ends
//!   models/model_N.*      each model's architecture and weights (written before its record)
//!   best.json             which model is best so far
//! ```
//!
//! Every file other than the history is written to a temporary file, fsynced and renamed over the
//! old one, so a crash leaves either the old or the new file, never half of one. The history is
//! append-only; a crash in the middle of a line leaves a partial last line that `open` drops (and
//! rewrites the file without it) before anything is appended again.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const HISTORY: &str = "history.jsonl";
const BEST: &str = "best.json";
const SETTINGS: &str = "search.json";
const TMP_SUFFIX: &str = ".tmp";

/// How a model's training ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Status {
    /// Trained; its weights are stored.
    Finished,
    /// Training failed and the search went on: out of device memory (`resource`), a loss that
    /// became NaN, or another error of this one model.
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
}

impl<A> ModelRecord<A> {
    pub fn finished(&self) -> bool {
        self.status == Status::Finished && self.val_accuracy.is_some()
    }

    /// True when `self` is a better model than `other`: higher validation accuracy, then lower
    /// validation loss, then the earlier model.
    pub fn better_than(&self, other: &ModelRecord<A>) -> bool {
        let key = |r: &ModelRecord<A>| (r.val_accuracy.unwrap_or(f64::NEG_INFINITY), -r.val_loss.unwrap_or(f64::INFINITY));
        let (a, b) = (key(self), key(other));
        a.0 > b.0 || (a.0 == b.0 && (a.1 > b.1 || (a.1 == b.1 && self.id < other.id)))
    }
}

/// `best.json`: which model is best so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestModel {
    pub id: usize,
    pub val_loss: f64,
    pub val_accuracy: f64,
}

/// An open search directory.
pub struct SearchStore {
    dir: PathBuf,
}

impl SearchStore {
    /// Opens `dir` for a search. With `resume`, an existing search there continues; without it, a
    /// directory that already holds a history is refused, so no search is overwritten by mistake.
    pub fn open(dir: &Path, resume: bool) -> Result<SearchStore> {
        fs::create_dir_all(dir.join("models")).map_err(|e| Error::io(dir, e))?;
        let store = SearchStore { dir: dir.to_path_buf() };
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
            for file in [HISTORY, BEST, SETTINGS] {
                let path = store.dir.join(file);
                if path.exists() {
                    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        Ok(store)
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
    pub fn append<A: Serialize>(&self, record: &ModelRecord<A>) -> Result<()> {
        let path = self.dir.join(HISTORY);
        let mut line = serde_json::to_string(record).map_err(|e| Error::format(&path, e.to_string()))?;
        line.push('\n');
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        file.write_all(line.as_bytes()).map_err(|e| Error::io(&path, e))?;
        file.sync_data().map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir);
        Ok(())
    }

    pub fn write_best(&self, best: &BestModel) -> Result<()> {
        self.write_json(BEST, best)
    }

    pub fn read_best(&self) -> Result<Option<BestModel>> {
        self.read_json(BEST)
    }

    /// Stores the search's settings, or, on resume, checks them against the stored ones with `same`.
    pub fn settings<T: Serialize + DeserializeOwned>(&self, settings: &T, same: impl Fn(&T, &T) -> Result<()>) -> Result<()> {
        match self.read_json::<T>(SETTINGS)? {
            Some(stored) => same(&stored, settings),
            None => self.write_json(SETTINGS, settings),
        }
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let path = self.dir.join(name);
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::format(&path, e.to_string()))?;
        write_atomic(&path, text.as_bytes())
    }

    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let path = self.dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| Error::format(&path, e.to_string()))
    }

    /// Temporary files are only ever half-written leftovers of a crash.
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

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a temporary
/// file beside it, fsynced, renamed over it, then the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_path(path);
    {
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// `path` with the temporary suffix (`model_3.safetensors.tmp`): write there, then
/// [`commit_temporary`]. For writers that want a path rather than bytes.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// Fsyncs a file written at `temporary_path(path)` and renames it to `path`.
pub fn commit_temporary(path: &Path) -> Result<()> {
    let tmp = temporary_path(path);
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
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

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netmorph-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn record(id: usize, acc: f64) -> ModelRecord<Vec<u32>> {
        ModelRecord {
            id,
            father: id.checked_sub(1),
            operations: vec![format!("op {id}")],
            architecture: vec![id as u32; 3],
            parameters: 100 * id as u64,
            status: Status::Finished,
            epochs: 2,
            seconds: 1.5,
            val_loss: Some(1.0 - acc),
            val_accuracy: Some(acc),
            stopped: None,
        }
    }

    #[test]
    fn history_round_trips_and_survives_a_torn_last_line() {
        let dir = temp_dir("torn");
        let store = SearchStore::open(&dir, false).unwrap();
        store.append(&record(0, 0.5)).unwrap();
        store.append(&record(1, 0.7)).unwrap();
        // A crash in the middle of the third record.
        let mut f = OpenOptions::new().append(true).open(dir.join(HISTORY)).unwrap();
        f.write_all(b"{\"id\":2,\"father\":1,\"oper").unwrap();
        drop(f);

        let store = SearchStore::open(&dir, true).unwrap();
        let records: Vec<ModelRecord<Vec<u32>>> = store.load_history().unwrap();
        assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(records[1].architecture, vec![1, 1, 1]);
        store.append(&record(2, 0.6)).unwrap();
        let records: Vec<ModelRecord<Vec<u32>>> = store.load_history().unwrap();
        assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1, 2]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_search_is_not_overwritten_without_resume() {
        let dir = temp_dir("overwrite");
        let store = SearchStore::open(&dir, false).unwrap();
        store.append(&record(0, 0.5)).unwrap();
        let err = SearchStore::open(&dir, false).err().expect("refused");
        assert!(err.to_string().contains("--resume"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_writes_leave_no_temporaries_and_leftovers_are_removed() {
        let dir = temp_dir("atomic");
        let store = SearchStore::open(&dir, false).unwrap();
        store.write_best(&BestModel { id: 3, val_loss: 0.1, val_accuracy: 0.9 }).unwrap();
        store.write_best(&BestModel { id: 4, val_loss: 0.05, val_accuracy: 0.95 }).unwrap();
        assert_eq!(store.read_best().unwrap().unwrap().id, 4);
        let leftover = temporary_path(&store.model_path(7, "safetensors"));
        fs::write(&leftover, b"half").unwrap();
        let _ = SearchStore::open(&dir, true).unwrap();
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
