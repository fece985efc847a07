//! The Bayesian optimiser of AutoKeras 0.3: a Gaussian process over trained architectures (kernel
//! on an edit distance), UCB acquisition, and the acquisition maximised by simulated annealing over
//! trees of morphisms grown from the trained models.
//!
//! It works on any [`SearchSpace`], so it is tested on toy spaces and used on network graphs alike.
//! [`Planner`] runs it on a CPU thread beside training: while model k trains, the planner proposes
//! model k + 1 from the results of models 0..k-1, so the GPU does not wait, and the proposal does
//! not depend on timing (the same seed gives the same sequence of architectures).

use super::gp::GaussianProcess;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BinaryHeap, HashSet};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

/// What the optimiser needs to know about architectures and morphisms.
pub trait SearchSpace: Send + 'static {
    type Arch: Clone + Send + 'static;
    /// One morphism: applied to a trained model, it gives a child that starts from its weights.
    type Op: Clone + Send + std::fmt::Debug + 'static;

    /// The edit distance between two architectures (zero for equal ones).
    fn distance(&self, a: &Self::Arch, b: &Self::Arch) -> f64;
    /// A key equal for equal architectures: no architecture is trained twice.
    fn descriptor(&self, a: &Self::Arch) -> String;
    /// Up to `n` random morphisms of `a` and their results.
    fn neighbours(&self, a: &Self::Arch, n: usize, rng: &mut StdRng) -> Vec<(Self::Op, Self::Arch)>;
    /// A size the device's memory limits (models at least as large as one that ran out of memory
    /// are not proposed again).
    fn size(&self, a: &Self::Arch) -> u64;
    /// The number of trainable parameters (for the reports).
    fn parameters(&self, a: &Self::Arch) -> u64;
    /// Relative cost of training it, per example: epoch times scale with it (a child's is judged
    /// from its father's before it starts). Equal for all by default.
    fn training_cost(&self, _a: &Self::Arch) -> f64 {
        1.0
    }
    /// The morphism for people ("to_deeper_model 33 Conv2d(256, 256, 5, 1)").
    fn describe(&self, op: &Self::Op) -> String;
}

#[derive(Clone, Debug)]
pub struct BayesianConfig {
    /// UCB exploration weight: acquisition = mean + beta * std (of validation accuracy).
    pub beta: f64,
    /// Annealing temperature: from `t_start`, times `cooling` per step, until below `t_min`.
    pub t_start: f64,
    pub cooling: f64,
    pub t_min: f64,
    /// Neighbours generated per expansion.
    pub neighbours: usize,
    /// Morphisms in one child at most. AutoKeras had no bound, and UCB's pull towards the
    /// unexplored grew chains of a dozen or more (mostly widenings): children far from their
    /// fathers inherit little of the training and cost far more to train.
    pub max_ops: usize,
    /// A candidate's parameters at most this many times those of the largest trained model, so
    /// models grow by steps as the search learns whether growth pays.
    pub max_growth: f64,
    /// What the process assumes of the architectures in training elsewhere (other workers').
    pub fantasy: Fantasy,
}

impl Default for BayesianConfig {
    fn default() -> Self {
        BayesianConfig {
            beta: 2.576,
            t_start: 1.0,
            cooling: 0.9,
            t_min: 1e-4,
            neighbours: 8,
            max_ops: 5,
            max_growth: 4.0,
            fantasy: Fantasy::Mean,
        }
    }
}

/// A value the Gaussian process takes for an architecture in training, so that workers that ask
/// for proposals at once do not all get points near the same optimum (Ginsbourger et al., 2010:
/// "kriging believer" and "constant liar"). Either way the architecture itself is never proposed
/// again. Measured (`examples/parallel_proposals.rs`, the test grid, 4 simulated workers, mean
/// of 20 seeds): best accuracy after 16 trials 0.969 with the mean, 0.844 with the constant
/// liar, 0.771 with exclusion alone (one worker: 0.995); after 24 trials 0.993, 0.948 and 0.970.
/// The liar's pessimism pushes proposals away from the good region; the mean only spreads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fantasy {
    /// None: the process knows nothing of it (only that it is taken).
    Exclude,
    /// The worst validation accuracy seen so far: the process is pushed away from it.
    ConstantLiar,
    /// The process's own mean prediction: its uncertainty there shrinks, the mean stays.
    Mean,
}

/// The next architecture to train: the father's trained weights through `ops`.
#[derive(Clone, Debug)]
pub struct Proposal<A, O> {
    pub father: usize,
    pub ops: Vec<O>,
    pub arch: A,
    pub acquisition: f64,
    pub mean: f64,
    pub std: f64,
}

pub struct BayesianOptimizer<S: SearchSpace> {
    space: S,
    config: BayesianConfig,
    /// Trained models with their validation accuracy.
    trained: Vec<(usize, S::Arch, f64)>,
    /// Architectures in training elsewhere.
    in_flight: Vec<S::Arch>,
    /// The process's points: the trained architectures, then any in flight with their fantasy.
    points: Vec<S::Arch>,
    /// Descriptors of every architecture trained, failed, in training or proposed.
    seen: HashSet<String>,
    /// Architectures of this size or more ran out of device memory.
    size_limit: Option<u64>,
    gp: Option<GaussianProcess>,
}

/// An element of the annealing's priority queue: a value (accuracy for trained models,
/// acquisition for candidates), ordered largest first.
struct Elem<A, O> {
    value: f64,
    order: usize,
    father: usize,
    ops: Vec<O>,
    arch: A,
}

impl<A, O> PartialEq for Elem<A, O> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl<A, O> Eq for Elem<A, O> {}
impl<A, O> PartialOrd for Elem<A, O> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<A, O> Ord for Elem<A, O> {
    // Larger values first; among equal values the earlier element, so the order is deterministic.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.total_cmp(&other.value).then(other.order.cmp(&self.order))
    }
}

impl<S: SearchSpace> BayesianOptimizer<S> {
    pub fn new(space: S, config: BayesianConfig) -> Self {
        BayesianOptimizer {
            space,
            config,
            trained: Vec::new(),
            in_flight: Vec::new(),
            points: Vec::new(),
            seen: HashSet::new(),
            size_limit: None,
            gp: None,
        }
    }

    pub fn space(&self) -> &S {
        &self.space
    }

    /// Records a trained model (`accuracy` = its validation accuracy) and refits the process.
    pub fn add_result(&mut self, id: usize, arch: S::Arch, accuracy: f64) {
        self.seen.insert(self.space.descriptor(&arch));
        self.trained.push((id, arch, accuracy));
        self.refit();
    }

    /// Marks an architecture as taken (in training, or failed) so it is never proposed.
    pub fn exclude(&mut self, arch: &S::Arch) {
        self.seen.insert(self.space.descriptor(arch));
    }

    /// An architecture of `size` ran out of device memory: avoid that size and larger.
    pub fn limit_size(&mut self, size: u64) {
        self.size_limit = Some(self.size_limit.map_or(size, |s| s.min(size)));
    }

    /// The architectures in training elsewhere now (replacing the last set): never proposed, and
    /// in the process with their [`Fantasy`] value until their results come.
    pub fn set_in_flight(&mut self, archs: Vec<S::Arch>) {
        for a in &archs {
            self.seen.insert(self.space.descriptor(a));
        }
        self.in_flight = archs;
        self.refit();
    }

    fn fit_points(&mut self, points: Vec<S::Arch>, y: &[f64]) {
        let d: Vec<Vec<f64>> = points.iter().map(|a| points.iter().map(|b| self.space.distance(a, b)).collect()).collect();
        self.gp = GaussianProcess::fit(&d, y);
        self.points = points;
    }

    fn refit(&mut self) {
        let mut y: Vec<f64> = self.trained.iter().map(|t| t.2).collect();
        self.fit_points(self.trained.iter().map(|t| t.1.clone()).collect(), &y);
        if self.in_flight.is_empty() || self.gp.is_none() {
            return;
        }
        let lies: Vec<f64> = match self.config.fantasy {
            Fantasy::Exclude => return,
            Fantasy::ConstantLiar => vec![y.iter().copied().fold(f64::INFINITY, f64::min); self.in_flight.len()],
            Fantasy::Mean => self.in_flight.iter().map(|a| self.predict(a).expect("fitted").0).collect(),
        };
        y.extend(lies);
        let points = self.trained.iter().map(|t| t.1.clone()).chain(self.in_flight.iter().cloned()).collect();
        self.fit_points(points, &y);
    }

    /// Predicted validation accuracy (mean, std) of an architecture.
    pub fn predict(&self, arch: &S::Arch) -> Option<(f64, f64)> {
        let gp = self.gp.as_ref()?;
        let d: Vec<f64> = self.points.iter().map(|b| self.space.distance(arch, b)).collect();
        Some(gp.predict(&d))
    }

    /// UCB: mean + beta * std.
    pub fn acquisition(&self, arch: &S::Arch) -> Option<f64> {
        self.predict(arch).map(|(m, s)| m + self.config.beta * s)
    }

    /// Simulated annealing over trees of morphisms grown from the trained models (AutoKeras's
    /// `optimize_acq`): returns the unseen architecture of highest acquisition found, or `None`
    /// when nothing was trained yet or no new architecture was reachable.
    pub fn propose(&mut self, rng: &mut StdRng) -> Option<Proposal<S::Arch, S::Op>> {
        self.gp.as_ref()?;
        let mut queue = BinaryHeap::new();
        let mut order = 0;
        for (id, arch, acc) in &self.trained {
            queue.push(Elem { value: *acc, order, father: *id, ops: Vec::new(), arch: arch.clone() });
            order += 1;
        }
        let largest = self.trained.iter().map(|(_, a, _)| self.space.parameters(a)).max().unwrap_or(0);
        let growth_cap = (largest as f64 * self.config.max_growth).max(1.0) as u64;
        let mut seen = self.seen.clone();
        let mut best: Option<Proposal<S::Arch, S::Op>> = None;
        let mut t = self.config.t_start;
        while t > self.config.t_min {
            let Some(elem) = queue.pop() else { break };
            let best_value = best.as_ref().map_or(f64::NEG_INFINITY, |b| b.acquisition);
            // Expand better elements always, worse ones with a probability that falls with t.
            let accept = ((elem.value - best_value) / t).min(1.0).exp();
            if accept >= rng.random::<f64>() {
                for (op, arch) in self.space.neighbours(&elem.arch, self.config.neighbours, rng) {
                    let too_large =
                        self.size_limit.is_some_and(|limit| self.space.size(&arch) >= limit) || self.space.parameters(&arch) > growth_cap;
                    if too_large || !seen.insert(self.space.descriptor(&arch)) {
                        continue;
                    }
                    let (mean, std) = self.predict(&arch).expect("fitted");
                    let acquisition = mean + self.config.beta * std;
                    let mut ops = elem.ops.clone();
                    ops.push(op);
                    if best.as_ref().is_none_or(|b| acquisition > b.acquisition) {
                        best = Some(Proposal { father: elem.father, ops: ops.clone(), arch: arch.clone(), acquisition, mean, std });
                    }
                    // A child at the morphism bound can be proposed but not grown further.
                    if ops.len() < self.config.max_ops {
                        queue.push(Elem { value: acquisition, order, father: elem.father, ops, arch });
                        order += 1;
                    }
                }
            }
            t *= self.config.cooling;
        }
        if let Some(p) = &best {
            self.seen.insert(self.space.descriptor(&p.arch));
        }
        best
    }
}

enum Message<A> {
    Result {
        id: usize,
        arch: A,
        accuracy: f64,
    },
    Exclude(A),
    InFlight(Vec<A>),
    LimitSize(u64),
    /// Propose the architecture for model `id` (its seed comes from the search seed and the id).
    Propose {
        id: usize,
    },
}

/// A [`BayesianOptimizer`] on its own thread. Messages are handled in order, so a proposal is
/// computed from exactly the results sent before its request, whatever the timing.
pub struct Planner<S: SearchSpace> {
    to: Option<Sender<Message<S::Arch>>>,
    from: Receiver<Option<Proposal<S::Arch, S::Op>>>,
    thread: Option<JoinHandle<()>>,
    pending: usize,
}

impl<S: SearchSpace> Planner<S> {
    pub fn spawn(optimizer: BayesianOptimizer<S>, seed: u64) -> Planner<S> {
        let (to, inbox) = channel::<Message<S::Arch>>();
        let (outbox, from) = channel();
        let thread = std::thread::Builder::new()
            .name("bayesian-optimizer".into())
            .spawn(move || {
                let mut bo = optimizer;
                for message in inbox {
                    match message {
                        Message::Result { id, arch, accuracy } => bo.add_result(id, arch, accuracy),
                        Message::Exclude(arch) => bo.exclude(&arch),
                        Message::InFlight(archs) => bo.set_in_flight(archs),
                        Message::LimitSize(size) => bo.limit_size(size),
                        Message::Propose { id } => {
                            let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                            if outbox.send(bo.propose(&mut rng)).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .expect("spawn the optimizer thread");
        Planner { to: Some(to), from, thread: Some(thread), pending: 0 }
    }

    fn send(&self, message: Message<S::Arch>) {
        // The thread only ends when the planner is dropped.
        let _ = self.to.as_ref().expect("planner running").send(message);
    }

    pub fn add_result(&self, id: usize, arch: S::Arch, accuracy: f64) {
        self.send(Message::Result { id, arch, accuracy });
    }

    pub fn exclude(&self, arch: S::Arch) {
        self.send(Message::Exclude(arch));
    }

    pub fn limit_size(&self, size: u64) {
        self.send(Message::LimitSize(size));
    }

    /// See [`BayesianOptimizer::set_in_flight`].
    pub fn set_in_flight(&self, archs: Vec<S::Arch>) {
        self.send(Message::InFlight(archs));
    }

    /// Starts computing the proposal for model `id`; collect it with [`Planner::receive`].
    pub fn request(&mut self, id: usize) {
        self.pending += 1;
        self.send(Message::Propose { id });
    }

    pub fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// The oldest requested proposal (waits for it if it is still being computed).
    pub fn receive(&mut self) -> Option<Proposal<S::Arch, S::Op>> {
        assert!(self.pending > 0, "receive without request");
        self.pending -= 1;
        self.from.recv().ok().flatten()
    }
}

impl<S: SearchSpace> Drop for Planner<S> {
    fn drop(&mut self) {
        self.to.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::search::{score, Grid};

    #[test]
    fn architectures_in_flight_are_never_proposed_and_hold_their_fantasy() {
        let mut rng = StdRng::seed_from_u64(3);
        let fitted = |fantasy| {
            let mut bo = BayesianOptimizer::new(Grid { max: 12 }, BayesianConfig { fantasy, ..Default::default() });
            bo.add_result(0, (3, 3), score((3, 3)));
            bo.add_result(1, (5, 5), score((5, 5)));
            bo
        };
        let before = fitted(Fantasy::Exclude).predict(&(4, 4)).unwrap();
        let mut mean = fitted(Fantasy::Mean);
        mean.set_in_flight(vec![(4, 4)]);
        let believed = mean.predict(&(4, 4)).unwrap();
        assert!(believed.1 < before.1 * 0.5 && (believed.0 - before.0).abs() < 0.02, "{before:?} -> {believed:?}");
        let mut liar = fitted(Fantasy::ConstantLiar);
        liar.set_in_flight(vec![(4, 4)]);
        let lied = liar.predict(&(4, 4)).unwrap();
        assert!(lied.0 < before.0 - 0.05 && lied.1 < before.1 * 0.5, "{before:?} -> {lied:?}");
        let mut excluded = fitted(Fantasy::Exclude);
        excluded.set_in_flight(vec![(4, 4)]);
        assert_eq!(excluded.predict(&(4, 4)).unwrap(), before);
        for (id, bo) in [&mut mean, &mut liar, &mut excluded].into_iter().enumerate() {
            for k in 0..10 {
                let p = bo.propose(&mut rng).expect("a proposal");
                assert_ne!(p.arch, (4, 4), "an architecture in flight was proposed");
                bo.add_result(10 * id + k + 2, p.arch, score(p.arch));
            }
        }
    }

    #[test]
    fn prefers_architectures_near_the_best_ones() {
        let mut bo = BayesianOptimizer::new(Grid { max: 20 }, BayesianConfig { beta: 0.0, ..Default::default() });
        for (i, a) in [(0, 0), (2, 2), (4, 4), (5, 6), (10, 10)].into_iter().enumerate() {
            bo.add_result(i, a, score(a));
        }
        // With no exploration, the mean alone decides: near (5, 6), not near (0, 0) or (10, 10).
        let near = bo.acquisition(&(6, 6)).unwrap();
        assert!(near > bo.acquisition(&(1, 1)).unwrap() && near > bo.acquisition(&(11, 11)).unwrap());
        let p = bo.propose(&mut StdRng::seed_from_u64(1)).expect("a proposal");
        let d = (p.arch.0 - 6).abs() + (p.arch.1 - 6).abs();
        assert!(d <= 2, "proposed {:?} (father {}), far from the best", p.arch, p.father);
        assert_eq!(p.father, 3, "grown from the best model");
        // The proposal is the father's architecture through its morphisms.
        let fathers = [(0, 0), (2, 2), (4, 4), (5, 6), (10, 10)];
        let end = p.ops.iter().fold(fathers[p.father], |a, s| (a.0 + s.0, a.1 + s.1));
        assert_eq!(end, p.arch);
    }

    #[test]
    fn never_proposes_an_architecture_twice() {
        let mut bo = BayesianOptimizer::new(Grid { max: 4 }, BayesianConfig::default());
        bo.add_result(0, (2, 2), score((2, 2)));
        bo.exclude(&(3, 2));
        let mut seen = HashSet::from([(2, 2), (3, 2)]);
        let mut rng = StdRng::seed_from_u64(7);
        let mut id = 1;
        // 25 points in the grid: proposals run out after the 23 untaken ones.
        while let Some(p) = bo.propose(&mut rng) {
            assert!(seen.insert(p.arch), "{:?} proposed twice", p.arch);
            bo.add_result(id, p.arch, score(p.arch));
            id += 1;
        }
        assert_eq!(seen.len(), 25, "every architecture reached: {seen:?}");
    }

    #[test]
    fn children_stay_within_the_morphism_and_growth_bounds() {
        let config = BayesianConfig { max_ops: 2, max_growth: 2.0, ..Default::default() };
        let mut bo = BayesianOptimizer::new(Grid { max: 40 }, config);
        bo.add_result(0, (4, 4), score((4, 4)));
        let mut rng = StdRng::seed_from_u64(9);
        let mut largest = 16;
        for id in 1..12 {
            let p = bo.propose(&mut rng).unwrap();
            assert!(p.ops.len() <= 2, "{} morphisms", p.ops.len());
            assert!(p.arch.0 * p.arch.1 <= 2 * largest, "{:?} grew past twice {largest}", p.arch);
            largest = largest.max(p.arch.0 * p.arch.1);
            bo.add_result(id, p.arch, score(p.arch));
        }
    }

    #[test]
    fn avoids_sizes_that_ran_out_of_memory() {
        let mut bo = BayesianOptimizer::new(Grid { max: 10 }, BayesianConfig::default());
        bo.add_result(0, (3, 3), score((3, 3)));
        bo.limit_size(12);
        let mut rng = StdRng::seed_from_u64(3);
        for id in 1..10 {
            let p = bo.propose(&mut rng).unwrap();
            assert!(p.arch.0 * p.arch.1 < 12, "{:?} is too large", p.arch);
            bo.add_result(id, p.arch, score(p.arch));
        }
    }

    #[test]
    fn planner_thread_is_deterministic() {
        let run = || {
            let mut planner = Planner::spawn(BayesianOptimizer::new(Grid { max: 12 }, BayesianConfig::default()), 42);
            planner.add_result(0, (1, 1), score((1, 1)));
            let mut archs = Vec::new();
            for id in 1..8 {
                planner.request(id);
                let p = planner.receive().unwrap();
                archs.push(p.arch);
                planner.add_result(id, p.arch, score(p.arch));
            }
            archs
        };
        assert_eq!(run(), run());
    }
}
