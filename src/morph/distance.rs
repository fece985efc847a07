//! AutoKeras's edit distance between architectures (the Bayesian optimiser's kernel is built on it):
//! a layer edit distance along the main path plus a skip-connection distance.
//!
//! - Layers: Levenshtein distance with insert and delete cost 1; substituting layers of different
//!   types costs 1, of the same type the mean relative difference `|a - b| / max(a, b)` of their
//!   attributes (conv: filters, kernel, stride; pools: kernel, stride; dense: units; others: 0).
//! - Skips: each skip is (main-path index where it leaves, main-path index of the merge layer,
//!   add or concat). Two skips of different types are 1 apart; of the same type
//!   `(|u_a - u_b| + |len_a - len_b|) / (max(u_a, u_b) + max(len_a, len_b))`. The skip sets are
//!   matched with the Hungarian algorithm, and each unmatched skip costs 1.

use crate::graph::{Graph, LayerId, Op};
use std::collections::HashMap;

/// Weight of the skip-connection distance (AutoKeras's `KERNEL_LAMBDA`).
pub const KERNEL_LAMBDA: f64 = 1.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipKind {
    Add,
    Concat,
}

/// A skip connection by main-path positions (the input is position 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skip {
    pub from: usize,
    pub to: usize,
    pub kind: SkipKind,
}

/// What the distance looks at: the main path's layers (input excluded) and the skips.
#[derive(Clone, Debug, PartialEq)]
pub struct Descriptor {
    pub layers: Vec<Op>,
    pub skips: Vec<Skip>,
}

impl Descriptor {
    pub fn of(graph: &Graph) -> Descriptor {
        let main = graph.main_path();
        let index: HashMap<LayerId, usize> = main.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut skips = vec![];
        for (to, &id) in main.iter().enumerate() {
            let layer = graph.layer(id);
            let kind = match layer.op {
                Op::Add => SkipKind::Add,
                Op::Concat => SkipKind::Concat,
                _ => continue,
            };
            for &branch in &layer.inputs[1..] {
                // Walk the branch back to where it leaves the main path.
                let mut cur = branch;
                while !index.contains_key(&cur) {
                    cur = graph.layer(cur).inputs[0];
                }
                skips.push(Skip { from: index[&cur], to, kind });
            }
        }
        Descriptor { layers: main[1..].iter().map(|&id| graph.layer(id).op.clone()).collect(), skips }
    }
}

/// Edit distance between two graphs' architectures (weights are ignored).
pub fn edit_distance(a: &Graph, b: &Graph) -> f64 {
    descriptor_distance(&Descriptor::of(a), &Descriptor::of(b))
}

pub fn descriptor_distance(a: &Descriptor, b: &Descriptor) -> f64 {
    layers_distance(&a.layers, &b.layers) + KERNEL_LAMBDA * skips_distance(&a.skips, &b.skips)
}

fn mean_relative_difference(pairs: &[(usize, usize)]) -> f64 {
    let diff = |&(a, b): &(usize, usize)| if a.max(b) == 0 { 0.0 } else { a.abs_diff(b) as f64 / a.max(b) as f64 };
    pairs.iter().map(diff).sum::<f64>() / pairs.len() as f64
}

/// Cost of substituting one layer for another.
pub fn layer_distance(a: &Op, b: &Op) -> f64 {
    match (a, b) {
        (Op::Conv2d { filters: fa, kernel: ka, stride: sa, .. }, Op::Conv2d { filters: fb, kernel: kb, stride: sb, .. }) => {
            mean_relative_difference(&[(*fa, *fb), (*ka, *kb), (*sa, *sb)])
        }
        (Op::MaxPool { kernel: ka, stride: sa }, Op::MaxPool { kernel: kb, stride: sb })
        | (Op::AvgPool { kernel: ka, stride: sa }, Op::AvgPool { kernel: kb, stride: sb }) => {
            mean_relative_difference(&[(*ka, *kb), (*sa, *sb)])
        }
        (Op::Dense { units: ua, .. }, Op::Dense { units: ub, .. }) => mean_relative_difference(&[(*ua, *ub)]),
        _ if a.kind() == b.kind() => 0.0,
        _ => 1.0,
    }
}

/// Levenshtein distance between two layer lists with [`layer_distance`] substitutions.
pub fn layers_distance(a: &[Op], b: &[Op]) -> f64 {
    let mut prev: Vec<f64> = (0..=b.len()).map(|j| j as f64).collect();
    for (i, la) in a.iter().enumerate() {
        let mut cur = vec![(i + 1) as f64; b.len() + 1];
        for (j, lb) in b.iter().enumerate() {
            cur[j + 1] = (cur[j] + 1.0).min(prev[j + 1] + 1.0).min(prev[j] + layer_distance(la, lb));
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn skip_distance(a: &Skip, b: &Skip) -> f64 {
    if a.kind != b.kind {
        return 1.0;
    }
    let (len_a, len_b) = (a.to - a.from, b.to - b.from);
    let denominator = a.from.max(b.from) + len_a.max(len_b);
    if denominator == 0 {
        return 0.0;
    }
    (a.from.abs_diff(b.from) + len_a.abs_diff(len_b)) as f64 / denominator as f64
}

/// Minimum-cost matching of the two skip sets plus one per unmatched skip.
pub fn skips_distance(a: &[Skip], b: &[Skip]) -> f64 {
    let cost: Vec<Vec<f64>> = a.iter().map(|x| b.iter().map(|y| skip_distance(x, y)).collect()).collect();
    let matched: f64 = hungarian(&cost).iter().map(|&(i, j)| cost[i][j]).sum();
    matched + a.len().abs_diff(b.len()) as f64
}

/// Minimum-cost matching for a rectangular cost matrix (Hungarian algorithm with potentials,
/// O(n^2 m)): `min(rows, cols)` pairs `(row, col)`, in row order.
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<(usize, usize)> {
    let rows = cost.len();
    let cols = cost.first().map_or(0, |r| r.len());
    if rows == 0 || cols == 0 {
        return vec![];
    }
    if rows > cols {
        let transposed: Vec<Vec<f64>> = (0..cols).map(|j| (0..rows).map(|i| cost[i][j]).collect()).collect();
        let mut pairs: Vec<(usize, usize)> = hungarian(&transposed).into_iter().map(|(j, i)| (i, j)).collect();
        pairs.sort();
        return pairs;
    }
    // 1-based arrays as in the classic formulation; p[j] = row matched to column j.
    let (n, m) = (rows, cols);
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut pairs: Vec<(usize, usize)> = (1..=m).filter(|&j| p[j] != 0).map(|j| (p[j] - 1, j - 1)).collect();
    pairs.sort();
    pairs
}
