//! The training loop: `fit`, `evaluate`, `predict` for anything that implements [`Network`], with
//! Keras-style epoch lines, a progress bar on a terminal, early stopping and a deadline. Losses and
//! accuracy are accumulated on the device and read back once per logging interval, not per step.

mod progress;

use crate::autograd::{Tape, Var};
use crate::data::dataset::{Augmentation, BatchOrder, Batches, DeviceDataset, ImageAugment};
use crate::error::{Error, Result};
use crate::ops;
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use progress::Progress;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A trainable network: logits from a batch of images, and its parameters.
pub trait Network {
    /// Runs the network on `x` (`[n, c, h, w]`), registering its parameters with `tape.param`.
    /// `seed` varies per step so dropout masks differ between steps.
    fn forward(&self, tape: &Tape, x: &Var, training: bool, seed: u64) -> Result<Var>;
    /// The trainable parameters, in a fixed order.
    fn parameters(&self) -> Vec<Tensor>;
    /// Every tensor the network's function depends on: the parameters and any statistics that
    /// training updates outside the optimizer (batch norm's running mean and variance). Restoring
    /// these restores the network.
    fn state(&self) -> Vec<Tensor> {
        self.parameters()
    }
    /// Bytes per image of the largest tensor whose size grows with the batch in a training step
    /// (an activation, its gradient, an op's workspace not already cut into chunks), when the
    /// network knows it. Training and evaluation split a batch whose largest tensor would exceed
    /// the device's storage binding into micro-batches ([`micro_batch_size`]); `None`: never.
    fn largest_tensor_bytes_per_image(&self) -> Option<u64> {
        None
    }
}

/// The most images one pass of `net` may take on `device`, for batches of `batch`: `batch`, or
/// fewer where the network's largest tensor for `batch` images would exceed a storage binding
/// (see [`micro_batches_for`]). An error names the tensor and the limit where one image alone
/// does not fit.
pub fn micro_batch_size(net: &dyn Network, device: &crate::Device, batch: usize) -> Result<usize> {
    let Some(per_image) = net.largest_tensor_bytes_per_image() else { return Ok(batch) };
    let limit = device.max_binding_bytes();
    micro_batches_for(batch, per_image, limit).ok_or_else(|| Error::TooLarge {
        what: "the largest activation of one image".into(),
        bytes: per_image,
        limit,
        adapter: device.name(),
    })
}

/// `batch` where `batch` images of `per_image` bytes fit in `limit`, else the most that do;
/// `None` where not even one does.
pub fn micro_batches_for(batch: usize, per_image: u64, limit: u64) -> Option<usize> {
    let fit = limit.checked_div(per_image).unwrap_or(u64::MAX);
    (fit >= 1).then(|| batch.min(usize::try_from(fit).unwrap_or(usize::MAX)))
}

/// How the learning rate moves over a `fit`, as a factor of the optimizer's own.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Half a cosine, step by step, from 1 down to `floor` at the end of the last epoch: the low
    /// rates of the last epochs settle the weights into a minimum that a constant rate keeps
    /// jumping around (Loshchilov and Hutter's SGDR, without restarts).
    Cosine { floor: f32 },
}

impl LrSchedule {
    /// The factor for step `step` of `total` (counted from 0).
    pub fn factor(self, step: usize, total: usize) -> f32 {
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine { floor } => {
                let progress = step as f64 / total.max(1) as f64;
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
                (floor as f64 + (1.0 - floor as f64) * cosine) as f32
            }
        }
    }
}

/// A schedule laid over a number of epochs that may be planned again as training goes (a deadline
/// learns how long an epoch takes only after one ran).
#[derive(Clone, Debug)]
struct PlannedSchedule {
    schedule: LrSchedule,
    steps_per_epoch: usize,
    planned_epochs: usize,
    /// The rate never rises: when a plan grows again (a slow epoch, then faster ones) the rate
    /// holds until the longer curve comes down to it, instead of jumping back up.
    lowest: f32,
}

impl PlannedSchedule {
    fn new(schedule: LrSchedule, steps_per_epoch: usize, planned_epochs: usize) -> Self {
        PlannedSchedule { schedule, steps_per_epoch, planned_epochs, lowest: f32::INFINITY }
    }

    /// The factor of step `step` (from 0) of epoch `epoch` (from 1); steps are asked for in order.
    fn factor(&mut self, epoch: usize, step: usize) -> f32 {
        let at = (epoch - 1) * self.steps_per_epoch + step;
        self.lowest = self.lowest.min(self.schedule.factor(at, self.planned_epochs * self.steps_per_epoch));
        self.lowest
    }

    fn replan(&mut self, epochs: usize) {
        self.planned_epochs = epochs;
    }
}

#[derive(Clone, Debug)]
pub struct EarlyStopping {
    /// Epochs without an improvement of `min_delta` in validation loss before stopping.
    pub patience: usize,
    pub min_delta: f64,
}

/// A rule asked after each epoch's validation whether training should end early: it sees every
/// epoch so far and answers why to stop, or `None` to go on (the search's early ranking of
/// children, [`crate::search::ranking`]).
#[derive(Clone)]
pub struct StopRule(Arc<StopRuleFn>);

type StopRuleFn = dyn Fn(&[EpochStats]) -> Option<String> + Send + Sync;

impl StopRule {
    pub fn new(rule: impl Fn(&[EpochStats]) -> Option<String> + Send + Sync + 'static) -> StopRule {
        StopRule(Arc::new(rule))
    }

    /// Why training should stop after `epochs`, if it should.
    pub fn check(&self, epochs: &[EpochStats]) -> Option<String> {
        (self.0)(epochs)
    }
}

impl std::fmt::Debug for StopRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopRule(..)")
    }
}

#[derive(Clone, Debug)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Print Keras-style lines (and a progress bar on a terminal).
    pub verbose: bool,
    /// Steps between readbacks of the loss (progress bar updates, divergence checks).
    pub log_every: usize,
    pub early_stopping: Option<EarlyStopping>,
    /// Do not start an epoch that would end after this instant, judged by the last epoch's
    /// duration (the first epoch always runs).
    pub deadline: Option<Instant>,
    /// At the end, put back the network's state from the epoch with the lowest validation loss
    /// (Keras's `restore_best_weights`); needs validation data.
    pub restore_best: bool,
    /// Over `epochs` epochs, or with a `deadline` over the epochs that fit before it (planned
    /// again after each epoch from its duration, so that the rate reaches its floor where training
    /// stops; the rate never rises when a plan grows); the optimizer's rate is put back when `fit`
    /// returns.
    pub lr_schedule: LrSchedule,
    /// Augmentation of the training batches (validation and evaluation see the images as they
    /// are), checked against the training images' size when `fit` starts.
    pub augmentation: Augmentation,
    /// Label smoothing eps in [0, 1) of the training loss: the target is (1 - eps) onehot + eps /
    /// classes. The reported training loss is the smoothed one (it cannot reach 0); the validation
    /// loss and accuracy, early stopping and `restore_best` use the plain cross-entropy, so fits
    /// with and without smoothing are judged on the same figure.
    pub label_smoothing: f32,
    /// Asked after each epoch but the last, once it is validated: a reason ends training as early
    /// stopping does (the best epoch is still restored).
    pub stop_rule: Option<StopRule>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 1,
            batch_size: 128,
            seed: 0,
            verbose: true,
            log_every: 50,
            early_stopping: None,
            deadline: None,
            restore_best: false,
            lr_schedule: LrSchedule::Constant,
            augmentation: Augmentation::NONE,
            label_smoothing: 0.0,
            stop_rule: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub seconds: f64,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub epochs: Vec<EpochStats>,
    /// Why training ended before `epochs` (early stopping, the deadline, or the stop rule's reason).
    pub stopped_early: Option<String>,
    /// The epoch whose state the network holds after `fit` when it restored the best one.
    #[serde(default)]
    pub restored_epoch: Option<usize>,
}

impl History {
    /// The lowest validation loss seen, with its accuracy.
    pub fn best_val(&self) -> Option<(f64, f64)> {
        self.epochs
            .iter()
            .filter_map(|e| Some((e.val_loss?, e.val_accuracy?)))
            .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal))
    }

    /// The epoch whose weights the network ends with: the restored one, else the last.
    pub fn final_epoch(&self) -> Option<&EpochStats> {
        match self.restored_epoch {
            Some(e) => self.epochs.iter().find(|s| s.epoch == e),
            None => self.epochs.last(),
        }
    }
}

/// A device-side copy of a network's state, taken at the best epoch so far.
struct Snapshot {
    epoch: usize,
    tensors: Vec<Tensor>,
}

impl Snapshot {
    fn take(state: &[Tensor], epoch: usize) -> Result<Snapshot> {
        Ok(Snapshot { epoch, tensors: state.iter().map(Tensor::deep_clone).collect::<Result<_>>()? })
    }

    /// Copies `state` in, reusing this snapshot's buffers.
    fn retake(&mut self, state: &[Tensor], epoch: usize) -> Result<()> {
        self.epoch = epoch;
        self.tensors.iter().zip(state).try_for_each(|(dst, src)| dst.copy_from(src))
    }

    fn restore(&self, state: &[Tensor]) -> Result<()> {
        state.iter().zip(&self.tensors).try_for_each(|(dst, src)| dst.copy_from(src))
    }
}

/// Mean loss and accuracy over a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

/// One optimisation step on a batch; returns the loss tensor (`[1]`, not read back).
pub fn train_step(net: &dyn Network, opt: &mut dyn Optimizer, x: Tensor, y: Tensor, seed: u64, correct: &Tensor) -> Result<Tensor> {
    train_step_smoothed(net, opt, x, y, seed, correct, 0.0)
}

/// [`train_step`] on the cross-entropy with labels smoothed by `label_smoothing` (see
/// [`FitConfig::label_smoothing`]); `correct` still counts the batch's plain argmax hits.
pub fn train_step_smoothed(
    net: &dyn Network,
    opt: &mut dyn Optimizer,
    x: Tensor,
    y: Tensor,
    seed: u64,
    correct: &Tensor,
    label_smoothing: f32,
) -> Result<Tensor> {
    let tape = Tape::new();
    let xv = tape.constant(x);
    let yv = tape.constant(y);
    let logits = net.forward(&tape, &xv, true, seed)?;
    let loss = tape.softmax_cross_entropy_smoothed(&logits, &yv, label_smoothing)?;
    ops::softmax::count_correct(logits.value(), yv.value(), correct)?;
    let grads = tape.backward(&loss)?;
    let params = net.parameters();
    let pairs: Vec<(&Tensor, &Tensor)> = params.iter().filter_map(|p| grads.of(p).map(|g| (p, g))).collect();
    opt.step(&pairs)?;
    Ok(loss.value().clone())
}

/// Keeps the augmentation's generators apart from the dropout masks', which share the step's seed.
const SHIFT_STREAM: u64 = 0x5817_F7ED_0000_0001;

/// Gives each micro-batch of a step its own dropout masks (the first keeps the step's seed).
const MICRO_BATCH_STREAM: u64 = 0xA24B_AED4_963E_E407;

/// One optimizer step on batch `step` of `batches`, taken in micro-batches of at most `micro`
/// images (`augments`: one per image of the batch, or none). Each micro-batch's backward is seeded
/// with its share of the batch, so the gradients add up to the whole batch's mean gradient, and
/// the returned loss is the batch's mean. Batch norm normalises each micro-batch by its own
/// statistics ("ghost batch norm", Hoffer et al. 2017) and updates its running statistics once per
/// micro-batch.
#[allow(clippy::too_many_arguments)]
fn micro_batched_step(
    net: &dyn Network,
    opt: &mut dyn Optimizer,
    batches: &mut Batches<'_>,
    step: usize,
    augments: &[ImageAugment],
    micro: usize,
    seed: u64,
    correct: &Tensor,
    label_smoothing: f32,
) -> Result<Tensor> {
    let count = batches.indices(step).len();
    let params = net.parameters();
    let mut sums: Vec<Option<Tensor>> = vec![None; params.len()];
    let mut loss_sum: Option<Tensor> = None;
    for (part, start) in (0..count).step_by(micro.max(1)).enumerate() {
        let range = start..(start + micro).min(count);
        let share = range.len() as f32 / count as f32;
        let part_augments = if augments.is_empty() { &[][..] } else { &augments[range.clone()] };
        let (x, y) = batches.gather_part(step, range, part_augments)?;
        let tape = Tape::new();
        let (xv, yv) = (tape.constant(x), tape.constant(y));
        let logits = net.forward(&tape, &xv, true, seed ^ (part as u64).wrapping_mul(MICRO_BATCH_STREAM))?;
        let loss = tape.softmax_cross_entropy_smoothed(&logits, &yv, label_smoothing)?;
        ops::softmax::count_correct(logits.value(), yv.value(), correct)?;
        let grads = tape.backward_with(&loss, Tensor::full(correct.device(), loss.shape(), share)?)?;
        for (sum, param) in sums.iter_mut().zip(&params) {
            let Some(grad) = grads.of(param) else { continue };
            match sum {
                // A copy: the tape's gradient tensors may share buffers with its other values.
                None => *sum = Some(grad.deep_clone()?),
                Some(acc) => ops::add::add_into(acc, grad)?,
            }
        }
        let weighted = ops::add::scale(loss.value(), share)?;
        match &loss_sum {
            None => loss_sum = Some(weighted),
            Some(acc) => ops::add::add_into(acc, &weighted)?,
        }
    }
    let pairs: Vec<(&Tensor, &Tensor)> = params.iter().zip(&sums).filter_map(|(p, g)| Some((p, g.as_ref()?))).collect();
    opt.step(&pairs)?;
    loss_sum.ok_or_else(|| Error::Invalid(format!("batch {step} holds no image")))
}

/// Trains `net` on `train`, evaluating on `val` after each epoch.
pub fn fit(
    net: &dyn Network,
    opt: &mut dyn Optimizer,
    train: &DeviceDataset,
    val: Option<&DeviceDataset>,
    cfg: &FitConfig,
) -> Result<History> {
    if train.is_empty() {
        return Err(Error::Invalid("fit: the training set is empty".into()));
    }
    if cfg.batch_size == 0 || cfg.log_every == 0 {
        return Err(Error::Invalid("fit: batch size and log interval must be positive".into()));
    }
    if cfg.restore_best && val.is_none() {
        return Err(Error::Invalid("fit: restore_best needs validation data to tell the best epoch".into()));
    }
    ops::softmax::check_label_smoothing("fit", cfg.label_smoothing)?;
    cfg.augmentation.check(train.height, train.width)?;
    let base_lr = opt.learning_rate();
    let result = fit_epochs(net, opt, train, val, cfg, base_lr);
    opt.set_learning_rate(base_lr);
    result
}

fn fit_epochs(
    net: &dyn Network,
    opt: &mut dyn Optimizer,
    train: &DeviceDataset,
    val: Option<&DeviceDataset>,
    cfg: &FitConfig,
    base_lr: f32,
) -> Result<History> {
    let device = train.device().clone();
    let order = BatchOrder::new(train.len(), cfg.batch_size, cfg.seed)?;
    let steps = order.batches_per_epoch();
    let micro = micro_batch_size(net, &device, cfg.batch_size)?;
    if micro < cfg.batch_size && cfg.verbose {
        println!(
            "Batches of {} in micro-batches of {micro}: the largest activation takes {} bytes per image, and a storage binding holds {}",
            cfg.batch_size,
            net.largest_tensor_bytes_per_image().unwrap_or(0),
            device.max_binding_bytes()
        );
    }
    let mut history = History::default();
    let mut best_val = f64::INFINITY;
    let mut since_best = 0;
    let mut lowest_val = f64::INFINITY;
    let mut best: Option<Snapshot> = None;
    // The first epoch, not yet timed, assumes all of them.
    let mut schedule = PlannedSchedule::new(cfg.lr_schedule, steps, cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        let correct = Tensor::zeros(&device, &[1])?;
        // Per-step losses of the current logging window, read back together.
        let window = Tensor::uninit(&device, &[cfg.log_every], "loss window")?;
        let mut loss_sum = 0.0;
        let mut progress = Progress::new(cfg.verbose, epoch, cfg.epochs, train.len());
        let mut seen = 0;
        // A streamed set uploads the epoch's chunks as the steps reach them.
        let mut batches = train.batches(order.epoch(epoch as u64))?;
        for step in 0..batches.len() {
            let seed = cfg.seed ^ ((epoch as u64) << 40) ^ (step as u64).wrapping_mul(0x9E37_79B9);
            let count = batches.indices(step).len();
            let augments = cfg.augmentation.draw(count, seed ^ SHIFT_STREAM);
            opt.set_learning_rate(base_lr * schedule.factor(epoch, step));
            let loss = if count <= micro {
                let (x, y) = batches.gather(step, &augments)?;
                train_step_smoothed(net, opt, x, y, seed, &correct, cfg.label_smoothing)?
            } else {
                micro_batched_step(net, opt, &mut batches, step, &augments, micro, seed, &correct, cfg.label_smoothing)?
            };
            device.copy_region(loss.buffer(), 0, window.buffer(), (step % cfg.log_every) as u64 * 4, 4);
            device.flush()?;
            seen += count;
            if (step + 1) % cfg.log_every == 0 || step + 1 == steps {
                let n = step % cfg.log_every + 1;
                let losses = &window.to_vec()?[..n];
                if let Some(i) = losses.iter().position(|l| !l.is_finite()) {
                    progress.finish_line("");
                    return Err(Error::Diverged(format!(
                        "the loss became {} at epoch {epoch}, step {} of {steps}",
                        losses[i],
                        step + 1 - n + i + 1
                    )));
                }
                loss_sum += losses.iter().map(|&l| l as f64).sum::<f64>();
                progress.update(seen, loss_sum / (step + 1) as f64);
            }
        }
        let accuracy = correct.to_vec()?[0] as f64 / train.len() as f64;
        let loss = loss_sum / steps as f64;
        let (val_loss, val_accuracy) = match val {
            Some(v) => {
                let e = evaluate(net, v, micro)?;
                (Some(e.loss), Some(e.accuracy))
            }
            None => (None, None),
        };
        let stats = EpochStats { epoch, seconds: start.elapsed().as_secs_f64(), loss, accuracy, val_loss, val_accuracy };
        progress.finish_line(&epoch_line(&stats, steps));
        history.epochs.push(stats);
        if let (true, Some(vl)) = (cfg.restore_best, val_loss) {
            if vl < lowest_val {
                lowest_val = vl;
                match &mut best {
                    Some(b) => b.retake(&net.state(), epoch)?,
                    None => best = Some(Snapshot::take(&net.state(), epoch)?),
                }
            }
        }
        if let Some(why) = cfg.stop_rule.as_ref().filter(|_| epoch < cfg.epochs).and_then(|rule| rule.check(&history.epochs)) {
            history.stopped_early = Some(why);
            break;
        }
        if let (Some(es), Some(vl)) = (&cfg.early_stopping, val_loss) {
            if vl < best_val - es.min_delta {
                best_val = vl;
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= es.patience {
                    history.stopped_early = Some(format!("no validation loss decrease after {} epochs", es.patience));
                    break;
                }
            }
        }
        if let Some(deadline) = cfg.deadline {
            let more = epochs_that_fit(deadline.saturating_duration_since(Instant::now()), start.elapsed());
            if more == 0 && epoch < cfg.epochs {
                history.stopped_early = Some("time limit reached".into());
                break;
            }
            schedule.replan(cfg.epochs.min(epoch + more));
        }
    }
    if let Some(b) = best {
        if b.epoch != history.epochs.len() {
            b.restore(&net.state())?;
            device.flush()?;
            if cfg.verbose {
                println!("Restored the weights of epoch {} (lowest val_loss {lowest_val:.4})", b.epoch);
            }
        }
        history.restored_epoch = Some(b.epoch);
    }
    Ok(history)
}

/// Whole epochs of `per_epoch` that end within `left`.
pub fn epochs_that_fit(left: Duration, per_epoch: Duration) -> usize {
    (left.as_secs_f64() / per_epoch.as_secs_f64().max(1e-9)).floor().min(usize::MAX as f64) as usize
}

/// "loss: 0.2622 - accuracy: 0.9205 - val_loss: ..." as Keras prints it.
fn epoch_line(s: &EpochStats, steps: usize) -> String {
    let per_step = Duration::from_secs_f64(s.seconds / steps.max(1) as f64);
    let mut line = format!("{:.0}s {}ms/step - loss: {:.4} - accuracy: {:.4}", s.seconds, per_step.as_millis(), s.loss, s.accuracy);
    if let (Some(l), Some(a)) = (s.val_loss, s.val_accuracy) {
        line += &format!(" - val_loss: {l:.4} - val_accuracy: {a:.4}");
    }
    line
}

/// Mean cross-entropy and accuracy in evaluation mode.
pub fn evaluate(net: &dyn Network, data: &DeviceDataset, batch_size: usize) -> Result<Evaluation> {
    if data.is_empty() {
        return Err(Error::Invalid("evaluate: the dataset is empty".into()));
    }
    let device = data.device().clone();
    // [correct count, summed cross-entropy], accumulated on the device and read once.
    let metrics = Tensor::zeros(&device, &[2])?;
    let batch_size = micro_batch_size(net, &device, batch_size)?;
    let mut batches = data.batches(BatchOrder::new(data.len(), batch_size, 0)?.sequential())?;
    for step in 0..batches.len() {
        let (x, y) = batches.gather(step, &[])?;
        let tape = Tape::no_grad();
        let logits = net.forward(&tape, &tape.constant(x), false, 0)?;
        ops::softmax::count_correct(logits.value(), &y, &metrics)?;
        device.flush()?;
    }
    let m = metrics.to_vec()?;
    let n = data.len() as f64;
    Ok(Evaluation { loss: m[1] as f64 / n, accuracy: m[0] as f64 / n })
}

/// The logits `[n, classes]` (row-major) of every image of `data`, in order (evaluation mode).
pub fn logits(net: &dyn Network, data: &DeviceDataset, batch_size: usize) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    let batch_size = micro_batch_size(net, data.device(), batch_size)?;
    let mut batches = data.batches(BatchOrder::new(data.len(), batch_size, 0)?.sequential())?;
    for step in 0..batches.len() {
        let (x, _) = batches.gather(step, &[])?;
        let tape = Tape::no_grad();
        out.extend(net.forward(&tape, &tape.constant(x), false, 0)?.value().to_vec()?);
    }
    Ok(out)
}

/// Class probabilities `[n, classes]` for a batch of images (evaluation mode).
pub fn predict(net: &dyn Network, images: &Tensor) -> Result<Tensor> {
    let tape = Tape::no_grad();
    let x = tape.constant(images.clone());
    let logits = net.forward(&tape, &x, false, 0)?;
    ops::softmax::softmax(logits.value())
}

#[cfg(test)]
mod tests {
    use super::LrSchedule;

    #[test]
    fn cosine_runs_from_one_through_the_midpoint_to_the_floor() {
        let s = LrSchedule::Cosine { floor: 0.2 };
        assert_eq!(s.factor(0, 100), 1.0);
        assert!((s.factor(50, 100) - 0.6).abs() < 1e-6, "{}", s.factor(50, 100));
        assert!((s.factor(100, 100) - 0.2).abs() < 1e-6);
        assert!((s.factor(150, 100) - 0.2).abs() < 1e-6, "past the end it stays at the floor");
        assert_eq!(LrSchedule::Constant.factor(7, 10), 1.0);
    }

    #[test]
    fn a_planned_schedule_follows_its_plan_and_never_rises() {
        use super::PlannedSchedule;
        let cosine = LrSchedule::Cosine { floor: 0.1 };
        // 2 steps an epoch, planned over 4 epochs: the cosine of 8 steps.
        let mut s = PlannedSchedule::new(cosine, 2, 4);
        assert_eq!([s.factor(1, 0), s.factor(1, 1)], [cosine.factor(0, 8), cosine.factor(1, 8)]);
        // Cut to 2 epochs: epoch 2 runs the end of a 4-step cosine, down to the floor's side.
        s.replan(2);
        assert_eq!([s.factor(2, 0), s.factor(2, 1)], [cosine.factor(2, 4), cosine.factor(3, 4)]);
        // Grown to 10: the longer curve is above the rate reached, which holds until it comes down.
        s.replan(10);
        let held = cosine.factor(3, 4);
        assert!(cosine.factor(4, 20) > held);
        assert_eq!(s.factor(3, 0), held);
        let later: Vec<f32> = (4..=10).flat_map(|e| [(e, 0), (e, 1)]).map(|(e, step)| s.factor(e, step)).collect();
        assert!(later.windows(2).all(|w| w[1] <= w[0]), "{later:?}");
        assert!(later[later.len() - 1] < held && later[later.len() - 1] >= 0.1, "{later:?}");
    }

    #[test]
    fn epochs_that_fit_counts_whole_epochs() {
        use super::epochs_that_fit;
        use std::time::Duration;
        let s = Duration::from_secs;
        assert_eq!(epochs_that_fit(s(10), s(3)), 3);
        assert_eq!(epochs_that_fit(s(9), s(3)), 3);
        assert_eq!(epochs_that_fit(s(2), s(3)), 0);
        assert_eq!(epochs_that_fit(s(0), s(3)), 0);
        assert!(epochs_that_fit(s(1), Duration::ZERO) > 1_000_000, "an untimed epoch does not divide by zero");
    }
}
