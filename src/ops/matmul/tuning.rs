//! GEMM kernels chosen by measurement on the user's adapter. The first product of each class (its
//! layout, its sides rounded up to powers of two, whether C takes vec4 stores) times the kernels
//! that can run it, the rules' choice among them, and keeps the fastest in the device's table
//! (on disk, so that the next run starts warm). The rules' choice stays unless another kernel beats
//! it by [`MARGIN`](crate::ops::timing::MARGIN) in a confirming round, so that on the adapter the
//! rules were tuned on (lavapipe) a choice is theirs or one measured faster. Measuring runs on the
//! product's own operands with a scratch C, so it needs no more device memory than the product
//! itself and one more C.

use super::{gemm_variant, vec4_c, Gemm, Tiling, Variant, REDUCE_BATCH, SMALL_SIDE};
use crate::device::{DType, Device, GpuBuffer};
use crate::error::Result;
use crate::ops::timing::{confirmed_faster, fastest, seconds_per_run, slice_share};
use std::time::Instant;

/// Every variant, for parsing a stored choice.
const EVERY: [Variant; 9] = [
    Variant::Scalar,
    Variant::AkBn,
    Variant::AmBn,
    Variant::AkBk,
    Variant::AmBk,
    Variant::AkBnSubgroup,
    Variant::AmBnSubgroup,
    Variant::AkBkSubgroup,
    Variant::Workgroup,
];

/// The kernel for `g`: the rules' `(variant, tiling)` when tuning is off, else the class's
/// measured choice (measured now if the class is new and the run's cap allows).
#[allow(clippy::too_many_arguments)]
pub(super) fn choose(
    device: &Device,
    g: &Gemm,
    a: &GpuBuffer,
    b: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    c: &GpuBuffer,
    rule: (Variant, Tiling),
    vec4: bool,
) -> Result<(Variant, Tiling)> {
    if !device.tunes_kernels() || Tiling::forced(device).is_some() {
        return Ok(rule);
    }
    let class = class_of(g, rule.0, vec4);
    if let Some(choice) = device.tuned_choice(&class) {
        // A stored subgroup kernel is not taken where the knobs turn subgroups off.
        let usable = |&(v, t): &(Variant, Tiling)| v.fits(g, t) && (!v.is_subgroup() || super::subgroups_allowed(device));
        return Ok(parse_choice(&choice).map(|(v, t)| fitted(g, v, t)).filter(usable).unwrap_or(rule));
    }
    let left = device.tuning_time_left(&class);
    if left.is_zero() {
        return Ok(rule);
    }
    let Ok(scratch) = device.alloc(c.len(), DType::F32, "GEMM tuning scratch") else { return Ok(rule) };
    device.zero(&scratch);
    let start = Instant::now();
    let deadline = start + left;
    // The rules' kernel once on the whole product (its pipeline compiled first), to size the
    // product the candidates are timed on.
    gemm_variant(device, g, a, b, bias, &scratch, rule.1, rule.0)?;
    let whole = seconds_per_run(device, rule, 1, &|(v, t)| gemm_variant(device, g, a, b, bias, &scratch, t, v))?;
    let timed = sliced(g, whole);
    let run = |(v, t): (Variant, Tiling)| gemm_variant(device, &timed, a, b, bias, &scratch, t, v);
    let candidates = candidates(device, g, rule, vec4);
    let winner = fastest(device, &candidates, run, deadline)?;
    let chosen = match winner {
        Some(w) if w != rule && confirmed_faster(device, w, rule, run)? => w,
        _ => rule,
    };
    if device.knobs().log_gemm {
        eprintln!(
            "tuned {class}: {} candidates on m{} n{} k{} batch{} in {:.2} s: {} (rules: {})",
            candidates.len(),
            timed.m,
            timed.n,
            timed.k,
            timed.batch,
            start.elapsed().as_secs_f64(),
            format_choice(chosen),
            format_choice(rule)
        );
    }
    device.record_tuned_choice(&class, &format_choice(chosen), start.elapsed());
    Ok(chosen)
}

/// The product the candidates are timed on: `g` itself when the rules' kernel ran it quickly, else
/// fewer of its matrices and then its longest side cut ([`slice_share`]). A slice keeps the
/// layout, the strides and the other sides, so its choice is the product's, and the measuring
/// stays short on a slow adapter. A GPU runs whole products (they take microseconds).
fn sliced(g: &Gemm, seconds: f64) -> Gemm {
    let mut keep = slice_share(seconds);
    if keep >= 1.0 {
        return *g;
    }
    let mut s = *g;
    // Fewer matrices first (a batched product's matrices are alike), then a shorter side.
    if g.batch > 1 {
        s.batch = ((g.batch as f64 * keep).ceil() as usize).clamp(1, g.batch);
        keep *= g.batch as f64 / s.batch as f64;
        if keep >= 1.0 {
            return s;
        }
    }
    let cut = |side: usize| ((side as f64 * keep) as usize).next_multiple_of(SLICE_UNIT).min(side);
    if g.m >= g.n && g.m >= g.k {
        s.m = cut(g.m);
    } else if g.n >= g.k {
        s.n = cut(g.n);
    } else {
        s.k = cut(g.k);
    }
    s
}

/// A slice's cut side is a multiple of this: whole tiles of every candidate, and vec4s along k.
const SLICE_UNIT: usize = 128;

/// The class a product's choice is kept under.
pub(super) fn class_of(g: &Gemm, rule: Variant, vec4: bool) -> String {
    // Sides up to SMALL_SIDE get tiles fitted to them, so they are classes of their own.
    let side = |x: usize| if x <= SMALL_SIDE as usize { x } else { x.next_power_of_two() };
    format!(
        "gemm {:?}{} m{} n{} k{} batch{}{}",
        rule.layout(),
        if vec4 { "" } else { " unaligned" },
        side(g.m),
        side(g.n),
        side(g.k),
        side(g.batch),
        if g.flags & REDUCE_BATCH != 0 { " reduced" } else { "" },
    ) + if vec4_c(g) { " c4" } else { "" }
}

/// The kernels that can run `g`, the rules' choice first: every variant in each of its candidate
/// tilings ([`super::candidates`]), fitted to the shape as the rules fit theirs; on operands
/// without the vec4 padding, only the kernels that load scalars; the subgroup kernels only where
/// the rules may use them.
fn candidates(device: &Device, g: &Gemm, rule: (Variant, Tiling), vec4: bool) -> Vec<(Variant, Tiling)> {
    let mut out = vec![rule];
    let subgroups = super::subgroups_allowed(device);
    for (v, t) in super::candidates(device, g) {
        let allowed = if v.is_subgroup() { vec4 && subgroups } else { vec4 || matches!(v, Variant::Scalar | Variant::Workgroup) };
        let (v, t) = fitted(g, v, t);
        if allowed && v.fits(g, t) && v.check_limits(device, t).is_ok() && !out.contains(&(v, t)) {
            out.push((v, t));
        }
    }
    out
}

/// `t` fitted to `g` as [`super::plan`] fits its tilings, where the fitted tiling still fits.
fn fitted(g: &Gemm, v: Variant, t: Tiling) -> (Variant, Tiling) {
    let f = t.fitted(v, g);
    (v, if v.fits(g, f) { f } else { t })
}

fn format_choice((v, t): (Variant, Tiling)) -> String {
    format!("{v:?} {}x{}/{}x{}/{}", t.tm, t.tn, t.wg_x, t.wg_y, t.bk)
}

fn parse_choice(s: &str) -> Option<(Variant, Tiling)> {
    let (name, tiling) = s.split_once(' ')?;
    let v = EVERY.into_iter().find(|v| format!("{v:?}") == name)?;
    Some((v, Tiling::parse(tiling)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceOptions, KernelTuning};
    use crate::ops::matmul::{gemm, plan, Strides};
    use crate::testing::{assert_close, rand_vec, rng, tensor};
    use crate::Tensor;
    use std::time::Duration;

    fn tuning_device(cache: Option<std::path::PathBuf>) -> Device {
        let tuning = KernelTuning::On { cap: Duration::from_secs(60), cache };
        Device::with_options(&DeviceOptions { kernel_tuning: tuning, ..DeviceOptions::default() }).unwrap()
    }

    fn product(m: usize, n: usize, k: usize) -> Gemm {
        Gemm {
            m,
            n,
            k,
            batch: 1,
            a: Strides::matrix(m, k, false),
            b: Strides::matrix(k, n, false),
            c: Strides::matrix(m, n, false),
            flags: 0,
        }
    }

    #[test]
    fn a_stored_choice_reads_back() {
        for choice in [(Variant::AkBn, Tiling::new(8, 16, 8, 8)), (Variant::AkBkSubgroup, Tiling::SUBGROUP), (Variant::Scalar, Tiling::GPU)]
        {
            assert_eq!(parse_choice(&format_choice(choice)), Some(choice));
        }
        assert_eq!(parse_choice("Nonsense 1x1/1x1"), None);
        assert_eq!(parse_choice("AkBn 8x16"), None);
    }

    /// Tuned products compute what the reference computes; the choice is measured once per class
    /// and kept on disk, where a second device on the same adapter finds it without measuring.
    #[test]
    fn tuned_products_are_right_and_their_choices_kept() {
        let dir = tempfile::tempdir().unwrap();
        let device = tuning_device(Some(dir.path().to_path_buf()));
        let mut r = rng(41);
        let shapes = [(64, 48, 40), (70, 33, 17), (128, 128, 96), (5, 37, 64)];
        for &(m, n, k) in &shapes {
            let g = product(m, n, k);
            let (a, b) = (rand_vec(&mut r, m * k), rand_vec(&mut r, k * n));
            let c = Tensor::zeros(&device, &[m, n]).unwrap();
            gemm(&device, &g, tensor(&device, &a, &[m, k]).buffer(), tensor(&device, &b, &[k, n]).buffer(), None, c.buffer()).unwrap();
            let mut want = vec![0.0; m * n];
            crate::ops::matmul::cpu::gemm(&g, &a, &b, None, &mut want);
            // The GEMM tests' tolerance: f32 rounding grows with the square root of the terms.
            assert_close(&c.to_vec().unwrap(), &want, 1e-4 * (k as f64 / 64.0).sqrt().max(1.0), &format!("tuned {m}x{n}x{k}"));
        }
        let summary = device.tuning_summary().unwrap();
        assert_eq!(summary.measured, shapes.len(), "{summary}");
        assert!(summary.spent < summary.cap);
        for &(m, n, k) in &shapes {
            let g = product(m, n, k);
            let class = class_of(&g, plan(&device, &g).0, true);
            let choice = device.tuned_choice(&class).unwrap_or_else(|| panic!("no choice kept for {class}"));
            let (v, t) = parse_choice(&choice).unwrap();
            assert!(fitted(&g, v, t).0.fits(&g, fitted(&g, v, t).1), "{class}: {choice}");
        }
        let again = tuning_device(Some(dir.path().to_path_buf()));
        assert_eq!(again.tuning_summary().unwrap().loaded, shapes.len());
        let g = product(64, 48, 40);
        assert!(again.tuned_choice(&class_of(&g, plan(&again, &g).0, true)).is_some());
    }

    /// With no time left, the rules choose, and nothing is measured.
    #[test]
    fn at_the_cap_the_rules_choose() {
        let tuning = KernelTuning::On { cap: Duration::from_nanos(1), cache: None };
        let device = Device::with_options(&DeviceOptions { kernel_tuning: tuning, ..DeviceOptions::default() }).unwrap();
        let (m, n, k) = (40, 40, 40);
        let g = product(m, n, k);
        let (a, b, c) =
            (Tensor::zeros(&device, &[m, k]).unwrap(), Tensor::zeros(&device, &[k, n]).unwrap(), Tensor::zeros(&device, &[m, n]).unwrap());
        device.record_tuned_choice("other", "AkBn 8x16/8x8", Duration::from_millis(1));
        let rule = plan(&device, &g);
        assert_eq!(choose(&device, &g, a.buffer(), b.buffer(), None, c.buffer(), rule, true).unwrap(), rule);
        let summary = device.tuning_summary().unwrap();
        assert_eq!((summary.measured, summary.over_cap), (1, 1), "{summary}");
    }
}
