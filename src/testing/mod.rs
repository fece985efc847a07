//! Helpers shared by the op tests: random shapes and data, f64 references, central finite
//! differences and an error report; and a network that records its inputs, for the training
//! tests. Public so integration tests and benches can use them too.

pub mod browser;
pub mod postgres;
pub mod search;

use crate::autograd::{Tape, Var};
use crate::device::Device;
use crate::tensor::Tensor;
use crate::train::Network;
use rand::{Rng, SeedableRng};

pub type TestRng = rand::rngs::StdRng;

pub fn device() -> Device {
    Device::shared().expect("a GPU adapter (lavapipe on a machine without a GPU: apt-get install mesa-vulkan-drivers)")
}

/// A device of its own (for a test that profiles: a profile sees every dispatch of its device),
/// opened as the shared one is: the rules' kernels, unless NETMORPH_TUNING asks for tuning.
pub fn own_device() -> Device {
    let options = crate::device::DeviceOptions::without_tuning_from_env().expect("the environment's device options");
    Device::with_options(&options).expect("a GPU adapter (lavapipe on a machine without a GPU: apt-get install mesa-vulkan-drivers)")
}

/// The adapter's subgroup size where the GEMM's (and the convolution's) subgroup kernels run with
/// it ([`crate::ops::matmul::subgroup_lanes`]: a power of two from 4 to 128), else None (said on
/// stderr). lavapipe of Mesa 25 (CI's, from bookworm-backports) has subgroups: missing there is a
/// regression, and fails ([`mesa_lacks_subgroups`]).
pub fn subgroup_lanes_of(dev: &Device) -> Option<u32> {
    let lanes = crate::ops::matmul::subgroup_lanes(dev);
    if lanes.is_none() {
        mesa_lacks_subgroups(dev);
        eprintln!("{} has subgroups of {:?}: the subgroup GEMMs never run there", dev.name(), dev.subgroup_size());
    }
    lanes
}

/// Fails where lavapipe of Mesa 25 or later offers no fixed-size subgroups (a regression).
fn mesa_lacks_subgroups(dev: &Device) {
    let mesa = dev.driver_info().strip_prefix("Mesa ").and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    assert!(
        !(dev.is_cpu() && mesa >= Some(25) && dev.subgroup_size().is_none()),
        "{} ({}) should offer subgroups",
        dev.name(),
        dev.driver_info()
    );
}

/// The path of example `name`, (re)built with the profile of the running test binary:
/// `cargo test --release` builds examples too, but `cargo test --test X` would leave a stale one.
/// Runs the test `name` (its path within the crate, as `--exact` takes it) again in a child process
/// of this test binary with lavapipe's SIMD width at 128 bits, where it has subgroups of 4: a
/// second subgroup size on a machine without a GPU. The child must pass; on lavapipe with
/// subgroups it must report 4 lanes (the test prints `subgroup lanes: {:?}`); elsewhere the child
/// runs at the adapter's own size, and says so. Returns at once in the child itself.
pub fn rerun_at_4_lanes(name: &str) {
    const WIDTH: &str = "LP_NATIVE_VECTOR_WIDTH";
    if std::env::var_os(WIDTH).is_some() {
        eprintln!("{WIDTH} is set already: this is the child or a run at that width");
        return;
    }
    let dev = device();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(WIDTH, "128")
        .output()
        .expect("run the test binary");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} with {WIDTH}=128 failed:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run in the child:\n{text}");
    if dev.adapter_info().name.contains("llvmpipe") && dev.subgroup_size().is_some() {
        assert!(text.contains("subgroup lanes: Some(4)"), "lavapipe with {WIDTH}=128 should run subgroups of 4:\n{text}");
    } else {
        eprintln!("{} is not lavapipe with subgroups: the child ran at its own size:\n{text}", dev.name());
    }
}

pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").to_path_buf();
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("run cargo").success(), "building the example {name} failed");
    profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

pub fn rng(seed: u64) -> TestRng {
    TestRng::seed_from_u64(seed)
}

/// A dimension in `lo..=hi`; the range should include values that are not multiples of the
/// workgroup size.
pub fn rand_dim(rng: &mut TestRng, lo: usize, hi: usize) -> usize {
    rng.random_range(lo..=hi)
}

/// `fixed` shapes first (batch 1, sizes that are not multiples of the workgroup), then random
/// shapes of 1 to 4 dimensions up to 19, 22 in all: the shape set of the element-wise op tests.
pub fn elementwise_shapes(rng: &mut TestRng, fixed: &[&[usize]]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = fixed.iter().map(|s| s.to_vec()).collect();
    while out.len() < 22 {
        let dims = rand_dim(rng, 1, 4);
        out.push((0..dims).map(|_| rand_dim(rng, 1, 19)).collect());
    }
    out
}

/// Uniform values in [-1, 1).
pub fn rand_vec(rng: &mut TestRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Uploads f64 data as an f32 tensor.
pub fn tensor(device: &Device, data: &[f64], shape: &[usize]) -> Tensor {
    let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    Tensor::from_slice(device, &v, shape).expect("upload")
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Worst relative error of `got` against `want`; values much smaller than the largest are judged
/// against a floor of 1e-3 of the largest, so cancellation near zero does not dominate.
pub fn worst_relative_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = (scale * 1e-3).max(1e-6);
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(floor)).fold(0.0, f64::max)
}

/// Asserts every element is within `tol` relative error and prints the worst one, tagged
/// `[accuracy]`, so the figures can be collected with `cargo test -- --nocapture`.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    if let Some(i) = got.iter().position(|g| !g.is_finite()) {
        panic!("{what}: element {i} is {}", got[i]);
    }
    let err = worst_relative_error(got, want);
    eprintln!("[accuracy] {what}: worst relative error {err:.2e}");
    assert!(err <= tol, "{what}: worst relative error {err:.3e} > {tol:.1e}");
}

/// Same check between two f64 vectors (reference backward against finite differences).
pub fn assert_close_f64(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = (scale * 1e-3).max(1e-9);
    let err = got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(floor)).fold(0.0, f64::max);
    eprintln!("[gradcheck] {what}: worst relative error {err:.2e}");
    assert!(err <= tol, "{what}: worst relative error {err:.3e} > {tol:.1e}");
}

/// Central finite differences of a scalar function, in f64.
pub fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let old = x[i];
            x[i] = old + h;
            let up = f(&x);
            x[i] = old - h;
            let down = f(&x);
            x[i] = old;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Parses and validates a WGSL shader, its shared pieces included, with naga (no GPU needed),
/// panicking with naga's message.
pub fn validate_wgsl(name: &str, source: &str) {
    let source = &crate::device::compose(source).unwrap_or_else(|e| panic!("{name}: {e}"));
    let module = naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    // Subgroup operations are validated as well: the kernels that use them run only where the
    // adapter has them.
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default() | naga::valid::Capabilities::SUBGROUP,
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
}

/// A [`Network`] that records every batch it is run on, for tests of what training and
/// evaluation feed a network (augmentation, order, streaming). Each `forward` keeps `(training,
/// the batch's values)`; its logits are a dense layer of zeros over the flattened input.
pub struct InputRecorder {
    weight: Tensor,
    seen: std::cell::RefCell<Vec<(bool, Vec<f32>)>>,
}

impl InputRecorder {
    /// A recorder for inputs of `features` values each (`c * h * w`), with `classes` logits.
    pub fn new(device: &Device, features: usize, classes: usize) -> crate::Result<Self> {
        Ok(InputRecorder { weight: Tensor::zeros(device, &[features, classes])?, seen: Default::default() })
    }

    /// The batches recorded so far, oldest first, as `(training, values)`; clears the record.
    pub fn take_seen(&self) -> Vec<(bool, Vec<f32>)> {
        self.seen.take()
    }
}

impl Network for InputRecorder {
    fn forward(&self, tape: &Tape, x: &Var, training: bool, _seed: u64) -> crate::Result<Var> {
        self.seen.borrow_mut().push((training, x.value().to_vec()?));
        let n = x.shape()[0];
        let flat = tape.reshape(x, &[n, x.shape()[1..].iter().product()])?;
        tape.dense(&flat, &tape.param(&self.weight), None)
    }

    fn parameters(&self) -> Vec<Tensor> {
        vec![self.weight.clone()]
    }
}
