//! Network morphisms keep the function: random graphs, random sequences of morphisms, the CPU
//! reference output compared after each step. Also the edit distance on hand-worked examples.

use netmorph::graph::{CnnConfig, Graph, LayerId, Op, ResNetConfig, Sequential};
use netmorph::morph::distance::{hungarian, layers_distance, skip_distance, skips_distance, Descriptor, Skip, SkipKind};
use netmorph::morph::{applicable, apply, apply_with_noise, edit_distance, DeeperKind, Morph};
use netmorph::testing::{rand_vec, rng, TestRng};
use rand::seq::IndexedRandom;
use rand::Rng;
use std::collections::BTreeMap;

fn random_graph(rng: &mut TestRng) -> Graph {
    let c = rng.random_range(1..=3);
    let input = [c, 8, 8];
    let classes = rng.random_range(2..=4);
    let seed = rng.random();
    let mut g = match rng.random_range(0..3) {
        0 => {
            let cfg = CnnConfig {
                blocks: rng.random_range(1..=3),
                width: rng.random_range(2..=5),
                dense: rng.random_range(2..=6),
                ..Default::default()
            };
            Graph::cnn(&input, classes, &cfg, seed).unwrap()
        }
        1 => Graph::resnet(
            &input,
            classes,
            &ResNetConfig { width: rng.random_range(2..=4), stages: rng.random_range(1..=2), blocks: 1 },
            seed,
        )
        .unwrap(),
        _ => {
            let mut s = Sequential::new(&input).conv2d(rng.random_range(2..=4), 3).relu();
            if rng.random_bool(0.5) {
                s = s.batch_norm();
            }
            s = s.conv2d(rng.random_range(2..=4), 3).relu().max_pool(2).dropout(0.25);
            s = if rng.random_bool(0.5) { s.flatten() } else { s.global_avg_pool() };
            s.dense(rng.random_range(3..=6)).relu().dropout(0.5).dense(classes).build(seed).unwrap()
        }
    };
    g.randomize_weights(rng.random());
    g
}

/// max |a - b| / max |b|.
fn relative_change(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / scale
}

/// A random legal morphism, widening by 1 to 3 units so that sizes stay small.
fn random_morph(g: &Graph, rng: &mut TestRng) -> Morph {
    let all = applicable(g);
    let mut by_family: BTreeMap<&str, Vec<Morph>> = BTreeMap::new();
    for m in all {
        by_family.entry(m.family()).or_default().push(m);
    }
    let families: Vec<&str> = by_family.keys().copied().collect();
    let m = by_family[families.choose(rng).unwrap()].choose(rng).unwrap().clone();
    match m {
        Morph::Wider { layer, .. } => Morph::Wider { layer, n: rng.random_range(1..=3) },
        m => m,
    }
}

/// Applies `steps` random morphisms to `graphs` random graphs and checks the output after each
/// against the original's; returns the worst per-family single-step change and the worst overall.
fn morph_sequences(graphs: usize, steps: usize, noise: f32, tolerance: f64, seed: u64) -> (BTreeMap<&'static str, (f64, usize)>, f64) {
    let mut rng = rng(seed);
    let mut worst: BTreeMap<&'static str, (f64, usize)> = BTreeMap::new();
    let mut worst_total = 0.0f64;
    let batch = 3;
    for case in 0..graphs {
        let original = random_graph(&mut rng);
        let x = rand_vec(&mut rng, batch * original.input_shape().iter().product::<usize>());
        let want = original.forward_cpu(&x, batch).unwrap();
        let mut g = original.clone();
        let mut prev = want.clone();
        let mut history = vec![];
        for _ in 0..steps {
            let m = random_morph(&g, &mut rng);
            history.push(m.describe(&g));
            g = apply_with_noise(&g, &m, noise, &mut rng).unwrap_or_else(|e| panic!("case {case}: {history:?}: {e}"));
            g.validate().unwrap();
            assert_eq!(g.shape_of(g.output().id).unwrap(), original.shape_of(original.output().id).unwrap());
            let got = g.forward_cpu(&x, batch).unwrap();
            let step = relative_change(&got, &prev);
            let total = relative_change(&got, &want);
            let entry = worst.entry(m.family()).or_insert((0.0, 0));
            entry.0 = entry.0.max(step);
            entry.1 += 1;
            worst_total = worst_total.max(total);
            assert!(
                total <= tolerance,
                "case {case}: after {history:?}: relative change {total:.3e} > {tolerance:.0e}\n{}",
                g.summary().unwrap()
            );
            prev = got;
        }
    }
    (worst, worst_total)
}

fn report(what: &str, worst: &BTreeMap<&'static str, (f64, usize)>, total: f64) {
    for (family, (w, n)) in worst {
        eprintln!("[morph] {what} {family}: worst relative output change {w:.2e} over {n} applications");
    }
    eprintln!("[morph] {what} any sequence: worst relative change from the original {total:.2e}");
}

#[test]
fn random_morphism_sequences_keep_the_function() {
    let (worst, total) = morph_sequences(30, 20, 0.0, 1e-5, 1);
    report("no noise", &worst, total);
    assert_eq!(worst.len(), 4, "every family was exercised: {worst:?}");
}

#[test]
fn random_morphism_sequences_with_noise_stay_within_tolerance() {
    let (worst, total) = morph_sequences(20, 20, netmorph::morph::DEFAULT_NOISE, 1e-3, 2);
    report("noise 1e-5 (DEFAULT_NOISE)", &worst, total);
    assert!(total > 0.0, "noise changed nothing");
}

fn assert_same_output(a: &Graph, b: &Graph, tol: f64) -> f64 {
    let x = rand_vec(&mut rng(77), 2 * a.input_shape().iter().product::<usize>());
    let change = relative_change(&b.forward_cpu(&x, 2).unwrap(), &a.forward_cpu(&x, 2).unwrap());
    assert!(change <= tol, "relative change {change:.3e}");
    change
}

fn randomized(mut g: Graph, seed: u64) -> Graph {
    g.randomize_weights(seed);
    g
}

#[test]
fn widening_a_layer_that_feeds_a_concat() {
    let g = randomized(Graph::cnn(&[2, 8, 8], 3, &CnnConfig { blocks: 3, width: 4, dense: 5, ..Default::default() }, 1).unwrap(), 3);
    let main = g.main_path();
    let convs: Vec<LayerId> = main.iter().copied().filter(|id| g.layer(*id).op.kind() == "conv2d").collect();
    // Concat skip from the first conv to the second block's pool: the first conv feeds the concat
    // through the branch's pool, and the main path.
    let to = *main.iter().filter(|id| g.layer(**id).op.kind() == "max_pool").nth(1).unwrap();
    let mut r = rng(4);
    let g1 = apply(&g, &Morph::ConcatSkip { from: convs[0], to }, &mut r).unwrap();
    assert_same_output(&g, &g1, 1e-6);
    let g2 = apply(&g1, &Morph::Wider { layer: convs[0], n: 3 }, &mut r).unwrap();
    assert_same_output(&g, &g2, 1e-6);
    // The concat now has the main path's 4 channels and the widened branch's 7.
    let cat = g2.layers().iter().find(|l| l.op == Op::Concat).unwrap();
    assert_eq!(g2.shape_of(cat.id).unwrap()[0], 4 + 7);
    // And the conv after the second block widened too: its concat input is the widened branch.
    let g3 = apply(&g2, &Morph::Wider { layer: convs[1], n: 2 }, &mut r).unwrap();
    assert_eq!(g3.shape_of(cat.id).unwrap()[0], 6 + 7);
    assert_same_output(&g, &g3, 1e-6);
}

#[test]
fn deepening_right_after_a_skip() {
    let g = randomized(Graph::cnn(&[1, 8, 8], 3, &CnnConfig { blocks: 2, width: 3, dense: 4, ..Default::default() }, 2).unwrap(), 5);
    let main = g.main_path();
    let mut r = rng(6);
    for concat in [false, true] {
        let (from, to) = (main[1], main[6]);
        let m = if concat { Morph::ConcatSkip { from, to } } else { Morph::AddSkip { from, to } };
        let g1 = apply(&g, &m, &mut r).unwrap();
        // The merge (add) or the 1x1 conv after the concat is now on the main path right after `to`.
        let main1 = g1.main_path();
        let merged = main1[main1.iter().position(|&id| id == to).unwrap() + if concat { 2 } else { 1 }];
        for kind in [DeeperKind::Conv { kernel: 1 }, DeeperKind::Conv { kernel: 3 }, DeeperKind::Conv { kernel: 5 }] {
            let g2 = apply(&g1, &Morph::Deeper { after: merged, kind }, &mut r).unwrap();
            assert_same_output(&g, &g2, 1e-6);
            // Deeper again right after the skip's merge, then widen the inserted conv.
            let conv = g2.layer(g2.consumers(merged)[0]).id;
            let g3 = apply(&g2, &Morph::Wider { layer: conv, n: 2 }, &mut r).unwrap();
            assert_same_output(&g, &g3, 1e-6);
        }
    }
}

#[test]
fn widening_through_residual_adds_widens_every_branch() {
    let g = randomized(Graph::resnet(&[2, 8, 8], 3, &ResNetConfig { width: 3, stages: 2, blocks: 2 }, 3).unwrap(), 8);
    // The stem conv feeds the first stage's identity shortcuts: its width is tied to the
    // second conv of both first-stage blocks.
    let stem = g.main_path()[1];
    let mut r = rng(9);
    let g1 = apply(&g, &Morph::Wider { layer: stem, n: 2 }, &mut r).unwrap();
    assert_same_output(&g, &g1, 1e-6);
    let widened = g1.layers().iter().filter(|l| matches!(l.op, Op::Conv2d { filters: 5, .. })).count();
    assert_eq!(widened, 3, "stem and the two convs that add onto its output");
    // Every conv and dense except the classifier can be widened.
    let wider: Vec<Morph> = applicable(&g).into_iter().filter(|m| m.family() == "wider").collect();
    let convs = g.layers().iter().filter(|l| l.op.kind() == "conv2d").count();
    assert_eq!(wider.len(), convs);
}

#[test]
fn every_applicable_morphism_applies() {
    let g = randomized(Graph::cnn(&[2, 8, 8], 3, &CnnConfig { blocks: 2, width: 3, dense: 4, ..Default::default() }, 4).unwrap(), 10);
    let all = applicable(&g);
    assert!(all.len() > 50, "{}", all.len());
    let mut r = rng(11);
    let mut worst = 0.0f64;
    for m in &all {
        let g1 = apply(&g, m, &mut r).unwrap_or_else(|e| panic!("{m}: {e}"));
        worst = worst.max(assert_same_output(&g, &g1, 1e-6));
    }
    eprintln!("[morph] all {} applicable morphisms of a small cnn: worst relative change {worst:.2e}", all.len());
}

#[test]
fn architectures_without_weights_morph_the_same_way() {
    let mut r = rng(50);
    for _ in 0..5 {
        let g = random_graph(&mut r);
        let (mut arch, mut weighted) = (g.without_weights(), g.clone());
        for _ in 0..15 {
            assert_eq!(applicable(&arch), applicable(&weighted));
            let m = random_morph(&weighted, &mut r);
            weighted = apply(&weighted, &m, &mut r).unwrap();
            arch = apply(&arch, &m, &mut r).unwrap();
            assert!(arch.is_architecture_only());
            assert_eq!(arch.to_json(), weighted.to_json());
            assert_eq!(edit_distance(&arch, &weighted), 0.0);
        }
    }
}

#[test]
fn applicable_lists_no_huge_identity_dense_block() {
    let g = Graph::keras_mnist_convnet(&[1, 28, 28], 10, 0).unwrap();
    let main = g.main_path();
    let all = applicable(&g);
    assert_eq!(g.layer(main[7]).op, Op::Flatten);
    assert!(!all.contains(&Morph::Deeper { after: main[7], kind: DeeperKind::Dense }), "9216 x 9216 identity");
    assert!(all.contains(&Morph::Deeper { after: main[8], kind: DeeperKind::Dense }));
    assert!(all.contains(&Morph::Wider { layer: main[8], n: 128 }));
}

#[test]
fn impossible_requests_are_errors() {
    let g = Graph::cnn(&[1, 8, 8], 3, &CnnConfig { blocks: 2, width: 3, dense: 4, ..Default::default() }, 4).unwrap();
    let main = g.main_path();
    let out = g.output().id;
    let mut r = rng(1);
    let bad = [
        (Morph::Wider { layer: out, n: 2 }, "output layer"),
        (Morph::Wider { layer: main[1], n: 2 }, "only conv2d and dense"),
        (Morph::Wider { layer: main[3], n: 0 }, "positive"),
        (Morph::Wider { layer: LayerId(999), n: 1 }, "no layer 999"),
        (Morph::Deeper { after: out, kind: DeeperKind::Dense }, "output layer"),
        (Morph::Deeper { after: main[3], kind: DeeperKind::Dense }, "not features"),
        (Morph::Deeper { after: main[3], kind: DeeperKind::Conv { kernel: 2 } }, "odd kernel"),
        (Morph::AddSkip { from: main[5], to: main[2] }, "does not come after"),
        (Morph::AddSkip { from: main[1], to: out }, "images"),
    ];
    for (m, why) in bad {
        let e = apply(&g, &m, &mut r).unwrap_err().to_string();
        assert!(e.contains(why) && e.contains("does not apply"), "{m}: {e}");
    }
    // A branch layer is not on the main path.
    let g1 = apply(&g, &Morph::AddSkip { from: main[1], to: main[4] }, &mut r).unwrap();
    let branch = g1.layers().iter().find(|l| !g1.main_path().contains(&l.id)).unwrap().id;
    let e = apply(&g1, &Morph::Deeper { after: branch, kind: DeeperKind::Conv { kernel: 3 } }, &mut r).unwrap_err().to_string();
    assert!(e.contains("not on the main path"), "{e}");
    // Softmax cannot see copied units.
    let s = Sequential::new(&[4]).dense(3).softmax().dense(2).build(0).unwrap();
    let e = apply(&s, &Morph::Wider { layer: s.main_path()[1], n: 1 }, &mut r).unwrap_err().to_string();
    assert!(e.contains("softmax"), "{e}");
}

#[test]
fn records_serialise_and_describe_like_autokeras() {
    let g = Graph::cnn(&[1, 8, 8], 3, &CnnConfig { blocks: 1, width: 8, dense: 4, ..Default::default() }, 4).unwrap();
    let conv = g.main_path()[3];
    let m = Morph::Deeper { after: conv, kind: DeeperKind::Conv { kernel: 5 } };
    assert_eq!(m.describe(&g), format!("to_deeper_model {conv} Conv2d(8, 8, 5, 1)"));
    assert_eq!(Morph::Wider { layer: LayerId(34), n: 128 }.describe(&g), "to_wider_model 34 128");
    assert_eq!(Morph::AddSkip { from: LayerId(3), to: LayerId(7) }.to_string(), "to_add_skip_model 3 7");
    let list = vec![m.clone(), Morph::Wider { layer: conv, n: 8 }, Morph::ConcatSkip { from: LayerId(0), to: conv }];
    let json = serde_json::to_string(&list).unwrap();
    assert!(json.contains("\"type\":\"deeper\"") && json.contains("\"conv\":{\"kernel\":5}"), "{json}");
    let back: Vec<Morph> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, list);
}

#[test]
fn morphed_graphs_save_and_load() {
    let g = randomized(Graph::resnet(&[2, 8, 8], 3, &ResNetConfig { width: 2, stages: 2, blocks: 1 }, 3).unwrap(), 12);
    let mut r = rng(13);
    let mut g1 = g.clone();
    for _ in 0..10 {
        let m = random_morph(&g1, &mut r);
        g1 = apply(&g1, &m, &mut r).unwrap();
    }
    let back = {
        let mut b = Graph::from_json(&g1.to_json()).unwrap();
        b.load_weights(&g1.weights_to_safetensors().unwrap()).unwrap();
        b
    };
    assert_eq!(back, g1);
}

// --- edit distance ---

fn conv(filters: usize, kernel: usize, stride: usize) -> Op {
    Op::Conv2d { filters, kernel, stride, padding: netmorph::graph::Padding::Same, bias: true }
}

#[test]
fn layer_edit_distance_by_hand() {
    // Same layers: 0. One insertion: 1. Conv 64 3x3/1 vs conv 32 5x5/1:
    // mean(|64-32|/64, |3-5|/5, 0) = (0.5 + 0.4) / 3 = 0.3.
    let a = vec![conv(64, 3, 1), Op::Relu, Op::MaxPool { kernel: 2, stride: 2 }];
    assert_eq!(layers_distance(&a, &a), 0.0);
    let mut b = a.clone();
    b.insert(1, Op::BatchNorm { momentum: 0.99, eps: 1e-3 });
    assert_eq!(layers_distance(&a, &b), 1.0);
    let c = vec![conv(32, 5, 1), Op::Relu, Op::MaxPool { kernel: 2, stride: 2 }];
    assert!((layers_distance(&a, &c) - 0.3).abs() < 1e-12);
    // Pool 2/2 vs 3/1: mean(1/3, 1/2) = 5/12. Dense 10 vs 40: 0.75. Relu vs dense: 1 (or delete + insert = 2).
    let d = vec![conv(64, 3, 1), Op::Relu, Op::MaxPool { kernel: 3, stride: 1 }];
    assert!((layers_distance(&a, &d) - 5.0 / 12.0).abs() < 1e-12);
    assert_eq!(layers_distance(&[Op::Dense { units: 10, bias: true }], &[Op::Dense { units: 40, bias: false }]), 0.75);
    assert_eq!(layers_distance(&[Op::Relu], &[Op::Dense { units: 4, bias: true }]), 1.0);
    // Empty against three layers: three insertions.
    assert_eq!(layers_distance(&[], &a), 3.0);
}

#[test]
fn skip_distance_by_hand() {
    let s = |from, to, kind| Skip { from, to, kind };
    // (|2-4| + |3-2|) / (max(2,4) + max(3,2)) = 3/7.
    assert!((skip_distance(&s(2, 5, SkipKind::Add), &s(4, 6, SkipKind::Add)) - 3.0 / 7.0).abs() < 1e-12);
    assert_eq!(skip_distance(&s(2, 5, SkipKind::Add), &s(2, 5, SkipKind::Concat)), 1.0);
    // Matching: a = {(1,3) add, (5,9) add}, b = {(5,8) add}. Best pairs (5,9)-(5,8): 1/(5+4) = 1/9,
    // plus one unmatched skip.
    let a = [s(1, 3, SkipKind::Add), s(5, 9, SkipKind::Add)];
    let b = [s(5, 8, SkipKind::Add)];
    assert!((skips_distance(&a, &b) - (1.0 / 9.0 + 1.0)).abs() < 1e-12);
    assert!((skips_distance(&b, &a) - (1.0 / 9.0 + 1.0)).abs() < 1e-12);
    assert_eq!(skips_distance(&a, &a), 0.0);
    assert_eq!(skips_distance(&[], &a), 2.0);
}

#[test]
fn hungarian_finds_the_cheapest_matching() {
    let mut r = rng(21);
    for case in 0..60 {
        let (rows, cols) = (r.random_range(1..=5), r.random_range(1..=5));
        let cost: Vec<Vec<f64>> = (0..rows).map(|_| (0..cols).map(|_| r.random_range(0.0..1.0)).collect()).collect();
        let pairs = hungarian(&cost);
        assert_eq!(pairs.len(), rows.min(cols));
        let got: f64 = pairs.iter().map(|&(i, j)| cost[i][j]).sum();
        // Brute force over injective maps from the smaller side.
        let best = brute_force(&cost);
        assert!((got - best).abs() < 1e-9, "case {case}: {got} vs {best}");
    }
}

fn brute_force(cost: &[Vec<f64>]) -> f64 {
    fn go(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>, transpose: bool) -> f64 {
        let (rows, cols) = if transpose { (cost[0].len(), cost.len()) } else { (cost.len(), cost[0].len()) };
        if row == rows {
            return 0.0;
        }
        let mut best = f64::INFINITY;
        for c in 0..cols {
            if !used[c] {
                used[c] = true;
                let v = if transpose { cost[c][row] } else { cost[row][c] };
                best = best.min(v + go(cost, row + 1, used, transpose));
                used[c] = false;
            }
        }
        best
    }
    let transpose = cost.len() > cost[0].len();
    let cols = if transpose { cost.len() } else { cost[0].len() };
    go(cost, 0, &mut vec![false; cols], transpose)
}

#[test]
fn edit_distance_between_graphs_by_hand() {
    let g = Graph::cnn(&[1, 8, 8], 3, &CnnConfig { blocks: 2, width: 4, dense: 4, ..Default::default() }, 1).unwrap();
    assert_eq!(edit_distance(&g, &g), 0.0);
    let mut r = rng(2);
    let main = g.main_path();
    // A deeper conv block of conv and batch norm (its input is a conv, so no ReLU): two insertions.
    let deeper = apply(&g, &Morph::Deeper { after: main[3], kind: DeeperKind::Conv { kernel: 3 } }, &mut r).unwrap();
    assert_eq!(edit_distance(&g, &deeper), 2.0);
    // Widening conv 4 -> 6: substitution cost (2/6) / 3.
    let wider = apply(&g, &Morph::Wider { layer: main[3], n: 2 }, &mut r).unwrap();
    assert!((edit_distance(&g, &wider) - (2.0 / 6.0) / 3.0).abs() < 1e-12);
    // An add skip from main[1] to main[5]: the branch's pool and conv are off the main path; the add
    // is one inserted layer; one unmatched skip.
    let skip = apply(&g, &Morph::AddSkip { from: main[1], to: main[5] }, &mut r).unwrap();
    assert_eq!(Descriptor::of(&skip).skips, vec![Skip { from: 1, to: 6, kind: SkipKind::Add }]);
    assert_eq!(edit_distance(&g, &skip), 2.0);
    // Two graphs with one skip each, (1 -> 6) and (2 -> 6) add: layers equal, skips 1 apart in
    // start and 1 in length: (1 + 1) / (2 + 5) = 2/7.
    let skip2 = apply(&g, &Morph::AddSkip { from: main[2], to: main[5] }, &mut r).unwrap();
    assert!((edit_distance(&skip, &skip2) - 2.0 / 7.0).abs() < 1e-12);
    // Symmetric on random pairs.
    let mut gs = vec![g.clone(), deeper, wider, skip, skip2];
    for _ in 0..6 {
        let base = gs.choose(&mut r).unwrap().clone();
        let m = random_morph(&base, &mut r);
        gs.push(apply(&base, &m, &mut r).unwrap());
    }
    for a in &gs {
        for b in &gs {
            assert!((edit_distance(a, b) - edit_distance(b, a)).abs() < 1e-12);
        }
        assert_eq!(edit_distance(a, a), 0.0);
    }
}

// --- a morphed model still trains ---

use netmorph::graph::Model;
use netmorph::testing::{device, tensor};
use netmorph::train::train_step;
use netmorph::Tensor;

/// SGD through the training loop's own step, on one fixed batch (the same dropout masks each
/// step); returns the loss of each step.
fn sgd_losses(model: &Model, x: &Tensor, labels: &Tensor, steps: usize, lr: f32) -> Vec<f32> {
    let mut opt = netmorph::optim::Sgd::new(lr);
    let correct = Tensor::zeros(x.device(), &[1]).unwrap();
    (0..steps).map(|_| train_step(model, &mut opt, x.clone(), labels.clone(), 7, &correct).unwrap().to_vec().unwrap()[0]).collect()
}

#[test]
fn a_morphed_model_still_trains() {
    let dev = device();
    let mut r = rng(40);
    let original = Graph::cnn(&[2, 8, 8], 3, &CnnConfig { blocks: 2, width: 4, dense: 8, dropout: 0.25, ..Default::default() }, 9).unwrap();
    let mut g = original.clone();
    let mut history = vec![];
    for _ in 0..6 {
        let m = random_morph(&g, &mut r);
        history.push(m.describe(&g));
        g = apply_with_noise(&g, &m, netmorph::morph::DEFAULT_NOISE, &mut r).unwrap();
    }
    let batch = 16;
    let x = tensor(&dev, &rand_vec(&mut r, batch * 2 * 8 * 8), &[batch, 2, 8, 8]);
    let labels: Vec<u32> = (0..batch).map(|_| r.random_range(0..3)).collect();
    let labels = Tensor::from_u32(&dev, &labels, &[batch]).unwrap();
    let model = Model::new(&g, &dev).unwrap();
    let losses = sgd_losses(&model, &x, &labels, 12, 0.05);
    eprintln!("[morph] training after {history:?}: loss {:.4} -> {:.4}", losses[0], losses[losses.len() - 1]);
    assert!(losses[losses.len() - 1] < 0.9 * losses[0], "{losses:?}");
    // The trained weights go back to the graph, which still validates and saves.
    let mut trained = g.clone();
    model.sync_to_graph(&mut trained).unwrap();
    trained.validate().unwrap();
    assert_ne!(trained, g);
}
