//! `ImageClassifier`: the architecture search as a user calls it. `fit` searches within a time
//! limit and picks, on the validation set, which of the searched models to average with the best
//! ([`super::ensemble`]); `final_fit` trains the best model on the whole training set; `evaluate`
//! and `predict` use the best with its ensemble partners, and `export` writes them as one graph
//! (architecture JSON and safetensors weights, [`crate::graph::ensemble`]) that
//! `ImageClassifier::load` reads on its own. Images of any size, channel count and number of classes.
//!
//! The validation split is taken from the training data (seeded shuffle); the test data is never
//! used for any choice. Its size: a sixth of the training set, at most 10,000 images. AutoKeras took
//! 8.3% capped at 500, where one image is 0.2% of accuracy and the standard error near 99.5% is
//! 0.3%, so it cannot tell 99.4% from 99.5%; with 10,000 images (MNIST: the same size as the test
//! set) the standard error is 0.07%, and models are compared on the same images, which makes the
//! difference between two models' errors far less noisy than either alone.

use super::bayesian::BayesianConfig;
use super::ensemble::{select_members, SelectionStep};
use super::options::TestTimeShifts;
use super::ranking::EarlyRanking;
use super::searcher::{search, study_result, wait_for_other_workers, Job, SearchConfig, SearchResult, Trained, Trainer};
use super::space::{check_same, Architecture, DescribedMorph, GraphSpace, DEFAULT_MAX_PARAMETERS};
use super::store::{check_settings, write_atomic, ModelBlob, ModelRecord, SearchDir, Store};
use crate::data::{Augmentation, DeviceDataset, ImageSet, RandomShift, PIXEL_SCALE};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{ensemble::average_logits, ChannelNorm, CnnConfig, Graph, LayerId, Model, Op, ResNetConfig};
use crate::optim::{Adadelta, Adam, Optimizer, Sgd};
use crate::train::{self, EarlyStopping, Evaluation, FitConfig, History, LrSchedule, StopRule};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A starting architecture.
#[derive(Clone, Debug)]
pub enum Generator {
    /// AutoKeras's CnnGenerator.
    Cnn(CnnConfig),
    /// A small ResNet.
    ResNet(ResNetConfig),
}

impl Generator {
    /// The generator's graph, its batch norms' running statistics updated with `bn_momentum`.
    fn build(&self, input: &[usize], classes: usize, seed: u64, bn_momentum: f32) -> Result<Graph> {
        let mut graph = match self {
            Generator::Cnn(c) => Graph::cnn(input, classes, c, seed),
            Generator::ResNet(c) => Graph::resnet(input, classes, c, seed),
        }?;
        let ids: Vec<_> = graph.layers().iter().map(|l| l.id).collect();
        for id in ids {
            if let Op::BatchNorm { momentum, .. } = &mut graph.layer_mut(id).op {
                *momentum = bn_momentum;
            }
        }
        Ok(graph)
    }
}

/// The optimizer each model trains with (a fresh one per model).
#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum OptimizerConfig {
    /// Adam; with `weight_decay` > 0 AdamW's decoupled decay (each step shrinks the weights by
    /// lr * weight_decay, apart from the gradient).
    Adam {
        lr: f32,
        #[serde(default)]
        weight_decay: f32,
    },
    Adadelta {
        lr: f32,
        rho: f32,
        eps: f32,
    },
    /// SGD; `weight_decay` is the L2 term added to the gradient, as PyTorch's.
    Sgd {
        lr: f32,
        #[serde(default)]
        weight_decay: f32,
    },
}

/// Written by hand so that a config without weight decay prints as it did before the field
/// existed (`Adam { lr: 0.001 }`): a search records this text in its settings, and a resume must
/// match it, so searches started before keep resuming.
impl std::fmt::Debug for OptimizerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, lr, weight_decay) = match *self {
            OptimizerConfig::Adam { lr, weight_decay } => ("Adam", lr, weight_decay),
            OptimizerConfig::Sgd { lr, weight_decay } => ("Sgd", lr, weight_decay),
            OptimizerConfig::Adadelta { lr, rho, eps } => {
                return f.debug_struct("Adadelta").field("lr", &lr).field("rho", &rho).field("eps", &eps).finish()
            }
        };
        let mut s = f.debug_struct(name);
        s.field("lr", &lr);
        if weight_decay != 0.0 {
            s.field("weight_decay", &weight_decay);
        }
        s.finish()
    }
}

impl OptimizerConfig {
    /// Adam at learning rate `lr`, without weight decay.
    pub fn adam(lr: f32) -> OptimizerConfig {
        OptimizerConfig::Adam { lr, weight_decay: 0.0 }
    }

    /// Plain SGD at learning rate `lr`, without weight decay.
    pub fn sgd(lr: f32) -> OptimizerConfig {
        OptimizerConfig::Sgd { lr, weight_decay: 0.0 }
    }

    /// The same optimizer with its learning rate times `factor`, its weight decay kept (both
    /// optimizers apply the decay through the rate, so it scales too).
    pub fn scaled(&self, factor: f32) -> OptimizerConfig {
        match *self {
            OptimizerConfig::Adam { lr, weight_decay } => OptimizerConfig::Adam { lr: lr * factor, weight_decay },
            OptimizerConfig::Adadelta { lr, rho, eps } => OptimizerConfig::Adadelta { lr: lr * factor, rho, eps },
            OptimizerConfig::Sgd { lr, weight_decay } => OptimizerConfig::Sgd { lr: lr * factor, weight_decay },
        }
    }

    pub fn build(&self) -> Box<dyn Optimizer> {
        match *self {
            OptimizerConfig::Adam { lr, weight_decay } => Box::new(Adam::new(lr, 0.9, 0.999, 1e-7, weight_decay)),
            OptimizerConfig::Adadelta { lr, rho, eps } => Box::new(Adadelta::new(lr, rho, eps)),
            OptimizerConfig::Sgd { lr, weight_decay } => Box::new(Sgd::new(lr).with_weight_decay(weight_decay)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClassifierConfig {
    pub search_dir: PathBuf,
    /// Continue the search in `search_dir` instead of starting a new one.
    pub resume: bool,
    pub seed: u64,
    pub generators: Vec<Generator>,
    /// Images per training step; `None`: [`batch_size_for`] the training set's size (128 on
    /// large sets, fewer on small ones, so that an epoch holds enough steps).
    pub batch_size: Option<usize>,
    /// Epoch cap of the generators' models (trained from scratch).
    pub max_epochs: usize,
    /// Epoch cap of children, which start from their father's trained weights.
    pub child_epochs: usize,
    /// Early stopping on validation loss (AutoKeras: no decrease of 1e-4 for 5 epochs).
    pub patience: usize,
    pub min_delta: f64,
    pub optimizer: OptimizerConfig,
    /// Label smoothing of the training loss in the search and the final fit (see
    /// [`FitConfig::label_smoothing`]); models are still compared on the plain validation loss.
    pub label_smoothing: f32,
    /// The learning rate's course over each searched model's training: its epoch cap, or the
    /// epochs its time share holds. Cosine to a low floor ends each model in a settled minimum; at
    /// a constant 1e-3 every model of the 2-hour MNIST search was cut by its share while its
    /// validation accuracy still rose and jittered.
    pub lr_schedule: LrSchedule,
    /// `final_fit` continues from the searched weights with the learning rate times this. Measured
    /// (14x14 MNIST, 6,000 images, the best of a 5-minute search, 2,000 test images): the full
    /// 1e-3 of a fresh Adam first lost 1.2 points of test accuracy (0.957 to 0.945), 1e-4 kept or
    /// gained (0.959 after each of three epochs).
    pub final_lr_scale: f32,
    /// The learning rate's course over the final fit, whose epoch count is cut to what fits the
    /// deadline so the schedule ends where training does.
    pub final_lr_schedule: LrSchedule,
    /// Batch norm's running-statistics momentum in the generators' models. AutoKeras 0.3 ran on
    /// PyTorch, whose default update of 0.1 is a Keras momentum of 0.9; Keras's 0.99 needs hundreds
    /// of steps before evaluation-mode statistics mean anything, which a small data set or a
    /// model stopped after a few epochs does not have.
    pub bn_momentum: f32,
    /// Noise on the new weights of a morphism (relative), to break the symmetry of copied units.
    pub morph_noise: f32,
    /// Random-shift augmentation of the training batches, in the search and the final fit; `None`:
    /// [`RandomShift::for_image`] (2 pixels on MNIST). Validation never sees shifted images.
    pub shift: Option<RandomShift>,
    /// Random horizontal flips of the training images; `None`: on for colour images, off for one
    /// channel (digits and text, which a mirror changes), as [`Augmentation::for_image`].
    pub flip: Option<bool>,
    /// Random rotations of the training images, up to this many degrees either way (0: none; see
    /// [`Augmentation::rotation_degrees`]).
    pub rotation_degrees: f32,
    /// Random scaling of the training images by a factor in `[1 - scale, 1 + scale]` (0: none).
    pub scale: f32,
    /// Elastic distortion of the training images, control points moved by up to this many pixels
    /// (0: none; see [`Augmentation::elastic`]).
    pub elastic: f32,
    /// Cutout: a random square of this side, in pixels, of each training image set to zero (0: none).
    pub cutout: usize,
    /// Per-channel normalisation of the input, its statistics taken from the search's training
    /// split and kept in every model (so saved and exported models take plain pixels); `None`: on
    /// for colour images, off for one channel, where the MNIST figures were measured without it.
    pub normalize: Option<bool>,
    /// The classes' names, kept in every model (empty: unnamed).
    pub class_names: Vec<String>,
    /// Test-time augmentation of the served model: in evaluation, prediction and its exported ONNX
    /// it averages its outputs over these shifted copies of each image (see
    /// [`Graph::set_test_time_shifts`]); searched models are ranked and chosen without it. `None`:
    /// [`TestTimeShifts::Cross`] for images of 2 pixels or more a side, else none. Measured on
    /// MNIST's validation split (`examples/tta_ablation`), the five copies removed 10 to 16% of
    /// the errors of searched models.
    pub test_time_shifts: Option<Vec<[i32; 2]>>,
    /// Stop after this many models (tests), if set.
    pub max_models: Option<usize>,
    /// The most searched models averaged into the final model, chosen on the validation set
    /// ([`super::ensemble`]); 1: the best alone, as AutoKeras.
    pub ensemble_size: usize,
    /// The most of the search time left that one model may train for (see
    /// [`SearchConfig::model_share`]).
    pub model_share: f64,
    /// A child starts only with time for this many epochs (see [`SearchConfig::min_epochs`]).
    pub min_epochs: usize,
    /// Children below the median of the finished children after a few epochs stop, leaving their
    /// time to more proposals (see [`super::ranking`]); `None`: each trains its whole share.
    pub early_ranking: Option<EarlyRanking>,
    /// Candidates with more weights are not proposed.
    pub max_parameters: u64,
    pub bayesian: BayesianConfig,
    pub verbose: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            search_dir: PathBuf::from("autokeras-search"),
            resume: false,
            seed: 0,
            generators: vec![Generator::Cnn(CnnConfig::default())],
            batch_size: None,
            max_epochs: 40,
            child_epochs: 15,
            patience: 5,
            min_delta: 1e-4,
            optimizer: OptimizerConfig::adam(1e-3),
            label_smoothing: 0.0,
            lr_schedule: LrSchedule::Cosine { floor: 0.02 },
            final_lr_scale: 0.1,
            final_lr_schedule: LrSchedule::Cosine { floor: 0.02 },
            bn_momentum: 0.9,
            morph_noise: crate::morph::DEFAULT_NOISE,
            shift: None,
            flip: None,
            rotation_degrees: 0.0,
            scale: 0.0,
            elastic: 0.0,
            cutout: 0,
            normalize: None,
            class_names: vec![],
            test_time_shifts: None,
            max_models: None,
            ensemble_size: 4,
            model_share: 0.4,
            min_epochs: 3,
            early_ranking: Some(EarlyRanking::default()),
            max_parameters: DEFAULT_MAX_PARAMETERS,
            bayesian: BayesianConfig::default(),
            verbose: true,
        }
    }
}

impl ClassifierConfig {
    /// The augmentation of training images of `channels`x`height`x`width`: the shift and flip
    /// given or their defaults for such images ([`Augmentation::for_image`]), and the rest as set.
    pub fn augmentation_for(&self, channels: usize, height: usize, width: usize) -> Augmentation {
        let defaults = Augmentation::for_image(channels, height, width);
        Augmentation {
            shift: self.shift.unwrap_or(defaults.shift),
            flip: self.flip.unwrap_or(defaults.flip),
            rotation_degrees: self.rotation_degrees,
            scale: self.scale,
            elastic: self.elastic,
            cutout: self.cutout,
        }
    }

    /// The training batch on a set of `n` images (see [`batch_size`](Self::batch_size)).
    pub fn training_batch(&self, n: usize) -> Result<usize> {
        match self.batch_size {
            Some(0) => Err(Error::Invalid("batch size 0: a batch needs at least one image".into())),
            Some(batch) => Ok(batch),
            None => Ok(batch_size_for(n)),
        }
    }

    /// The batch of evaluation and prediction, which changes no result, only speed and memory.
    fn inference_batch(&self) -> usize {
        self.batch_size.unwrap_or(INFERENCE_BATCH).max(1)
    }

    /// [`augmentation_for`](Self::augmentation_for) `set`'s images, checked against their size.
    fn checked_augmentation(&self, set: &ImageSet) -> Result<Augmentation> {
        let augmentation = self.augmentation_for(set.channels, set.height, set.width);
        augmentation.check(set.height, set.width)?;
        Ok(augmentation)
    }

    /// The test-time shifts of a served model taking images `[c, h, w]` (see
    /// [`test_time_shifts`](Self::test_time_shifts)).
    pub fn test_time_shifts_for(&self, image_shape: &[usize]) -> Vec<[i32; 2]> {
        match (&self.test_time_shifts, image_shape) {
            (Some(shifts), _) => shifts.clone(),
            (None, &[_, h, w]) if h >= 2 && w >= 2 => TestTimeShifts::Cross.shifts(),
            (None, _) => vec![],
        }
    }

    /// [`test_time_shifts_for`](Self::test_time_shifts_for) `set`'s images, checked against their
    /// size, so that shifts that cannot apply fail before anything trains.
    pub fn checked_test_time_shifts(&self, set: &ImageSet) -> Result<Vec<[i32; 2]>> {
        let shifts = self.test_time_shifts_for(&set.image_shape());
        Graph::new(&set.image_shape()).set_test_time_shifts(shifts.clone())?;
        Ok(shifts)
    }

    /// The input normalisation of models trained on `train`, if [`normalize`](Self::normalize)
    /// asks for one.
    fn normalization_for(&self, train: &ImageSet) -> Option<ChannelNorm> {
        self.normalize
            .unwrap_or(train.channels >= 3)
            .then(|| ChannelNorm::of_images(&train.images, train.channels, train.height * train.width, PIXEL_SCALE))
    }
}

/// The validation split's size for `n` training images: a sixth, at most 10,000 (see the module
/// notes), and at least one image when there are two or more.
pub fn validation_size(n: usize) -> usize {
    if n < 2 {
        return 0;
    }
    (n / 6).clamp(1, 10_000)
}

/// The batch of evaluation and prediction when no training batch is set.
const INFERENCE_BATCH: usize = 128;

/// Fewest optimizer steps an epoch should hold. On 2,000 MNIST images (1,667 after the
/// validation split) an epoch at batch 128 is 13 steps: the search's 32-wide CNN reached 0.880
/// validation accuracy after 25 epochs at batch 128 and 0.967 at batch 32, in 1.4 times the time
/// (`augment_ablation --train-limit 2000 --epochs 25 --width 32`, shifts of 2 pixels, seed 1).
pub const MIN_STEPS_PER_EPOCH: usize = 50;

/// The batch size for `n` training images (the validation split included) when none is given:
/// 128 (Keras's MNIST batch) where an epoch holds [`MIN_STEPS_PER_EPOCH`] steps of it, else the
/// largest power of two that gives that many, but at least 16.
pub fn batch_size_for(n: usize) -> usize {
    let per_step = n.saturating_sub(validation_size(n)) / MIN_STEPS_PER_EPOCH;
    let mut batch = 128;
    while batch > 16 && batch > per_step {
        batch /= 2;
    }
    batch
}

/// What a search was started with: a resume, or another worker of the study, must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    input: [usize; 3],
    classes: usize,
    train_images: usize,
    validation_images: usize,
    seed: u64,
    /// The generators, their widths included.
    generators: String,
    /// The optimizer and its learning rate.
    optimizer: String,
    batch_size: usize,
}

/// Splits `set` by a seeded shuffle: (training, validation of `n_val` images).
pub fn shuffled_split(set: &ImageSet, n_val: usize, seed: u64) -> Result<(ImageSet, ImageSet)> {
    if n_val > set.n {
        return Err(Error::Invalid(format!("cannot hold out {n_val} validation images from a set of {}", set.n)));
    }
    let mut order: Vec<usize> = (0..set.n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5EED_5B11));
    let pick = |idx: &[usize]| {
        let mut images = Vec::with_capacity(idx.len() * set.image_len());
        for &i in idx {
            images.extend_from_slice(set.image(i));
        }
        ImageSet { images, labels: idx.iter().map(|&i| set.labels[i]).collect(), n: idx.len(), ..*set }
    };
    Ok((pick(&order[n_val..]), pick(&order[..n_val])))
}

/// Images used to calibrate the batch norms a morphism adds.
const CALIBRATION_IMAGES: usize = 64;

/// Makes the batch norms `new` (just inserted by a deeper morphism, as the identity on fresh
/// statistics: mean 0, variance 1) the identity on the statistics of the data: their running
/// mean and variance become those of their input on the images `x` (`n` of them), and gamma and
/// beta undo the normalisation. The child computes the same function in evaluation mode as before,
/// and now nearly the same in training mode too, where batch statistics replace the running ones:
/// without this a deeper child first normalises activations of any scale and loses most of what
/// it inherited (measured: validation accuracy from 0.95 to 0.43 after one epoch, 0.95 again only
/// after five).
pub fn calibrate_batch_norms(graph: &mut Graph, new: &[LayerId], x: &[f64], n: usize) -> Result<()> {
    if new.is_empty() || n == 0 {
        return Ok(());
    }
    let acts = graph.forward_cpu_all(x, n)?;
    for &id in new {
        let layer = graph.layer(id);
        let eps = match layer.op {
            Op::BatchNorm { eps, .. } => eps as f64,
            _ => continue,
        };
        let input = &acts[&layer.inputs[0]];
        let channels = input.shape[1];
        let inner: usize = input.shape[2..].iter().product();
        let count = (input.shape[0] * inner) as f64;
        let mut mean = vec![0.0f64; channels];
        let mut sq = vec![0.0f64; channels];
        for (i, v) in input.data.iter().enumerate() {
            let c = (i / inner) % channels;
            mean[c] += v;
            sq[c] += v * v;
        }
        let layer = graph.layer_mut(id);
        for c in 0..channels {
            let m = mean[c] / count;
            let var = (sq[c] / count - m * m).max(0.0);
            layer.param_mut("running_mean").data[c] = m as f32;
            layer.param_mut("running_var").data[c] = var as f32;
            layer.param_mut("gamma").data[c] = (var + eps).sqrt() as f32;
            layer.param_mut("beta").data[c] = m as f32;
        }
    }
    Ok(())
}

/// Trains graphs on the device for the search loop.
struct GraphTrainer<'a> {
    device: &'a Device,
    train: DeviceDataset,
    val: DeviceDataset,
    /// A few training images for [`calibrate_batch_norms`], as f64 `[n, c, h, w]`.
    calibration: (Vec<f64>, usize),
    config: &'a ClassifierConfig,
    batch_size: usize,
}

impl GraphTrainer<'_> {
    fn model_graph(&self, job: &Job<Architecture, DescribedMorph>, store: &dyn Store) -> Result<Graph> {
        let seed = self.config.seed ^ (job.id as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
        match job.father {
            None => job.arch.instantiate(seed),
            Some(father) => {
                let trained = load_model(store, father)?;
                let mut rng = StdRng::seed_from_u64(seed);
                let mut graph = GraphSpace::replay(&trained, &job.ops, self.config.morph_noise, &mut rng)?;
                check_same(&graph, &job.arch)?;
                let new_norms: Vec<LayerId> = graph
                    .layers()
                    .iter()
                    .filter(|l| matches!(l.op, Op::BatchNorm { .. }) && !trained.contains(l.id))
                    .map(|l| l.id)
                    .collect();
                calibrate_batch_norms(&mut graph, &new_norms, &self.calibration.0, self.calibration.1)?;
                Ok(graph)
            }
        }
    }
}

impl Trainer<GraphSpace> for GraphTrainer<'_> {
    fn train(
        &mut self,
        job: &Job<Architecture, DescribedMorph>,
        store: &dyn Store,
        deadline: Instant,
        stop_rule: Option<StopRule>,
    ) -> Result<Trained> {
        let start = Instant::now();
        let mut graph = self.model_graph(job, store)?;
        let epochs = if job.father.is_some() { self.config.child_epochs } else { self.config.max_epochs };
        let trained = (|| {
            let model = Model::new(&graph, self.device)?;
            let mut optimizer = self.config.optimizer.build();
            let fit = FitConfig {
                epochs,
                batch_size: self.batch_size,
                seed: self.config.seed ^ job.id as u64,
                verbose: self.config.verbose,
                log_every: 50,
                early_stopping: Some(EarlyStopping { patience: self.config.patience, min_delta: self.config.min_delta }),
                deadline: Some(deadline),
                // The search compares models at their best epoch, and children inherit it.
                restore_best: true,
                lr_schedule: self.config.lr_schedule,
                augmentation: self.config.augmentation_for(self.train.channels, self.train.height, self.train.width),
                label_smoothing: self.config.label_smoothing,
                stop_rule,
            };
            let history = train::fit(&model, optimizer.as_mut(), &self.train, Some(&self.val), &fit)?;
            model.sync_to_graph(&mut graph)?;
            Ok(history)
        })();
        // The next model has other shapes: free this one's pooled buffers, whether it trained or
        // failed (a failed model's buffers must not be handed to the next).
        self.device.trim_pool();
        let history = trained?;
        let model = model_blob(&graph)?;
        let last = history.final_epoch().ok_or_else(|| Error::Other("training ran no epoch".into()))?;
        Ok(Trained {
            epochs: history.epochs.len(),
            seconds: start.elapsed().as_secs_f64(),
            val_loss: last.val_loss.unwrap_or(f64::NAN),
            val_accuracy: last.val_accuracy.unwrap_or(f64::NAN),
            stopped: history.stopped_early,
            curve: history.epochs,
            model,
        })
    }
}

/// A trained graph as the store keeps it.
fn model_blob(graph: &Graph) -> Result<ModelBlob> {
    graph.validate()?;
    Ok(ModelBlob { graph: graph.to_json(), weights: graph.weights_to_safetensors()? })
}

/// Writes a model's architecture and weights, each atomically.
fn write_graph(graph: &Graph, json: &Path, weights: &Path) -> Result<()> {
    let blob = model_blob(graph)?;
    write_atomic(weights, &blob.weights)?;
    write_atomic(json, blob.graph.as_bytes())
}

/// A stored model, with its weights.
pub fn load_model(store: &dyn Store, id: usize) -> Result<Graph> {
    let blob = store.load_model(id)?;
    let mut graph = Graph::from_json(&blob.graph).map_err(|e| Error::Store(format!("{}: model {id}: {e}", store.name())))?;
    graph.load_weights(&blob.weights).map_err(|e| Error::Store(format!("{}: model {id}'s weights: {e}", store.name())))?;
    Ok(graph)
}

/// Mixed into the seed for the final fit's fresh initialisation and batch order, so that neither
/// repeats the search's.
const FINAL_FIT_SEED: u64 = 0xF1A1;

/// What [`ImageClassifier::final_fit`] trains on the whole training set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalFit {
    /// The best model, from its searched weights, at the learning rate times `final_lr_scale`.
    Continue,
    /// A fresh copy of the best architecture, at the full learning rate, which replaces the best.
    Retrain,
    /// A fresh copy of the best architecture, at the full learning rate, which joins the ensemble
    /// as one more member: its own initialisation makes its errors less like the searched models'
    /// (children share their fathers' weights), which is what averaging needs.
    NewMember,
    /// `NewMember` where the final fit has time for at least [`MEMBER_MIN_EPOCHS`] epochs, else
    /// `Continue`: a fresh copy given fewer is a weaker member than the models it joins.
    Auto,
}

/// The fewest final-fit epochs for which [`FinalFit::Auto`] trains a new member. Measured by
/// `examples/final_fit_ablation` (final fits on the search's training split, judged on its
/// validation split, MNIST, seed 1; validation accuracy and loss):
///
/// | search | epochs | + new member | best continued |
/// |---|---|---|---|
/// | 15 minutes | 3 | 0.9782 (0.0700) | **0.9798** (0.0664) |
/// | 30 minutes, another run | 5 | 0.9884 (0.0401) | **0.9887** (0.0392) |
/// | 1 hour | 6 | **0.9932** (0.0278) | 0.9931 (0.0296) |
/// | 30 minutes | 13 | **0.9857** (0.0488) | 0.9838 (0.0529) |
///
/// The threshold lies between 5 and 6 (near it the two are within a few images). A rule on the
/// share of the epochs that trained the best model's weights (the one before) fits the 15-minute
/// and the last rows but not the 1-hour one, where 6 epochs were 0.22 of the best's 27 and a
/// member still did better.
pub const MEMBER_MIN_EPOCHS: usize = 6;

/// The widths [`ImageClassifier::generator_width`] chooses from: AutoKeras's 64 and narrower ones
/// for slower adapters.
pub const AUTO_WIDTHS: [usize; 5] = [64, 48, 32, 24, 16];

/// Epochs the first model should have time for when the generator's width is chosen by timing.
pub const AUTO_WIDTH_EPOCHS: usize = 10;

/// Searched models the selection may average, the best first: more would add little (each later
/// one is a worse model) and cost one pass over the validation set each.
const ENSEMBLE_CANDIDATES: usize = 8;

/// Image classification by architecture search.
pub struct ImageClassifier {
    device: Device,
    config: ClassifierConfig,
    /// The best model found (or final-fitted), with its weights.
    best: Option<Graph>,
    /// The models averaged with `best`: searched ones the selection chose, and a final fit's
    /// [`FinalFit::NewMember`] (empty: `best` alone).
    partners: Vec<Graph>,
    /// What `evaluate`, `predict` and `export` use: `best`, or `best` and `partners` as one graph.
    served: Option<Graph>,
    /// The selection's rounds, members named by model id (empty without a search).
    ensemble: Vec<SelectionStep>,
    search: Option<SearchResult<Architecture>>,
    /// What the last final fit trained ([`FinalFit::Auto`] resolved).
    final_fit_kind: Option<FinalFit>,
}

impl ImageClassifier {
    pub fn new(device: &Device, config: ClassifierConfig) -> ImageClassifier {
        ImageClassifier {
            device: device.clone(),
            config,
            best: None,
            partners: vec![],
            served: None,
            ensemble: vec![],
            search: None,
            final_fit_kind: None,
        }
    }

    /// A classifier around an exported model (no search).
    pub fn load(device: &Device, json: &Path, weights: &Path) -> Result<ImageClassifier> {
        ImageClassifier::from_graph(device, Graph::load(json, weights)?)
    }

    /// A classifier around a trained graph (no search), serving it with its own test-time shifts.
    pub fn from_graph(device: &Device, graph: Graph) -> Result<ImageClassifier> {
        let config = ClassifierConfig { test_time_shifts: Some(graph.test_time_shifts().to_vec()), ..Default::default() };
        let mut classifier = ImageClassifier::new(device, config);
        classifier.set_models(graph, vec![])?;
        Ok(classifier)
    }

    /// A classifier around a given architecture (its weights, if any, are replaced): freshly
    /// initialised, with the input normalisation and class names of `config` for `train`. Train
    /// it with [`final_fit`](Self::final_fit) and [`FinalFit::Retrain`].
    pub fn from_architecture(device: &Device, config: ClassifierConfig, architecture: &Graph, train: &ImageSet) -> Result<ImageClassifier> {
        let mut graph = architecture.without_weights();
        graph.validate_architecture()?;
        if graph.input_shape() != train.image_shape() {
            return Err(Error::shape(
                "architecture",
                format!("takes images {:?} but the data's are {:?}", graph.input_shape(), train.image_shape()),
            ));
        }
        let outputs = graph.shape_of(graph.output().id)?;
        if outputs != [train.classes] {
            return Err(Error::shape("architecture", format!("gives outputs {outputs:?} but the data has {} classes", train.classes)));
        }
        config.checked_augmentation(train)?;
        config.checked_test_time_shifts(train)?;
        graph.set_input_normalization(config.normalization_for(train))?;
        graph.set_class_names(config.class_names.clone())?;
        graph.init_weights(config.seed)?;
        let mut classifier = ImageClassifier::new(device, config);
        classifier.set_models(graph, vec![])?;
        Ok(classifier)
    }

    /// Makes `best` and `partners` the classifier's models, served with the configuration's
    /// test-time shifts (the members themselves evaluate plain images).
    fn set_models(&mut self, best: Graph, partners: Vec<Graph>) -> Result<()> {
        let mut members = vec![best];
        members.extend(partners);
        for member in &mut members {
            member.set_test_time_shifts(vec![])?;
        }
        let mut served = average_logits(&members)?;
        served.set_test_time_shifts(self.config.test_time_shifts_for(served.input_shape()))?;
        self.served = Some(served);
        self.best = Some(members.remove(0));
        self.partners = members;
        Ok(())
    }

    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// Searches for `time_limit` in the search directory of the configuration (`search_dir`,
    /// `resume`), then chooses the ensemble: see [`fit_with`](Self::fit_with).
    pub fn fit(&mut self, train: &ImageSet, time_limit: Duration) -> Result<&SearchResult<Architecture>> {
        let store = SearchDir::open(&self.config.search_dir, self.config.resume, &super::store::worker_name(&self.device.name()))?;
        self.fit_with(&store, train, time_limit)?;
        Ok(self.search.as_ref().expect("a search directory's one worker runs the final step"))
    }

    /// Searches for `time_limit` with `store`: the search never runs past it by more than one epoch
    /// of the model in training, and keeps the best model so far. Then, on the one worker of the
    /// study that claims it, chooses the ensemble on the validation set and stores the choice;
    /// `None` on the other workers, whose part ends with the search. The final step is the
    /// study's until something is stored under [`super::store::FINAL_OUTCOME`] (as
    /// `cli::search::run_search` does after the final fit).
    pub fn fit_with(&mut self, store: &dyn Store, train: &ImageSet, time_limit: Duration) -> Result<Option<&SearchResult<Architecture>>> {
        let start = Instant::now();
        let cfg = &self.config;
        if train.n < 2 {
            return Err(Error::Invalid(format!("fit needs at least two training images, got {}", train.n)));
        }
        if let Some(ranking) = &cfg.early_ranking {
            ranking.check()?;
        }
        // Before anything is stored: every model's fit would refuse it.
        cfg.checked_augmentation(train)?;
        cfg.checked_test_time_shifts(train)?;
        let batch_size = cfg.training_batch(train.n)?;
        let n_val = validation_size(train.n);
        let settings = Settings {
            input: train.image_shape(),
            classes: train.classes,
            train_images: train.n,
            validation_images: n_val,
            seed: cfg.seed,
            generators: format!("{:?}", cfg.generators),
            optimizer: format!("{:?}", cfg.optimizer),
            batch_size,
        };
        check_settings(store, &settings)?;
        let (search_train, val) = shuffled_split(train, n_val, cfg.seed)?;
        if cfg.verbose {
            println!(
                "Searching on {} images ({}x{}x{}, {} classes) in batches of {}, validating on {} held-out training images; time limit {}",
                search_train.n,
                train.channels,
                train.height,
                train.width,
                train.classes,
                batch_size,
                val.n,
                super::duration::format_duration(time_limit)
            );
        }
        let input = train.image_shape();
        let normalization = cfg.normalization_for(&search_train);
        let generators: Vec<Architecture> = cfg
            .generators
            .iter()
            .map(|g| {
                let mut graph = g.build(&input, train.classes, cfg.seed, cfg.bn_momentum)?;
                graph.set_input_normalization(normalization.clone())?;
                graph.set_class_names(cfg.class_names.clone())?;
                Ok(Architecture::of(&graph))
            })
            .collect::<Result<_>>()?;
        let calibration_count = CALIBRATION_IMAGES.min(search_train.n);
        let indices: Vec<u32> = (0..calibration_count as u32).collect();
        let calibration = (search_train.gather_f32(&indices).into_iter().map(f64::from).collect(), calibration_count);
        let mut trainer = GraphTrainer {
            device: &self.device,
            calibration,
            train: DeviceDataset::new(&self.device, &search_train)?,
            val: DeviceDataset::new(&self.device, &val)?,
            config: cfg,
            batch_size,
        };
        let space = GraphSpace { batch_size, max_parameters: cfg.max_parameters };
        let search_config = SearchConfig {
            time_limit: time_limit.saturating_sub(start.elapsed()),
            seed: cfg.seed,
            max_models: cfg.max_models,
            model_share: cfg.model_share,
            min_epochs: cfg.min_epochs,
            early_ranking: cfg.early_ranking,
            bayesian: cfg.bayesian.clone(),
            verbose: cfg.verbose,
        };
        let ended_by = search(space, generators, &mut trainer, store, &search_config)?.ended_by;
        if !store.claim_final()? {
            if cfg.verbose {
                println!("Another worker of {} chooses the ensemble and runs the final fit", store.name());
            }
            return Ok(None);
        }
        wait_for_other_workers(store, cfg.verbose)?;
        // With the last results of the study's other workers.
        let result = study_result(store, ended_by, Duration::ZERO, Duration::ZERO, false)?;
        let (steps, mut members) = self.select_ensemble(&result, store, &trainer.val, &val)?;
        drop(trainer);
        self.device.trim_pool();
        let choice = serde_json::to_value(&steps).map_err(|e| Error::Other(format!("ensemble: {e}")))?;
        store.put("ensemble", &choice)?;
        let best = members.remove(0);
        self.set_models(best, members)?;
        self.ensemble = steps;
        Ok(Some(self.search.insert(result)))
    }

    /// Chooses which searched models to average with the best (see [`super::ensemble`]): the
    /// selection's rounds, members named by model id, and the chosen models, the best first.
    fn select_ensemble(
        &self,
        result: &SearchResult<Architecture>,
        store: &dyn Store,
        val_data: &DeviceDataset,
        val: &ImageSet,
    ) -> Result<(Vec<SelectionStep>, Vec<Graph>)> {
        let best = result.best_record();
        let mut others: Vec<&ModelRecord<Architecture>> = result.records.iter().filter(|r| r.finished() && r.id != best.id).collect();
        others.sort_by(|a, b| b.better_than(a).cmp(&a.better_than(b)));
        let candidates: Vec<&ModelRecord<Architecture>> = std::iter::once(best).chain(others).take(ENSEMBLE_CANDIDATES).collect();
        let graphs: Vec<Graph> = candidates.iter().map(|r| load_model(store, r.id)).collect::<Result<_>>()?;
        let (val_loss, val_accuracy) = (best.val_loss.unwrap_or(f64::NAN), best.val_accuracy.unwrap_or(f64::NAN));
        let alone = vec![SelectionStep { members: vec![best.id], val_loss, val_accuracy }];
        if self.config.ensemble_size <= 1 || graphs.len() < 2 {
            return Ok((alone, graphs.into_iter().take(1).collect()));
        }
        let mut logits = Vec::with_capacity(graphs.len());
        for graph in &graphs {
            let model = Model::new(graph, &self.device)?;
            logits.push(train::logits(&model, val_data, self.config.inference_batch())?);
        }
        self.device.trim_pool();
        let mut steps = select_members(&logits, &val.labels, val.classes, self.config.ensemble_size);
        let chosen = steps.last().map(|s| s.members.clone()).unwrap_or_default();
        for step in &mut steps {
            step.members = step.members.iter().map(|&c| candidates[c].id).collect();
            if self.config.verbose {
                println!("Ensemble of models {:?}: val loss {:.4}, val accuracy {:.4}", step.members, step.val_loss, step.val_accuracy);
            }
        }
        let mut graphs: Vec<Option<Graph>> = graphs.into_iter().map(Some).collect();
        Ok((steps, chosen.iter().map(|&c| graphs[c].take().expect("each member once")).collect()))
    }

    /// The selection's rounds after `fit`, members named by model id, the chosen ensemble last
    /// (written to `ensemble.json` in the search directory).
    pub fn ensemble(&self) -> &[SelectionStep] {
        &self.ensemble
    }

    /// The search's records (after `fit`).
    pub fn search_result(&self) -> Option<&SearchResult<Architecture>> {
        self.search.as_ref()
    }

    /// The best model's graph, with its weights.
    pub fn best_graph(&self) -> Option<&Graph> {
        self.best.as_ref()
    }

    /// What `evaluate`, `predict` and `export` use: the best model, averaged with its ensemble
    /// partners when the selection chose any.
    pub fn model_graph(&self) -> Option<&Graph> {
        self.served.as_ref()
    }

    fn best(&self) -> Result<&Graph> {
        self.best.as_ref().ok_or_else(|| Error::Invalid("no model yet: call fit (or load an exported model) first".into()))
    }

    fn served(&self) -> Result<&Graph> {
        self.best()?;
        Ok(self.served.as_ref().expect("set with the best"))
    }

    fn check_images(&self, set: &ImageSet, what: &str) -> Result<()> {
        let graph = self.best()?;
        if graph.input_shape() != set.image_shape() {
            return Err(Error::Invalid(format!(
                "{what}: images are {:?} but the model takes {:?}",
                set.image_shape(),
                graph.input_shape()
            )));
        }
        Ok(())
    }

    /// Trains on all of `train` (no validation data: nothing of a test set is used) for `epochs`,
    /// as `kind` says: the best model from its searched weights, or a fresh copy of its
    /// architecture (see [`FinalFit`]). With a `deadline`, no epoch starts that would end after it.
    pub fn final_fit(&mut self, train: &ImageSet, epochs: usize, kind: FinalFit, deadline: Option<Instant>) -> Result<History> {
        self.check_images(train, "final_fit")?;
        let mut epochs = epochs;
        if let (Some(deadline), Some(per_epoch)) = (deadline, self.final_epoch_estimate(train.n)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if per_epoch > left {
                let why = format!("one epoch takes about {:.0}s, {:.0}s are left", per_epoch.as_secs_f64(), left.as_secs_f64());
                if self.config.verbose {
                    println!("No final fit: {why}; the searched weights stay");
                }
                return Ok(History { stopped_early: Some(format!("time limit: {why}")), ..History::default() });
            }
            // The schedule spans the epochs that fit, so its low rates are not cut off.
            let fit = (left.as_secs_f64() / per_epoch.as_secs_f64()).floor() as usize;
            if fit < epochs && self.config.verbose {
                println!("Final fit: {fit} epochs fit in the {:.0}s left (about {:.0}s each)", left.as_secs_f64(), per_epoch.as_secs_f64());
            }
            epochs = epochs.min(fit);
        }
        let kind = match kind {
            FinalFit::Auto => self.auto_final_fit(epochs)?,
            kind => kind,
        };
        self.final_fit_kind = Some(kind);
        let (mut graph, optimizer) = match kind {
            FinalFit::Continue => (self.best()?.clone(), self.config.optimizer.scaled(self.config.final_lr_scale)),
            // (Auto is resolved above.)
            FinalFit::Retrain | FinalFit::NewMember | FinalFit::Auto => {
                (Architecture::of(self.best()?).instantiate(self.config.seed ^ FINAL_FIT_SEED)?, self.config.optimizer)
            }
        };
        let data = DeviceDataset::new(&self.device, train)?;
        let model = Model::new(&graph, &self.device)?;
        let mut optimizer = optimizer.build();
        let fit = FitConfig {
            epochs,
            batch_size: self.config.training_batch(train.n)?,
            seed: self.config.seed ^ FINAL_FIT_SEED,
            verbose: self.config.verbose,
            log_every: 50,
            early_stopping: None,
            deadline,
            restore_best: false,
            lr_schedule: self.config.final_lr_schedule,
            augmentation: self.config.checked_augmentation(train)?,
            label_smoothing: self.config.label_smoothing,
            stop_rule: None,
        };
        let history = train::fit(&model, optimizer.as_mut(), &data, None, &fit)?;
        model.sync_to_graph(&mut graph)?;
        drop(model);
        self.device.trim_pool();
        let mut partners = std::mem::take(&mut self.partners);
        let best = match kind {
            FinalFit::Continue | FinalFit::Retrain | FinalFit::Auto => graph,
            FinalFit::NewMember => {
                partners.push(graph);
                self.best.take().expect("checked above")
            }
        };
        self.set_models(best, partners)?;
        Ok(history)
    }

    /// [`FinalFit::Auto`] for a final fit of `epochs`.
    fn auto_final_fit(&self, epochs: usize) -> Result<FinalFit> {
        let search = self.search.as_ref().ok_or_else(|| {
            Error::Invalid(
                "final_fit: Auto chooses between continuing the searched best and a new member, and there was no search: choose Continue, Retrain or NewMember"
                    .into(),
            )
        })?;
        let trained = search.lineage_epochs(search.best);
        let kind = if epochs >= MEMBER_MIN_EPOCHS { FinalFit::NewMember } else { FinalFit::Continue };
        if self.config.verbose {
            let why = if kind == FinalFit::NewMember { "at least" } else { "below" };
            println!(
                "Final fit: {kind:?}, since its {epochs} epochs are {why} {MEMBER_MIN_EPOCHS} (the best model's weights trained {trained}, its fathers' included)"
            );
        }
        Ok(kind)
    }

    /// What the last [`final_fit`](Self::final_fit) trained ([`FinalFit::Auto`] resolved).
    pub fn final_fit_kind(&self) -> Option<FinalFit> {
        self.final_fit_kind
    }

    /// The widest of `widths` (AutoKeras's CNN generator otherwise as configured) whose model can
    /// train `epochs` epochs on `train` within `budget`, judged by timing a few training steps of
    /// each; the narrowest when none can. On a fast GPU this is the widest; on a CPU adapter it
    /// keeps a short search from spending its whole time on one wide model.
    pub fn affordable_cnn_width(
        &self,
        train: &ImageSet,
        base: &CnnConfig,
        widths: &[usize],
        epochs: usize,
        budget: Duration,
    ) -> Result<usize> {
        let narrowest = *widths.iter().min().ok_or_else(|| Error::Invalid("affordable_cnn_width: no widths to choose from".into()))?;
        let mut sorted = widths.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for width in sorted {
            let generator = Generator::Cnn(CnnConfig { width, ..base.clone() });
            let per_epoch = self.epoch_estimate(&generator, train)?;
            let fits = per_epoch * epochs as u32 <= budget;
            if self.config.verbose {
                println!(
                    "Generator width {width}: about {:.0}s per epoch, {} epochs {} in {:.0}s",
                    per_epoch.as_secs_f64(),
                    epochs,
                    if fits { "fit" } else { "do not fit" },
                    budget.as_secs_f64()
                );
            }
            if fits {
                return Ok(width);
            }
        }
        Ok(narrowest)
    }

    /// One search epoch of `generator`'s model on `train` (less the validation split, which is
    /// evaluated once per epoch), from the time of a few training steps after two untimed ones
    /// that compile the kernels. An evaluation step is counted as a third of a training step.
    fn epoch_estimate(&self, generator: &Generator, train: &ImageSet) -> Result<Duration> {
        const TIMED_STEPS: u32 = 3;
        let cfg = &self.config;
        let graph = generator.build(&train.image_shape(), train.classes, cfg.seed, cfg.bn_momentum)?;
        let model = Model::new(&graph, &self.device)?;
        let mut optimizer = cfg.optimizer.build();
        let batch = cfg.training_batch(train.n)?.min(train.n);
        let data = DeviceDataset::new(&self.device, &train.take(batch))?;
        let indices: Vec<u32> = (0..batch as u32).collect();
        let correct = crate::tensor::Tensor::zeros(&self.device, &[1])?;
        let mut step = |seed| -> Result<()> {
            let (x, y) = data.batch(&indices)?;
            train::train_step_smoothed(&model, optimizer.as_mut(), x, y, seed, &correct, cfg.label_smoothing)?;
            self.device.sync()
        };
        step(0)?;
        step(1)?;
        let start = Instant::now();
        for seed in 0..TIMED_STEPS {
            step(2 + seed as u64)?;
        }
        let per_step = start.elapsed() / TIMED_STEPS;
        drop(model);
        self.device.trim_pool();
        let n_val = validation_size(train.n);
        let steps = (train.n - n_val).div_ceil(batch) as f64 + n_val.div_ceil(batch) as f64 / 3.0;
        Ok(per_step.mul_f64(steps))
    }

    /// How long one epoch of the best model on `n` images should take, from its search record
    /// (which trained on fewer images and validated after each epoch).
    fn final_epoch_estimate(&self, n: usize) -> Option<Duration> {
        let search = self.search.as_ref()?;
        let best = search.best_record();
        let settings_n = n.saturating_sub(validation_size(n)).max(1);
        (best.epochs > 0).then(|| Duration::from_secs_f64(best.seconds / best.epochs as f64 * n as f64 / settings_n as f64))
    }

    /// Loss and accuracy of the model (the best with its ensemble partners) on `test`.
    pub fn evaluate(&self, test: &ImageSet) -> Result<Evaluation> {
        self.check_images(test, "evaluate")?;
        let model = Model::new(self.served()?, &self.device)?;
        train::evaluate(&model, &DeviceDataset::new(&self.device, test)?, self.config.inference_batch())
    }

    /// The predicted class of each image (the set's labels are ignored).
    pub fn predict(&self, images: &ImageSet) -> Result<Vec<usize>> {
        Ok(self.probabilities(images)?.iter().map(|p| p.iter().enumerate().fold(0, |b, (i, v)| if *v > p[b] { i } else { b })).collect())
    }

    /// Each image's class probabilities (the softmax of the model's logits).
    pub fn probabilities(&self, images: &ImageSet) -> Result<Vec<Vec<f32>>> {
        self.check_images(images, "predict")?;
        let model = Model::new(self.served()?, &self.device)?;
        let logits = train::logits(&model, &DeviceDataset::new(&self.device, images)?, self.config.inference_batch())?;
        let classes = logits.len() / images.n.max(1);
        Ok(logits
            .chunks(classes.max(1))
            .map(|row| {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let exp: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
                let sum: f32 = exp.iter().sum();
                exp.iter().map(|e| e / sum).collect()
            })
            .collect())
    }

    /// The CNN generator's width for a search in `store`: the one the search started with, else
    /// `choice` where it is a number, else the widest of [`AUTO_WIDTHS`] whose first model can
    /// train [`AUTO_WIDTH_EPOCHS`] epochs within `budget` on this adapter (see
    /// [`affordable_cnn_width`](Self::affordable_cnn_width)). The first worker's width is the
    /// study's; a `choice` that differs from the stored width is an error that names both.
    pub fn generator_width(
        &self,
        store: &dyn Store,
        train: &ImageSet,
        base: &CnnConfig,
        choice: Option<usize>,
        budget: Duration,
    ) -> Result<usize> {
        if choice == Some(0) {
            return Err(Error::Invalid("the generator's width must be at least 1".into()));
        }
        const KEY: &str = "generator_width";
        let parse = |value: serde_json::Value| {
            value
                .as_u64()
                .filter(|&w| w > 0)
                .map(|w| w as usize)
                .ok_or_else(|| Error::Store(format!("{}: the stored generator width `{value}` is not a width", store.name())))
        };
        let stored = store.get(KEY)?.map(parse).transpose()?;
        let width = match (stored, choice) {
            (Some(stored), Some(width)) if stored != width => {
                return Err(Error::Invalid(format!(
                    "{} was started with --width {stored}, and this run asks for --width {width}: give --width {stored} or auto, or start another search",
                    store.name()
                )))
            }
            (Some(stored), _) => return Ok(stored),
            (None, Some(width)) => width,
            (None, None) => self.affordable_cnn_width(train, base, &AUTO_WIDTHS, AUTO_WIDTH_EPOCHS, budget)?,
        };
        // Two workers that chose at once: the first stored is the study's.
        let kept = parse(store.put_if_absent(KEY, &serde_json::json!(width))?)?;
        if choice.is_some_and(|c| c != kept) {
            return Err(Error::Invalid(format!(
                "{} was started with --width {kept}, and this run asks for --width {width}: give --width {kept} or auto",
                store.name()
            )));
        }
        Ok(kept)
    }

    /// Writes the model (the best with its ensemble partners, as one graph): architecture JSON and
    /// safetensors weights, loadable with [`ImageClassifier::load`] or `Graph::load`.
    pub fn export(&self, json: &Path, weights: &Path) -> Result<()> {
        write_graph(self.served()?, json, weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_batch_norms_keep_the_function_and_learn_the_statistics() {
        use crate::morph::{self, DeeperKind, Morph};
        let father = Graph::cnn(&[2, 8, 8], 5, &CnnConfig { blocks: 2, width: 6, dense: 8, ..Default::default() }, 4).unwrap();
        // After the first conv: its output has a scale and offset far from mean 0, variance 1.
        let conv = father.layers().iter().find(|l| matches!(l.op, Op::Conv2d { .. })).unwrap().id;
        let deeper = Morph::Deeper { after: conv, kind: DeeperKind::Conv { kernel: 3 } };
        let mut child = morph::apply(&father, &deeper, &mut StdRng::seed_from_u64(1)).unwrap();
        let new: Vec<LayerId> =
            child.layers().iter().filter(|l| matches!(l.op, Op::BatchNorm { .. }) && !father.contains(l.id)).map(|l| l.id).collect();
        assert_eq!(new.len(), 1);
        let mut rng = StdRng::seed_from_u64(2);
        let n = 6;
        let x: Vec<f64> = (0..n * 2 * 64).map(|_| rand::Rng::random_range(&mut rng, 0.0..3.0)).collect();
        calibrate_batch_norms(&mut child, &new, &x, n).unwrap();
        let (want, got) = (father.forward_cpu(&x, n).unwrap(), child.forward_cpu(&x, n).unwrap());
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "output changed: {a} vs {b}");
        }
        let acts = child.forward_cpu_all(&x, n).unwrap();
        let bn = child.layer(new[0]);
        let input = &acts[&bn.inputs[0]];
        let inner = input.shape[2] * input.shape[3];
        let mean0: f64 = (0..n).flat_map(|i| input.data[i * input.shape[1] * inner..][..inner].to_vec()).sum::<f64>() / (n * inner) as f64;
        assert!((bn.param("running_mean").data[0] as f64 - mean0).abs() < 1e-4, "running mean is the input's");
        assert!((bn.param("beta").data[0] as f64 - mean0).abs() < 1e-4);
    }

    #[test]
    fn optimizer_text_without_weight_decay_is_what_older_searches_recorded() {
        // The search's settings hold this text and a resume must match it: the texts of configs
        // without weight decay are those of the derived Debug before the field existed.
        assert_eq!(format!("{:?}", OptimizerConfig::adam(1e-3)), "Adam { lr: 0.001 }");
        assert_eq!(format!("{:?}", OptimizerConfig::sgd(0.01)), "Sgd { lr: 0.01 }");
        let adadelta = OptimizerConfig::Adadelta { lr: 1.0, rho: 0.95, eps: 1e-7 };
        assert_eq!(format!("{adadelta:?}"), "Adadelta { lr: 1.0, rho: 0.95, eps: 1e-7 }");
        let decayed = OptimizerConfig::Adam { lr: 1e-3, weight_decay: 0.05 };
        assert_eq!(format!("{decayed:?}"), "Adam { lr: 0.001, weight_decay: 0.05 }");
        assert_eq!(format!("{:?}", OptimizerConfig::Sgd { lr: 0.01, weight_decay: 5e-4 }), "Sgd { lr: 0.01, weight_decay: 0.0005 }");
        assert_ne!(format!("{decayed:?}"), format!("{:?}", OptimizerConfig::adam(1e-3)), "a changed decay must not resume");
        // The decay survives the final fit's scaling, and a config stored without it reads as 0.
        assert_eq!(decayed.scaled(0.1), OptimizerConfig::Adam { lr: 1e-3 * 0.1, weight_decay: 0.05 });
        let old: OptimizerConfig = serde_json::from_str(r#"{"Adam":{"lr":0.001}}"#).unwrap();
        assert_eq!(old, OptimizerConfig::adam(1e-3));
    }

    #[test]
    fn the_built_optimizers_apply_the_weight_decay() {
        // A zero gradient isolates the decay: Adam's moments stay 0, so its step is the decoupled
        // lr * wd * w alone; SGD's L2 gradient wd * w gives the same step. 1 - 0.1 * 0.5 = 0.95.
        let dev = crate::testing::device();
        let grad = crate::tensor::Tensor::zeros(&dev, &[3]).unwrap();
        for config in [OptimizerConfig::Adam { lr: 0.1, weight_decay: 0.5 }, OptimizerConfig::Sgd { lr: 0.1, weight_decay: 0.5 }] {
            let w = crate::tensor::Tensor::full(&dev, &[3], 1.0).unwrap();
            config.build().step(&[(&w, &grad)]).unwrap();
            assert!(w.to_vec().unwrap().iter().all(|v| (v - 0.95).abs() < 1e-6), "{config:?}: {:?}", w.to_vec().unwrap());
        }
        for config in [OptimizerConfig::adam(0.1), OptimizerConfig::sgd(0.1)] {
            let w = crate::tensor::Tensor::full(&dev, &[3], 1.0).unwrap();
            config.build().step(&[(&w, &grad)]).unwrap();
            assert_eq!(w.to_vec().unwrap(), vec![1.0; 3], "{config:?} without decay leaves the weights");
        }
    }

    #[test]
    fn small_sets_get_smaller_batches() {
        assert_eq!(batch_size_for(60_000), 128);
        assert_eq!(batch_size_for(8_000), 128);
        assert_eq!(batch_size_for(5_000), 64);
        assert_eq!(batch_size_for(2_000), 32);
        assert_eq!(batch_size_for(1_000), 16);
        assert_eq!(batch_size_for(10), 16);
        assert_eq!(batch_size_for(0), 16);
    }

    #[test]
    fn the_default_batch_follows_the_set_and_a_given_one_is_kept() {
        let auto = ClassifierConfig::default();
        assert_eq!(auto.training_batch(60_000).unwrap(), 128);
        assert_eq!(auto.training_batch(2_000).unwrap(), 32);
        assert_eq!(auto.inference_batch(), INFERENCE_BATCH);
        let fixed = ClassifierConfig { batch_size: Some(64), ..Default::default() };
        assert_eq!(fixed.training_batch(2_000).unwrap(), 64);
        assert_eq!(fixed.inference_batch(), 64);
        let e = ClassifierConfig { batch_size: Some(0), ..Default::default() }.training_batch(10).unwrap_err().to_string();
        assert!(e.contains("batch size 0"), "{e}");
    }

    #[test]
    fn the_default_test_time_shifts_suit_the_images_and_given_ones_are_checked() {
        let auto = ClassifierConfig::default();
        assert_eq!(auto.test_time_shifts_for(&[1, 28, 28]), TestTimeShifts::Cross.shifts());
        assert_eq!(auto.test_time_shifts_for(&[3, 1, 9]), Vec::<[i32; 2]>::new(), "a 1-pixel side cannot move");
        assert_eq!(auto.test_time_shifts_for(&[6]), Vec::<[i32; 2]>::new());
        let none = ClassifierConfig { test_time_shifts: Some(vec![]), ..Default::default() };
        assert!(none.test_time_shifts_for(&[1, 28, 28]).is_empty());
        let square = ClassifierConfig { test_time_shifts: Some(TestTimeShifts::Square.shifts()), ..Default::default() };
        let tiny = ImageSet::new(vec![0; 2], vec![0, 1], 1, 1, 1, 2).unwrap();
        let e = square.checked_test_time_shifts(&tiny).unwrap_err().to_string();
        assert!(e.contains("moves a 1x1 image out of its frame"), "{e}");
        assert!(auto.checked_test_time_shifts(&tiny).unwrap().is_empty());
    }

    #[test]
    fn validation_size_follows_the_rule() {
        assert_eq!(validation_size(60_000), 10_000);
        assert_eq!(validation_size(1_000), 166);
        assert_eq!(validation_size(2), 1);
        assert_eq!(validation_size(1), 0);
        assert_eq!(validation_size(600_000), 10_000);
    }

    #[test]
    fn the_split_is_seeded_and_disjoint() {
        let n = 50;
        let images: Vec<u8> = (0..n as u8).flat_map(|i| [i, i]).collect();
        let labels: Vec<u8> = (0..n as u8).map(|i| i % 3).collect();
        let set = ImageSet::new(images, labels, 1, 1, 2, 3).unwrap();
        let (a, b) = shuffled_split(&set, 8, 4).unwrap();
        let (a2, b2) = shuffled_split(&set, 8, 4).unwrap();
        assert_eq!((a.n, b.n), (42, 8));
        assert_eq!(a, a2);
        assert_eq!(b, b2);
        let mut all: Vec<u8> = a.images.iter().chain(&b.images).step_by(2).copied().collect();
        all.sort();
        assert_eq!(all, (0..n as u8).collect::<Vec<_>>());
        for (i, img) in b.images.chunks(2).enumerate() {
            assert_eq!(b.labels[i], img[0] % 3, "labels follow their images");
        }
    }
}
