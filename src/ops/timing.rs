//! Timing candidate kernels on the device, for the tuners of the ops (`matmul/tuning.rs`,
//! `conv2d/tuning.rs`): which of several ways to run the same work is fastest here.

use crate::device::Device;
use crate::error::Result;
use std::time::{Duration, Instant};

/// How much faster than the rules' choice another candidate must run to replace it: timings on a
/// busy machine move by a few percent, and a choice that flips with the noise is no choice.
pub(crate) const MARGIN: f64 = 0.95;
/// A candidate whose first run takes this much longer than the best so far is dropped unrepeated.
const HOPELESS: f64 = 1.5;
/// Each candidate's timed runs add up to about this much (at least two runs, at most 50).
const TIMED: Duration = Duration::from_millis(4);
/// Rounds of the confirming comparison between the winner and the rules' choice.
const CONFIRM_ROUNDS: usize = 3;
/// Work whose rules' candidate runs longer than this is timed on a slice of itself.
pub(crate) const SLICE_ABOVE: Duration = Duration::from_millis(8);
/// The time the rules' candidate takes on a slice.
pub(crate) const SLICE_TARGET: Duration = Duration::from_millis(4);

/// Seconds per run of `candidate`: `runs` runs between two syncs.
pub(crate) fn seconds_per_run<C: Copy>(device: &Device, candidate: C, runs: usize, run: &impl Fn(C) -> Result<()>) -> Result<f64> {
    device.sync()?;
    let start = Instant::now();
    for _ in 0..runs {
        run(candidate)?;
    }
    device.sync()?;
    Ok(start.elapsed().as_secs_f64() / runs as f64)
}

/// The fastest candidate measured before `deadline` (`None` if none ran). Each is compiled and run
/// once untimed, run once timed, and, unless hopeless, timed again over about [`TIMED`]. A
/// candidate that fails (beyond the adapter's limits, say) is skipped, not an error of the work.
pub(crate) fn fastest<C: Copy>(device: &Device, candidates: &[C], run: impl Fn(C) -> Result<()>, deadline: Instant) -> Result<Option<C>> {
    let mut best: Option<(C, f64)> = None;
    for &candidate in candidates {
        if Instant::now() >= deadline {
            break;
        }
        if run(candidate).is_err() {
            continue;
        }
        let first = seconds_per_run(device, candidate, 1, &run)?;
        if best.is_some_and(|(_, b)| first > HOPELESS * b) {
            continue;
        }
        let runs = (TIMED.as_secs_f64() / first.max(1e-6)).clamp(2.0, 50.0) as usize;
        let seconds = seconds_per_run(device, candidate, runs, &run)?.min(first);
        if best.is_none_or(|(_, b)| seconds < b) {
            best = Some((candidate, seconds));
        }
    }
    Ok(best.map(|(c, _)| c))
}

/// Whether `winner` beats `rule` by [`MARGIN`], each at its best of a few alternating rounds.
pub(crate) fn confirmed_faster<C: Copy>(device: &Device, winner: C, rule: C, run: impl Fn(C) -> Result<()>) -> Result<bool> {
    let (mut w, mut r) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..CONFIRM_ROUNDS {
        r = r.min(seconds_per_run(device, rule, 2, &run)?);
        w = w.min(seconds_per_run(device, winner, 2, &run)?);
    }
    Ok(w < MARGIN * r)
}

/// The share of the work to time so that the rules' candidate, which took `seconds` on all of
/// it, takes about [`SLICE_TARGET`]: 1 (all of it) when it took at most [`SLICE_ABOVE`].
pub(crate) fn slice_share(seconds: f64) -> f64 {
    if seconds <= SLICE_ABOVE.as_secs_f64() {
        1.0
    } else {
        SLICE_TARGET.as_secs_f64() / seconds
    }
}
