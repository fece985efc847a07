//! The optimizers against golden values computed by an independent implementation: Keras 3 (JAX
//! backend, float32) ran 5 steps of every case in tests/data/optimizer_golden.json, made by
//! scripts/optimizer_golden.py (which says how each case maps onto Keras). The CPU references in
//! src/optim restate the shaders' formulas; these values do not, so a misunderstanding shared by a
//! shader and its reference (epsilon placement, bias correction, the momentum form) fails here.

use netmorph::optim::{Adadelta, Adam, Optimizer, Sgd};
use netmorph::testing::device;
use netmorph::Tensor;
use serde::Deserialize;
use std::collections::BTreeMap;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/optimizer_golden.json");

/// Both sides run the same algorithm in float32 on the same float32 inputs and hyperparameters,
/// with the operations in another order (netmorph's Adam bias corrections in f64, Keras's as f32
/// powers; Keras keeps SGD's velocity scaled by -lr; the shader compiler may fuse multiply-adds),
/// so each step adds a few ULP (6e-8 relative) of rounding. Measured on lavapipe: at most 2 ULP of
/// the parameter (1.9e-6 on a value near 10; Adadelta is bit-identical), and no element uses more
/// than 15% of the bound below (a parameter that cancels from near 0.5 to 2.75e-3 keeps the 1.9e-8
/// error of the larger values). The bound: a relative 1e-5 (tens of ULP: room for another
/// driver's rounding, nothing more) plus an absolute 1e-7 for the parameters that pass near zero,
/// where a relative bound alone would ask for more than float32 holds after cancellation. A
/// convention difference is orders of magnitude larger: Keras's own Adam epsilon placement, for
/// one, moves these parameters by 4.8e-4 to 4.1e-3.
const REL_TOL: f64 = 1e-5;
const ABS_TOL: f64 = 1e-7;

#[derive(Deserialize)]
struct Golden {
    keras_version: String,
    backend: String,
    floatx: String,
    initial: Vec<f64>,
    gradients: Vec<Vec<f64>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    optimizer: String,
    case: String,
    hyperparameters: BTreeMap<String, serde_json::Value>,
    /// The parameters after each step.
    steps: Vec<Vec<f64>>,
}

impl Case {
    fn label(&self) -> String {
        format!("{}/{}", self.optimizer, self.case)
    }

    /// A float32 hyperparameter (the file holds exact float32 values).
    fn f(&self, key: &str) -> f32 {
        self.hyperparameters.get(key).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("{}: no number {key:?}", self.label())) as f32
    }

    fn optimizer(&self) -> Box<dyn Optimizer> {
        match self.optimizer.as_str() {
            "adadelta" => Box::new(Adadelta::new(self.f("lr"), self.f("rho"), self.f("eps"))),
            "adam" => Box::new(Adam::new(self.f("lr"), self.f("beta1"), self.f("beta2"), self.f("eps"), self.f("weight_decay"))),
            "sgd" => {
                let nesterov = self.hyperparameters.get("nesterov").and_then(|v| v.as_bool());
                let nesterov = nesterov.unwrap_or_else(|| panic!("{}: no boolean \"nesterov\"", self.label()));
                Box::new(Sgd::new(self.f("lr")).with_momentum(self.f("momentum"), nesterov).with_weight_decay(self.f("weight_decay")))
            }
            other => panic!("{}: unknown optimizer {other:?}", self.label()),
        }
    }
}

fn load() -> Golden {
    let text = std::fs::read_to_string(GOLDEN).unwrap_or_else(|e| panic!("{GOLDEN}: {e}"));
    let golden: Golden = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{GOLDEN}: {e}"));
    assert_eq!(golden.floatx, "float32", "{GOLDEN}: the golden values must come from float32 runs");
    golden
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn optimizers_match_keras_golden_values() {
    let golden = load();
    let dev = device();
    let n = golden.initial.len();
    assert!(golden.gradients.iter().all(|g| g.len() == n), "{GOLDEN}: every gradient needs {n} values");
    eprintln!("golden values of Keras {} ({} backend, {})", golden.keras_version, golden.backend, golden.floatx);
    let mut failures = Vec::new();
    for case in &golden.cases {
        let label = case.label();
        assert_eq!(case.steps.len(), golden.gradients.len(), "{label}: one recorded parameter vector per gradient");
        let mut opt = case.optimizer();
        let param = Tensor::from_slice(&dev, &f32s(&golden.initial), &[n]).unwrap();
        // The largest absolute and relative differences, and the largest share of the bound used.
        let (mut max_abs, mut max_rel, mut max_used) = (0.0f64, 0.0f64, 0.0f64);
        for (t, (grad, want)) in golden.gradients.iter().zip(&case.steps).enumerate() {
            let grad = Tensor::from_slice(&dev, &f32s(grad), &[n]).unwrap();
            opt.step(&[(&param, &grad)]).unwrap_or_else(|e| panic!("{label} ({}) step {}: {e}", opt.name(), t + 1));
            let got = param.to_vec().unwrap();
            assert_eq!(want.len(), n, "{label} step {}: {} golden values for {n} parameters", t + 1, want.len());
            for (i, (&g, &w)) in got.iter().zip(&f32s(want)).enumerate() {
                let (g, w) = (g as f64, w as f64);
                let err = (g - w).abs();
                let bound = REL_TOL * w.abs() + ABS_TOL;
                max_abs = max_abs.max(err);
                max_used = max_used.max(err / bound);
                if w != 0.0 {
                    max_rel = max_rel.max(err / w.abs());
                }
                // Written so that a NaN fails too.
                let within = err <= bound;
                if !within {
                    failures.push(format!(
                        "{label} ({}) step {} element {i}: netmorph {g:e}, Keras {w:e} (|diff| {err:.3e} > {REL_TOL:e} * |Keras| + {ABS_TOL:e})",
                        opt.name(),
                        t + 1
                    ));
                }
            }
        }
        eprintln!("{label:32} max |diff| {max_abs:.3e}, max relative {max_rel:.3e}, {:.0}% of the bound", 100.0 * max_used);
    }
    assert!(failures.is_empty(), "{} values off the golden ones:\n{}", failures.len(), failures.join("\n"));
}

/// The file covers every optimizer, each at its defaults and at least one other setting.
#[test]
fn golden_values_cover_every_optimizer() {
    let golden = load();
    for opt in ["adadelta", "adam", "sgd"] {
        let cases = golden.cases.iter().filter(|c| c.optimizer == opt).count();
        assert!(cases >= 2, "{GOLDEN}: {cases} cases of {opt}, expected at least 2");
    }
    let sgd =
        |key: &str| golden.cases.iter().any(|c| c.optimizer == "sgd" && c.hyperparameters.get(key) == Some(&serde_json::Value::Bool(true)));
    assert!(sgd("nesterov"), "{GOLDEN}: no Nesterov case of sgd");
}
