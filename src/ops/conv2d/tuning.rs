//! Convolution paths chosen by measurement on the user's adapter: for the first convolution of
//! each class (its channels, kernel, stride, image and batch sizes, the sizes rounded up to powers
//! of two), a training step's three passes (forward, input and weight gradients) are timed under
//! every [`Settings`] that gives another [`ConvPlan`]: direct kernels or im2col and the GEMM, the
//! subgroup kernels where the rules may use them, and both GEMM orientations. As for the GEMMs
//! (`ops/matmul/tuning.rs`), the rules' plan stays unless another beats it by the margin in a
//! confirming round, and the choice is kept in the device's table.

use super::{conv2d_with, small_k_subgroups, Conv2dConfig, ConvGeometry, ConvPlan, Direct, Orient, Padding, Settings};
use crate::error::Result;
use crate::ops::timing::{confirmed_faster, fastest, seconds_per_run, slice_share};
use crate::tensor::Tensor;
use std::time::Instant;

/// The fewest images a slice of the batch is timed on.
const MIN_IMAGES: usize = 8;

/// The settings for a convolution of geometry `g` (of `x`, `w`, `b`): the rules' where the device
/// does not tune kernels, else the class's measured choice (measured now if the class is new and
/// the run's cap allows).
pub(super) fn settings(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: Conv2dConfig,
    g: &ConvGeometry,
    rules: Settings,
) -> Result<Settings> {
    let device = x.device();
    if !device.tunes_kernels() {
        return Ok(rules);
    }
    let class = class_of(g, cfg);
    if let Some(choice) = device.tuned_choice(&class) {
        return Ok(parse_choice(&choice, tunable(device, rules)).unwrap_or(rules));
    }
    let left = device.tuning_time_left(&class);
    if left.is_zero() {
        return Ok(rules);
    }
    let candidates = candidates(device, g, rules);
    if candidates.len() == 1 {
        device.record_tuned_choice(&class, &format_choice(rules), std::time::Duration::ZERO);
        return Ok(rules);
    }
    // A training step's passes of this layer on `input`.
    let step = |input: &Tensor, s: Settings| -> Result<()> {
        let (out, backward) = conv2d_with(input, w, b, cfg, s)?;
        backward.grad_input(&out)?;
        backward.grad_weight(&out)?;
        Ok(())
    };
    device.without_new_tuning(|| measure(device, x, g, rules, candidates, &class, left, step))
}

/// Times `candidates` (the rules' first) on `x` or a slice of its batch, and records the choice.
#[allow(clippy::too_many_arguments)]
fn measure(
    device: &crate::Device,
    x: &Tensor,
    g: &ConvGeometry,
    rules: Settings,
    candidates: Vec<Settings>,
    class: &str,
    left: std::time::Duration,
    step: impl Fn(&Tensor, Settings) -> Result<()>,
) -> Result<Settings> {
    let start = Instant::now();
    step(x, rules)?;
    let whole = seconds_per_run(device, rules, 1, &|s| step(x, s))?;
    // Fewer images when the whole batch is slow (their passes are alike), but enough that the
    // GEMMs keep the shapes of a batch; a new input, no larger than x, so the measuring needs no
    // more memory than the layer itself.
    let images = ((g.n as f64 * slice_share(whole)).ceil() as usize).clamp(MIN_IMAGES.min(g.n), g.n);
    let sliced = if images < g.n { Some(Tensor::zeros(device, &[images, g.c_in, g.h, g.w])?) } else { None };
    let input = sliced.as_ref().unwrap_or(x);
    let run = |s: Settings| step(input, s);
    let winner = fastest(device, &candidates, run, start + left)?;
    let chosen = match winner {
        Some(w) if plan_key(device, g, w) != plan_key(device, g, rules) && confirmed_faster(device, w, rules, run)? => w,
        _ => rules,
    };
    if device.knobs().log_gemm {
        eprintln!(
            "tuned {class}: {} plans on {images} images in {:.2} s: {} (rules: {})",
            candidates.len(),
            start.elapsed().as_secs_f64(),
            format_choice(chosen),
            format_choice(rules)
        );
    }
    device.record_tuned_choice(class, &format_choice(chosen), start.elapsed());
    Ok(chosen)
}

/// The class a convolution's choice is kept under.
fn class_of(g: &ConvGeometry, cfg: Conv2dConfig) -> String {
    // Small sides are classes of their own (the direct and subgroup kernels' limits are there).
    let side = |x: usize| if x <= 16 { x } else { x.next_power_of_two() };
    let padding = if cfg.padding == Padding::Same { "same" } else { "valid" };
    format!(
        "conv2d n{} c{}>{} {}x{}/{} {padding} {}x{}",
        side(g.n),
        side(g.c_in),
        side(g.c_out),
        g.kh,
        g.kw,
        g.stride,
        side(g.h),
        side(g.w)
    )
}

/// `rules` with the kinds of subgroup kernel the tuner may try besides: the small-K kernels at
/// every subgroup size they take ([`small_k_subgroups`]), where the rules plan them only at the
/// sizes they were measured faster at (as the GEMM's tuner times its subgroup kernels at sizes its
/// rules pass over).
fn tunable(device: &crate::Device, rules: Settings) -> Settings {
    Settings { subgroup_small_k: rules.subgroup_small_k || small_k_subgroups(device), ..rules }
}

/// The rules' settings first, then every variation of their paths that gives another plan.
fn candidates(device: &crate::Device, g: &ConvGeometry, rules: Settings) -> Vec<Settings> {
    // Each kind of subgroup kernel only where the device may run it ([`tunable`]; the subgroup
    // GEMM plans its own kernels at the device's size).
    let allowed = |rule: bool| -> &'static [bool] {
        if rule {
            &[true, false]
        } else {
            &[false]
        }
    };
    let mut out = vec![rules];
    let mut plans = vec![plan_key(device, g, rules)];
    for direct in [Direct::Rows, Direct::Quads, Direct::Off] {
        for &subgroup_small_k in allowed(tunable(device, rules).subgroup_small_k) {
            for &subgroup_forward in allowed(rules.subgroup_forward) {
                for orient in [Orient::Auto, Orient::Normal, Orient::Transposed] {
                    let s = Settings { direct, subgroup_small_k, subgroup_forward, orient, ..rules };
                    let plan = plan_key(device, g, s);
                    if !plans.contains(&plan) {
                        plans.push(plan);
                        out.push(s);
                    }
                }
            }
        }
    }
    out
}

/// What a plan runs (its chunks aside, which the settings here do not change).
fn plan_key(device: &crate::Device, g: &ConvGeometry, s: Settings) -> String {
    let plan = ConvPlan::new(device, g, &s);
    format!("{:?} {:?} {:?}", plan.forward, plan.grad_input, plan.grad_weight)
}

fn format_choice(s: Settings) -> String {
    format!("direct {:?} subgroup_small_k {} subgroup_forward {} orient {:?}", s.direct, s.subgroup_small_k, s.subgroup_forward, s.orient)
}

/// The settings a stored choice names, on top of `rules` (the device's limits and knobs, widened by
/// [`tunable`]); a choice of a kind of subgroup kernel they do not allow here is not taken.
fn parse_choice(text: &str, rules: Settings) -> Option<Settings> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [_, direct, _, small_k, _, forward, _, orient] = words[..] else { return None };
    let direct = [Direct::Rows, Direct::Quads, Direct::Off].into_iter().find(|d| format!("{d:?}") == direct)?;
    let orient = [Orient::Auto, Orient::Normal, Orient::Transposed].into_iter().find(|o| format!("{o:?}") == orient)?;
    let (small_k, forward): (bool, bool) = (small_k.parse().ok()?, forward.parse().ok()?);
    if (small_k && !rules.subgroup_small_k) || (forward && !rules.subgroup_forward) {
        return None;
    }
    Some(Settings { direct, subgroup_small_k: small_k, subgroup_forward: forward, orient, ..rules })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Device, DeviceOptions, KernelTuning};
    use crate::ops::conv2d::{conv2d, conv2d_geometry, cpu};
    use crate::testing::{assert_close, rand_vec, rng, tensor};
    use std::time::Duration;

    #[test]
    fn a_stored_choice_reads_back() {
        let rules = Settings::for_device(&crate::testing::device());
        for direct in [Direct::Rows, Direct::Quads, Direct::Off] {
            for orient in [Orient::Auto, Orient::Normal, Orient::Transposed] {
                let s = Settings { direct, orient, subgroup_forward: false, subgroup_small_k: false, ..rules };
                let back = parse_choice(&format_choice(s), rules).unwrap();
                assert_eq!(format_choice(back), format_choice(s));
            }
        }
        assert!(parse_choice("direct Sideways subgroup_small_k false subgroup_forward false orient Auto", rules).is_none());
        let no_subgroups = Settings { subgroup_forward: false, subgroup_small_k: false, ..rules };
        assert!(parse_choice("direct Rows subgroup_small_k true subgroup_forward false orient Auto", no_subgroups).is_none());
    }

    /// Tuned convolutions compute what the reference computes, forward and backward; each class is
    /// measured once, and the candidates differ in their plans.
    #[test]
    fn tuned_convolutions_are_right_and_measured_once() {
        let tuning = KernelTuning::On { cap: Duration::from_secs(120), cache: None };
        let device = Device::with_options(&DeviceOptions { kernel_tuning: tuning, ..DeviceOptions::default() }).unwrap();
        let mut r = rng(7);
        // A first layer (the subgroup and direct kernels' case) and a strided 'same' one (GEMMs).
        let cases: [([usize; 4], [usize; 4], Conv2dConfig); 2] =
            [([4, 1, 12, 12], [8, 1, 3, 3], Conv2dConfig::default()), ([3, 6, 9, 11], [10, 6, 3, 3], Conv2dConfig::new(2, Padding::Same))];
        for (xs, ws, cfg) in cases {
            let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
            assert!(candidates(&device, &g, Settings::for_device(&device)).len() > 1, "{xs:?} {ws:?}: one plan only");
            let (x, w) = (rand_vec(&mut r, xs.iter().product()), rand_vec(&mut r, ws.iter().product()));
            let (out, backward) = conv2d(&tensor(&device, &x, &xs), &tensor(&device, &w, &ws), None, cfg).unwrap();
            let want = cpu::conv2d(&x, &w, None, &g);
            assert_close(&out.to_vec().unwrap(), &want, 1e-4, &format!("tuned forward {xs:?} {ws:?}"));
            let dout: Vec<f64> = out.to_vec().unwrap().iter().map(|&v| v as f64).collect();
            let (want_dx, want_dw, _) = cpu::conv2d_backward(&x, &w, &dout, &g);
            assert_close(&backward.grad_input(&out).unwrap().to_vec().unwrap(), &want_dx, 1e-4, "tuned input gradient");
            assert_close(&backward.grad_weight(&out).unwrap().to_vec().unwrap(), &want_dw, 1e-4, "tuned weight gradient");
            assert!(device.tuned_choice(&class_of(&g, cfg)).is_some(), "{xs:?} {ws:?} has no choice: {}", device.tuning_summary().unwrap());
        }
        let measured = device.tuning_summary().unwrap().measured;
        let (out, _) =
            conv2d(&Tensor::zeros(&device, &[4, 1, 12, 12]).unwrap(), &Tensor::zeros(&device, &[8, 1, 3, 3]).unwrap(), None, cases[0].2)
                .unwrap();
        out.to_vec().unwrap();
        assert_eq!(device.tuning_summary().unwrap().measured, measured, "the same class is not measured again");
    }
}
