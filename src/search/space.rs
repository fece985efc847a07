//! The search space of network graphs: architectures are graphs without weights, morphisms are
//! `morph::Morph` records, and the distance is AutoKeras's edit distance.
//!
//! The optimiser only looks at architectures, so they carry no weights (a candidate costs a few
//! kilobytes, not the megabytes of its weights, and morphisms on it are structural); the trainer replays the same morphisms on the
//! father's trained graph, and since layer ids are assigned deterministically from the father's,
//! it arrives at the same architecture.

use super::bayesian::SearchSpace;
use crate::error::{Error, Result};
use crate::graph::{Graph, Op};
use crate::morph::{self, Descriptor, Morph};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A graph's architecture, without weights. Serialised as the graph's JSON.
#[derive(Clone, Debug)]
pub struct Architecture(Graph);

impl Architecture {
    /// The architecture of `graph` (its weights are dropped).
    pub fn of(graph: &Graph) -> Architecture {
        Architecture::from_graph(graph.clone())
    }

    /// The architecture of `graph`, dropping its weights without copying them.
    pub fn from_graph(mut g: Graph) -> Architecture {
        let ids: Vec<_> = g.layers().iter().map(|l| l.id).collect();
        for id in ids {
            g.layer_mut(id).params.clear();
        }
        Architecture(g)
    }

    pub fn graph(&self) -> &Graph {
        &self.0
    }

    /// A graph of this architecture with fresh weights.
    pub fn instantiate(&self, seed: u64) -> Result<Graph> {
        let mut g = self.0.clone();
        g.init_weights(seed)?;
        Ok(g)
    }

    /// Trainable plus non-trainable weights, as Keras counts "Total params".
    pub fn parameters(&self) -> u64 {
        self.0.param_counts().map(|(t, f)| (t + f) as u64).unwrap_or(u64::MAX)
    }

    /// A rough estimate of the device memory needed to train it with batches of `batch_size`:
    /// each layer's output kept for backward, its gradient and a workspace, for every image of the
    /// batch; and four copies of the weights (weights, gradients, two optimizer accumulators).
    pub fn training_bytes(&self, batch_size: usize) -> u64 {
        let activations: u64 =
            self.0.infer_shapes().map(|s| s.values().map(|shape| shape.iter().product::<usize>() as u64).sum()).unwrap_or(u64::MAX / 64);
        4 * (3 * activations * batch_size as u64 + 4 * self.parameters())
    }

    /// Relative cost of training it on one image: the multiply-adds of its convolutions and dense
    /// layers. Checked against the epoch times of a 45-minute MNIST search on lavapipe (father
    /// 165 s): its children's costs were 1.08x, 1.54x and 2.44x the father's, their epoch times
    /// 1.04x, 1.77x and 2.30x; the elementwise passes did not explain the difference.
    pub fn training_cost(&self) -> f64 {
        let g = &self.0;
        let Ok(shapes) = g.infer_shapes() else { return f64::INFINITY };
        g.layers()
            .iter()
            .map(|layer| {
                let outputs = shapes[&layer.id].iter().product::<usize>() as f64;
                let input = g.input_shape_of(&shapes, layer.id);
                match layer.op {
                    Op::Conv2d { kernel, .. } => outputs * (input[0] * kernel * kernel) as f64,
                    Op::Dense { .. } => outputs * input.iter().product::<usize>() as f64,
                    _ => 0.0,
                }
            })
            .sum()
    }

    /// Equal for architectures the search treats as the same (main path and skips).
    pub fn descriptor(&self) -> String {
        format!("{:?}", Descriptor::of(&self.0))
    }
}

impl Serialize for Architecture {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let value: serde_json::Value = serde_json::from_str(&self.0.to_json()).map_err(serde::ser::Error::custom)?;
        value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Architecture {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Graph::from_json(&value.to_string()).map(Architecture).map_err(serde::de::Error::custom)
    }
}

/// A morphism with its description for people, taken from the graph it applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DescribedMorph {
    pub morph: Morph,
    pub description: String,
}

/// The default cap on a candidate's weights. AutoKeras allowed 2^25; UCB's pull towards far
/// (hence ever wider) architectures then proposes models far slower to train than they are likely
/// to gain. 2^22 (4M) is over ten times the AutoKeras generator's model on 28x28 images.
pub const DEFAULT_MAX_PARAMETERS: u64 = 1 << 22;

/// Graphs reachable by morphisms, as the optimiser sees them.
#[derive(Clone, Debug)]
pub struct GraphSpace {
    /// Batch size of training (for the memory estimate).
    pub batch_size: usize,
    /// Candidates with more weights are not proposed (AutoKeras's `MAX_MODEL_SIZE`).
    pub max_parameters: u64,
}

impl Default for GraphSpace {
    fn default() -> Self {
        GraphSpace { batch_size: 128, max_parameters: DEFAULT_MAX_PARAMETERS }
    }
}

/// The three families AutoKeras drew from with equal chance: deeper, wider, skip (add or concat).
fn family(m: &Morph) -> usize {
    match m {
        Morph::Deeper { .. } => 0,
        Morph::Wider { .. } => 1,
        Morph::AddSkip { .. } | Morph::ConcatSkip { .. } => 2,
    }
}

impl GraphSpace {
    /// Applies `morphs` to a trained graph in order (the trainer's replay of a proposal).
    pub fn replay(graph: &Graph, morphs: &[DescribedMorph], noise: f32, rng: &mut StdRng) -> Result<Graph> {
        let mut g = graph.clone();
        for m in morphs {
            g = morph::apply_with_noise(&g, &m.morph, noise, rng)?;
        }
        Ok(g)
    }
}

impl SearchSpace for GraphSpace {
    type Arch = Architecture;
    type Op = DescribedMorph;

    fn distance(&self, a: &Architecture, b: &Architecture) -> f64 {
        morph::edit_distance(&a.0, &b.0)
    }

    fn descriptor(&self, a: &Architecture) -> String {
        a.descriptor()
    }

    /// AutoKeras's `transform`: up to `2n` draws of a family, then of a morphism of that family,
    /// keeping up to `n` distinct ones. Morphisms of a weightless graph are structural, so a
    /// candidate costs a few kilobytes and microseconds, whatever the size of its weights.
    fn neighbours(&self, a: &Architecture, n: usize, rng: &mut StdRng) -> Vec<(DescribedMorph, Architecture)> {
        let all = morph::applicable(&a.0);
        let families: Vec<Vec<&Morph>> = (0..3).map(|f| all.iter().filter(|m| family(m) == f).collect()).collect();
        let present: Vec<usize> = (0..3).filter(|&f| !families[f].is_empty()).collect();
        let mut out: Vec<(DescribedMorph, Architecture)> = Vec::new();
        if present.is_empty() {
            return out;
        }
        for _ in 0..2 * n {
            let f = present[rng.random_range(0..present.len())];
            let m = families[f][rng.random_range(0..families[f].len())];
            if out.iter().any(|(d, _)| d.morph == *m) {
                continue;
            }
            let Ok(child) = morph::apply(&a.0, m, rng) else { continue };
            let child = Architecture::from_graph(child);
            if child.parameters() > self.max_parameters {
                continue;
            }
            out.push((DescribedMorph { morph: m.clone(), description: m.describe(&a.0) }, child));
            if out.len() >= n {
                break;
            }
        }
        out
    }

    fn size(&self, a: &Architecture) -> u64 {
        a.training_bytes(self.batch_size)
    }

    fn parameters(&self, a: &Architecture) -> u64 {
        a.parameters()
    }

    fn training_cost(&self, a: &Architecture) -> f64 {
        a.training_cost()
    }

    fn describe(&self, op: &DescribedMorph) -> String {
        op.description.clone()
    }
}

/// Checks that replaying a proposal on the trained father gave the architecture the optimiser
/// proposed (a mismatch would be a bug in the morphisms' determinism).
pub fn check_same(got: &Graph, want: &Architecture) -> Result<()> {
    let got = Architecture::of(got);
    if got.descriptor() != want.descriptor() {
        return Err(Error::Other(format!(
            "replaying the morphisms on the trained father gave another architecture than proposed:\n{}\nvs\n{}",
            got.descriptor(),
            want.descriptor()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::CnnConfig;
    use rand::SeedableRng;

    fn small_cnn() -> Graph {
        Graph::cnn(&[1, 12, 12], 10, &CnnConfig { blocks: 2, width: 8, dense: 16, ..Default::default() }, 3).unwrap()
    }

    #[test]
    fn neighbours_are_valid_distinct_and_replayable() {
        let space = GraphSpace::default();
        let trained = small_cnn();
        let arch = Architecture::of(&trained);
        let mut rng = StdRng::seed_from_u64(11);
        let nbrs = space.neighbours(&arch, 8, &mut rng);
        assert!(nbrs.len() >= 4, "only {} neighbours", nbrs.len());
        let families: std::collections::HashSet<usize> = nbrs.iter().map(|(m, _)| family(&m.morph)).collect();
        assert_eq!(families.len(), 3, "all three families drawn");
        for (m, child) in &nbrs {
            child.graph().validate_architecture().unwrap();
            assert!(space.distance(&arch, child) > 0.0, "{} changed nothing", m.description);
            assert_ne!(space.descriptor(&arch), space.descriptor(child));
            // The trainer replays the morphism on the trained weights and must reach the same graph.
            let replayed = GraphSpace::replay(&trained, std::slice::from_ref(m), 1e-3, &mut rng).unwrap();
            check_same(&replayed, child).unwrap();
        }
        // Two steps: replay of a chain.
        let (m1, c1) = nbrs[0].clone();
        let (m2, c2) = space.neighbours(&c1, 1, &mut rng).remove(0);
        let replayed = GraphSpace::replay(&trained, &[m1, m2], 0.0, &mut rng).unwrap();
        check_same(&replayed, &c2).unwrap();
    }

    #[test]
    fn the_training_cost_counts_the_multiply_adds_of_convolutions_and_dense_layers() {
        // 12x12 conv of 8 from 1 channel, pool, 6x6 conv of 8 from 8, pool, global pool, dense
        // 8 -> 16, dense 16 -> 10.
        let want = 12 * 12 * 8 * 9 + 6 * 6 * 8 * 8 * 9 + 8 * 16 + 16 * 10;
        assert_eq!(Architecture::of(&small_cnn()).training_cost(), want as f64);
    }

    #[test]
    fn architectures_round_trip_through_json_without_weights() {
        let arch = Architecture::of(&small_cnn());
        let text = serde_json::to_string(&arch).unwrap();
        let back: Architecture = serde_json::from_str(&text).unwrap();
        assert_eq!(arch.descriptor(), back.descriptor());
        assert_eq!(arch.parameters(), back.parameters());
        assert!(arch.graph().params().is_empty());
        assert_eq!(GraphSpace::default().distance(&arch, &back), 0.0);
    }

    #[test]
    fn the_memory_estimate_grows_with_width_and_batch() {
        let narrow = Architecture::of(&small_cnn());
        let wide = Architecture::of(
            &Graph::cnn(&[1, 12, 12], 10, &CnnConfig { blocks: 2, width: 32, dense: 16, ..Default::default() }, 3).unwrap(),
        );
        assert!(wide.training_bytes(32) > narrow.training_bytes(32));
        assert!(narrow.training_bytes(64) > narrow.training_bytes(32));
    }
}
