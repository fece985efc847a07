//! Kernel choices measured on this adapter: a table from a problem's class (an op's shape class,
//! named by the op) to the kernel that ran it fastest, kept on disk per adapter, driver and
//! netmorph version so that a second run starts warm, and a cap on the time a run spends
//! measuring. The device layer only keeps the table and the clock; the ops measure and choose.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether and how kernels are chosen by measurement.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum KernelTuning {
    /// The built-in rules alone: the same kernels on every run (repeatable results).
    #[default]
    Off,
    /// Measure the candidates of each new problem class, up to `cap` in all per run; choices are
    /// kept in `cache` (a directory), or only in memory when it is `None`.
    On { cap: Duration, cache: Option<PathBuf> },
}

impl KernelTuning {
    /// The default cap on one run's measuring: about one training step's worth of candidates per
    /// layer on lavapipe, a fraction of a second on a GPU.
    pub const DEFAULT_CAP: Duration = Duration::from_secs(30);

    /// On, capped at [`DEFAULT_CAP`](Self::DEFAULT_CAP), with the choices kept in
    /// [`default_cache_dir`].
    pub fn default_on() -> KernelTuning {
        KernelTuning::On { cap: Self::DEFAULT_CAP, cache: default_cache_dir() }
    }

    /// `off` (or `0`), `on` (or `1`: the default cap), or a cap in seconds; choices are kept in
    /// [`default_cache_dir`].
    pub fn parse(value: &str) -> std::result::Result<KernelTuning, String> {
        let on = |cap| KernelTuning::On { cap, cache: default_cache_dir() };
        match value {
            "off" | "0" => Ok(KernelTuning::Off),
            "on" | "1" | "" => Ok(on(Self::DEFAULT_CAP)),
            seconds => match seconds.parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(on(Duration::from_secs_f64(s))),
                _ => Err(format!("`{value}`: expected off, on, or a cap in seconds (more than 0, at most a day)")),
            },
        }
    }
}

/// `$NETMORPH_CACHE_DIR`, else `$XDG_CACHE_HOME/netmorph`, else `$HOME/.cache/netmorph`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("NETMORPH_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("netmorph")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("netmorph")))
}

/// What a run's tuning did, for its report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TuningSummary {
    /// Problem classes measured in this run.
    pub measured: usize,
    /// Choices found on disk when the device opened.
    pub loaded: usize,
    /// Time spent measuring in this run.
    pub spent: Duration,
    pub cap: Duration,
    /// Classes left to the rules because the cap was reached.
    pub over_cap: usize,
    /// The file the choices are kept in.
    pub file: Option<PathBuf>,
}

impl std::fmt::Display for TuningSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernel tuning: {} problem classes measured in {:.1} s (cap {:.0} s), {} choices loaded",
            self.measured,
            self.spent.as_secs_f64(),
            self.cap.as_secs_f64(),
            self.loaded
        )?;
        if self.over_cap > 0 {
            write!(f, ", {} left to the rules at the cap", self.over_cap)?;
        }
        if let Some(file) = &self.file {
            write!(f, " ({})", file.display())?;
        }
        Ok(())
    }
}

/// The table's file: the adapter and driver it was measured on, and the choices.
#[derive(Serialize, Deserialize, Default)]
struct TableFile {
    netmorph: String,
    adapter: String,
    driver: String,
    choices: BTreeMap<String, String>,
}

pub(super) struct TuningTable {
    choices: BTreeMap<String, String>,
    /// The classes that found the cap reached.
    left_to_rules: Vec<String>,
    summary: TuningSummary,
    identity: TableFile,
}

impl TuningTable {
    /// The table for `adapter`, with the choices its cache file holds (a file that does not parse
    /// is ignored with a warning: it is only a cache).
    pub fn open(info: &wgpu::AdapterInfo, cap: Duration, cache: Option<&Path>) -> TuningTable {
        let identity = TableFile {
            netmorph: env!("CARGO_PKG_VERSION").to_string(),
            adapter: format!("{} ({:?}, {:04x}:{:04x})", info.name, info.backend, info.vendor, info.device),
            driver: format!("{} {}", info.driver, info.driver_info),
            choices: BTreeMap::new(),
        };
        let file = cache.map(|dir| dir.join(format!("kernels-{:016x}.json", fnv1a(&identity))));
        let choices = file.as_deref().map(|f| read_choices(f, &identity)).unwrap_or_default();
        let summary = TuningSummary { loaded: choices.len(), cap, file, ..TuningSummary::default() };
        TuningTable { choices, left_to_rules: Vec::new(), summary, identity }
    }

    pub fn choice(&self, class: &str) -> Option<&str> {
        self.choices.get(class).map(String::as_str)
    }

    /// Time left for measuring `class`; a class that finds none is counted once as left to the
    /// rules.
    pub fn time_left(&mut self, class: &str) -> Duration {
        let left = self.summary.cap.saturating_sub(self.summary.spent);
        if left.is_zero() && !self.left_to_rules.iter().any(|c| c == class) {
            self.left_to_rules.push(class.to_string());
            self.summary.over_cap = self.left_to_rules.len();
        }
        left
    }

    /// Keeps a measured choice, and writes the table (merged with what other processes wrote).
    pub fn record(&mut self, class: &str, choice: &str, spent: Duration) -> Result<()> {
        self.choices.insert(class.to_string(), choice.to_string());
        self.summary.measured += 1;
        self.summary.spent += spent;
        let Some(file) = self.summary.file.clone() else { return Ok(()) };
        let mut merged = read_choices(&file, &self.identity);
        merged.extend(self.choices.iter().map(|(k, v)| (k.clone(), v.clone())));
        let table = TableFile { choices: merged, ..self.identity_clone() };
        let written = write_atomically(&file, &serde_json::to_vec_pretty(&table).expect("a table of strings serialises"));
        if written.is_err() {
            // Said once: the rest of the run keeps its choices in memory.
            self.summary.file = None;
        }
        written
    }

    pub fn summary(&self) -> TuningSummary {
        self.summary.clone()
    }

    fn identity_clone(&self) -> TableFile {
        TableFile {
            netmorph: self.identity.netmorph.clone(),
            adapter: self.identity.adapter.clone(),
            driver: self.identity.driver.clone(),
            choices: BTreeMap::new(),
        }
    }
}

/// The choices of `file` when it was written for this adapter, driver and version.
fn read_choices(file: &Path, identity: &TableFile) -> BTreeMap<String, String> {
    let Ok(bytes) = std::fs::read(file) else { return BTreeMap::new() };
    match serde_json::from_slice::<TableFile>(&bytes) {
        Ok(t) if t.netmorph == identity.netmorph && t.adapter == identity.adapter && t.driver == identity.driver => t.choices,
        Ok(_) => BTreeMap::new(),
        Err(e) => {
            eprintln!("warning: ignoring the kernel choices in {}: {e}", file.display());
            BTreeMap::new()
        }
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a table.
fn write_atomically(file: &Path, bytes: &[u8]) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let part = file.with_extension(format!("part-{}", std::process::id()));
    std::fs::write(&part, bytes).map_err(|e| Error::io(&part, e))?;
    std::fs::rename(&part, file).map_err(|e| Error::io(file, e))
}

/// A stable hash of the table's identity (file names must not change between builds, so not
/// std's randomly seeded hasher).
fn fnv1a(identity: &TableFile) -> u64 {
    let text = format!("{}\n{}\n{}", identity.netmorph, identity.adapter, identity.driver);
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(driver_info: &str) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: "test adapter".into(),
            vendor: 1,
            device: 2,
            device_type: wgpu::DeviceType::Cpu,
            driver: "test".into(),
            driver_info: driver_info.into(),
            backend: wgpu::Backend::Vulkan,
            ..crate::testing::device().adapter_info().clone()
        }
    }

    #[test]
    fn choices_survive_a_reopen_for_the_same_driver_only() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Duration::from_secs(5);
        let mut table = TuningTable::open(&adapter("1.0"), cap, Some(dir.path()));
        assert_eq!(table.summary().loaded, 0);
        table.record("gemm a", "x", Duration::from_millis(30)).unwrap();
        table.record("gemm b", "y", Duration::from_millis(20)).unwrap();
        let summary = table.summary();
        assert_eq!((summary.measured, summary.spent), (2, Duration::from_millis(50)));

        let again = TuningTable::open(&adapter("1.0"), cap, Some(dir.path()));
        assert_eq!((again.choice("gemm a"), again.choice("gemm b"), again.summary().loaded), (Some("x"), Some("y"), 2));
        let other_driver = TuningTable::open(&adapter("2.0"), cap, Some(dir.path()));
        assert_eq!(other_driver.choice("gemm a"), None, "another driver measures again");
    }

    #[test]
    fn the_cap_bounds_the_time_and_counts_what_it_left() {
        let mut table = TuningTable::open(&adapter("1.0"), Duration::from_millis(100), None);
        assert_eq!(table.time_left("a"), Duration::from_millis(100));
        table.record("a", "x", Duration::from_millis(150)).unwrap();
        for _ in 0..3 {
            assert!(table.time_left("b").is_zero());
        }
        assert!(table.time_left("c").is_zero());
        assert_eq!(table.summary().over_cap, 2, "classes, not calls");
    }

    #[test]
    fn a_damaged_file_is_measured_again() {
        let dir = tempfile::tempdir().unwrap();
        let info = adapter("1.0");
        let mut table = TuningTable::open(&info, Duration::from_secs(1), Some(dir.path()));
        table.record("a", "x", Duration::ZERO).unwrap();
        let file = table.summary().file.unwrap();
        std::fs::write(&file, b"{ not json").unwrap();
        let reopened = TuningTable::open(&info, Duration::from_secs(1), Some(dir.path()));
        assert_eq!(reopened.choice("a"), None);
    }
}
