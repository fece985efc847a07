//! Architecture graphs: shape inference, generators, summary, CPU forward, save and load.

use netmorph::graph::{ChannelNorm, CnnConfig, Graph, LayerId, Op, Padding, ResNetConfig, Sequential};
use netmorph::testing::{rand_vec, rng};
use std::collections::BTreeMap;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("netmorph-graph-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn keras_convnet_shapes_and_parameter_count_match_keras() {
    let g = Graph::keras_mnist_convnet(&[1, 28, 28], 10, 1).unwrap();
    let shapes = g.infer_shapes().unwrap();
    let main: Vec<Vec<usize>> = g.main_path().iter().map(|id| shapes[id].clone()).collect();
    assert_eq!(
        main,
        vec![
            vec![1, 28, 28],
            vec![32, 26, 26],
            vec![32, 26, 26],
            vec![64, 24, 24],
            vec![64, 24, 24],
            vec![64, 12, 12],
            vec![64, 12, 12],
            vec![9216],
            vec![128],
            vec![128],
            vec![128],
            vec![10]
        ]
    );
    // Keras's model.summary() for mnist_cnn: Total params: 1,199,882.
    assert_eq!(g.param_counts().unwrap(), (1_199_882, 0));
}

#[test]
fn cnn_generator_follows_autokeras_defaults() {
    let g = Graph::cnn(&[3, 32, 32], 10, &CnnConfig::default(), 0).unwrap();
    let kinds: Vec<&str> = g.layers().iter().map(|l| l.op.kind()).collect();
    let block = ["relu", "batch_norm", "conv2d", "max_pool"];
    let mut want = vec!["input"];
    for _ in 0..3 {
        want.extend(block);
    }
    want.extend(["global_avg_pool", "dropout", "dense", "relu", "dense"]);
    assert_eq!(kinds, want);
    assert_eq!(g.shape_of(g.output().id).unwrap(), vec![10]);
    let convs: Vec<&Op> = g.layers().iter().map(|l| &l.op).filter(|op| op.kind() == "conv2d").collect();
    assert!(convs.iter().all(|op| **op == Op::Conv2d { filters: 64, kernel: 3, stride: 1, padding: Padding::Same, bias: true }));
    // Small images stop pooling at 1x1 instead of failing.
    let tiny = Graph::cnn(&[1, 2, 2], 3, &CnnConfig { blocks: 3, width: 4, ..CnnConfig::default() }, 0).unwrap();
    tiny.validate().unwrap();
}

#[test]
fn resnet_generator_puts_the_residual_path_on_the_main_path() {
    let g = Graph::resnet(&[3, 16, 16], 5, &ResNetConfig { width: 8, stages: 3, blocks: 2 }, 3).unwrap();
    g.validate().unwrap();
    assert_eq!(g.shape_of(g.output().id).unwrap(), vec![5]);
    let main = g.main_path();
    let adds: Vec<&LayerId> = main.iter().filter(|id| g.layer(**id).op == Op::Add).collect();
    assert_eq!(adds.len(), 6);
    // Every add's first input is the block's second batch norm, on the main path.
    for id in adds {
        let first = g.layer(*id).inputs[0];
        assert_eq!(g.layer(first).op.kind(), "batch_norm");
        assert!(main.contains(&first));
    }
}

#[test]
fn shape_errors_name_the_layer_and_the_shapes() {
    let e = Sequential::new(&[1, 8, 8]).conv2d(4, 3).dense(10).build(0).unwrap_err().to_string();
    assert!(e.contains("layer 2") && e.contains("dense") && e.contains("[4, 6, 6]"), "{e}");

    let e = Sequential::new(&[1, 4, 4]).conv2d(4, 5).build(0).unwrap_err().to_string();
    assert!(e.contains("layer 1") && e.contains("[1, 4, 4]") && e.contains("5x5"), "{e}");

    let mut g = Graph::new(&[2, 8, 8]);
    let a = g.push(Op::Conv2d { filters: 3, kernel: 3, stride: 1, padding: Padding::Same, bias: true }, &[LayerId(0)]);
    let b = g.push(Op::Conv2d { filters: 3, kernel: 3, stride: 2, padding: Padding::Same, bias: true }, &[LayerId(0)]);
    g.push(Op::Add, &[a, b]);
    let e = g.infer_shapes().unwrap_err().to_string();
    assert!(e.contains("layer 3 (add)") && e.contains("[3, 8, 8]") && e.contains("[3, 4, 4]"), "{e}");

    let mut g = Graph::new(&[2, 8, 8]);
    let a = g.push(Op::Relu, &[LayerId(0)]);
    g.push(Op::Relu, &[LayerId(0)]);
    let e = g.validate().unwrap_err().to_string();
    assert!(e.contains(&format!("layer {a}")) && e.contains("never used"), "{e}");
}

#[test]
fn same_padding_follows_tensorflow() {
    // 1x1 image, 3x3 'same' conv: only the centre tap sees the pixel.
    let mut g = Sequential::new(&[1, 1, 1]).conv2d_with(1, 3, 1, Padding::Same).flatten().build(0).unwrap();
    let conv = g.main_path()[1];
    g.layer_mut(conv).param_mut("kernel").data = (1..=9).map(|v| v as f32).collect();
    assert_eq!(g.forward_cpu(&[2.0], 1).unwrap(), vec![10.0]);
    // 2x2 stride 2 'same' on 1x5: output 1x3, the odd padding row and column go after.
    let mut g = Sequential::new(&[1, 1, 5]).conv2d_with(1, 2, 2, Padding::Same).flatten().build(0).unwrap();
    let conv = g.main_path()[1];
    g.layer_mut(conv).param_mut("kernel").data = vec![0.0, 0.0, 1.0, 10.0];
    // Height 1 with a 2x2 window: one row of padding, after, so the kernel's second row reads only padding.
    let out = g.forward_cpu(&[1.0, 2.0, 3.0, 4.0, 5.0], 1).unwrap();
    assert_eq!(out, vec![0.0, 0.0, 0.0]);
    g.layer_mut(conv).param_mut("kernel").data = vec![1.0, 10.0, 0.0, 0.0];
    let out = g.forward_cpu(&[1.0, 2.0, 3.0, 4.0, 5.0], 1).unwrap();
    assert_eq!(out, vec![21.0, 43.0, 5.0]);
}

#[test]
fn cpu_forward_of_a_small_network_by_hand() {
    // dense [2 -> 2] with bias, relu, batch norm with known statistics, add of a skip, softmax.
    let mut g = Graph::new(&[2]);
    let d = g.push(Op::Dense { units: 2, bias: true }, &[LayerId(0)]);
    let r = g.push(Op::Relu, &[d]);
    let bn = g.push(Op::BatchNorm { momentum: 0.9, eps: 0.25 }, &[r]);
    let add = g.push(Op::Add, &[bn, LayerId(0)]);
    g.push(Op::Softmax, &[add]);
    g.init_weights(0).unwrap();
    g.layer_mut(d).param_mut("kernel").data = vec![1.0, -1.0, 2.0, 0.5];
    g.layer_mut(d).param_mut("bias").data = vec![0.5, 0.0];
    let set = |g: &mut Graph, name: &str, v: [f32; 2]| g.layer_mut(bn).param_mut(name).data = v.to_vec();
    set(&mut g, "gamma", [2.0, 1.0]);
    set(&mut g, "beta", [0.0, 1.0]);
    set(&mut g, "running_mean", [1.0, 0.0]);
    set(&mut g, "running_var", [3.75, 0.75]);
    let x = [1.0, 1.0];
    // dense: [1 + 2 + 0.5, -1 + 0.5] = [3.5, -0.5]; relu: [3.5, 0]; bn: [(3.5-1)/2*2, 0+1] = [2.5, 1];
    // add x: [3.5, 2]; softmax.
    let (a, b) = (3.5f64, 2.0f64);
    let want = [1.0 / (1.0 + (b - a).exp()), 1.0 / (1.0 + (a - b).exp())];
    let got = g.forward_cpu(&x, 1).unwrap();
    assert!((got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12, "{got:?} vs {want:?}");
}

#[test]
fn summary_lists_layers_shapes_and_parameters() {
    let g = Graph::keras_mnist_convnet(&[1, 28, 28], 10, 1).unwrap();
    let s = g.summary().unwrap();
    println!("{s}");
    assert!(s.contains("conv2d 32 3x3/1 valid") && s.contains("[32, 26, 26]") && s.contains("320"), "{s}");
    assert!(s.contains("dense 128") && s.contains("1179776"), "{s}");
    assert!(s.contains("Total params: 1199882"), "{s}");
    let r = Graph::resnet(&[3, 8, 8], 4, &ResNetConfig::default(), 0).unwrap();
    let s = r.summary().unwrap();
    assert!(s.contains("Non-trainable params:") && s.contains('*'), "{s}");
}

fn random_input(g: &Graph, batch: usize, seed: u64) -> Vec<f64> {
    rand_vec(&mut rng(seed), batch * g.input_shape().iter().product::<usize>())
}

#[test]
fn save_and_load_round_trip_exactly() {
    let dir = temp_dir("roundtrip");
    for (name, g) in [
        ("cnn", Graph::cnn(&[3, 8, 8], 4, &CnnConfig { blocks: 2, width: 5, ..CnnConfig::default() }, 11).unwrap()),
        ("resnet", Graph::resnet(&[2, 8, 8], 3, &ResNetConfig { width: 4, stages: 2, blocks: 1 }, 12).unwrap()),
        ("keras", Graph::keras_mnist_convnet(&[1, 12, 12], 10, 13).unwrap()),
    ] {
        let mut g = g;
        if name == "cnn" {
            g.set_input_normalization(Some(ChannelNorm { mean: vec![0.5, 0.25, 0.125], std: vec![0.2, 0.3, 0.4] })).unwrap();
            g.set_class_names(["cat", "dog", "eel", "fox"].map(String::from).to_vec()).unwrap();
        }
        // Non-trivial statistics, so that every tensor matters.
        let mut r = rng(5);
        g.for_each_param_mut(|_, _, t| t.data.iter_mut().for_each(|v| *v += rand::Rng::random_range(&mut r, 0.0..0.5)));
        let (json, weights) = (dir.join(format!("{name}.json")), dir.join(format!("{name}.safetensors")));
        g.save(&json, &weights).unwrap();
        let text = std::fs::read_to_string(&json).unwrap();
        assert!(text.contains("\"version\": 1") && text.contains("\"format\": \"netmorph.graph\""), "{text}");
        let loaded = Graph::load(&json, &weights).unwrap();
        assert_eq!(loaded, g, "{name}: the loaded graph differs");
        let x = random_input(&g, 2, 9);
        let (a, b) = (g.forward_cpu(&x, 2).unwrap(), loaded.forward_cpu(&x, 2).unwrap());
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "{name}: outputs differ");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn json_is_readable() {
    let g = Sequential::new(&[1, 4, 4]).conv2d(2, 3).flatten().dense(3).build(0).unwrap();
    let json = g.to_json();
    println!("{json}");
    let conv = "{\"id\":1,\"type\":\"conv2d\",\"filters\":2,\"kernel\":3,\"stride\":1,\"padding\":\"valid\",\"bias\":true,\"inputs\":[0]}";
    assert!(json.lines().any(|l| l.trim().trim_end_matches(',') == conv), "{json}");
    let back = Graph::from_json(&json).unwrap();
    assert_eq!(back.to_json(), json);
    assert!(back.validate().is_err(), "an architecture without weights is not a complete graph");
}

#[test]
fn load_errors_are_clear() {
    let dir = temp_dir("errors");
    let g = Sequential::new(&[1, 6, 6]).conv2d(2, 3).batch_norm().relu().flatten().dense(3).build(0).unwrap();
    let (json, weights) = (dir.join("g.json"), dir.join("g.safetensors"));
    g.save(&json, &weights).unwrap();
    let text = std::fs::read_to_string(&json).unwrap();

    // Wrong version.
    let v2 = dir.join("v2.json");
    std::fs::write(&v2, text.replace("\"version\": 1", "\"version\": 2")).unwrap();
    let e = Graph::load(&v2, &weights).unwrap_err().to_string();
    assert!(e.contains("v2.json") && e.contains("version Some(2)") && e.contains("reads version 1"), "{e}");

    // Not our format.
    let e = Graph::from_json("{\"layers\": []}").unwrap_err().to_string();
    assert!(e.contains("not a netmorph.graph file"), "{e}");

    // An architecture whose weights no longer fit: the conv now has 3 filters.
    let wide = dir.join("wide.json");
    std::fs::write(&wide, text.replace("\"filters\":2", "\"filters\":3")).unwrap();
    let e = Graph::load(&wide, &weights).unwrap_err().to_string();
    assert!(e.contains("tensor `1.kernel` has shape [2, 1, 3, 3]") && e.contains("[3, 1, 3, 3]"), "{e}");

    // A missing tensor, and an unexpected one.
    let mut g2 = g.clone();
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    for (id, name, t) in g.params() {
        tensors.insert(format!("{id}.{name}"), (t.shape.clone(), t.data.clone()));
    }
    let write = |tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>| -> Vec<u8> {
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(k, (s, d))| {
                (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), bytemuck::cast_slice(d)).unwrap())
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    };
    let mut missing = tensors.clone();
    missing.remove("2.running_var");
    let e = g2.load_weights(&write(&missing)).unwrap_err().to_string();
    assert!(e.contains("missing tensor `2.running_var` [2]") && e.contains("batch_norm"), "{e}");
    let mut extra = tensors.clone();
    extra.insert("9.kernel".into(), (vec![1], vec![0.0]));
    let e = g2.load_weights(&write(&extra)).unwrap_err().to_string();
    assert!(e.contains("`9.kernel` matches no weight"), "{e}");
    let e = g2.load_weights(b"garbage").unwrap_err().to_string();
    assert!(e.contains("not a safetensors file"), "{e}");
    // A failed load leaves the graph as it was.
    assert_eq!(g2, g);
    assert!(g2.load_weights(&write(&tensors)).is_ok());
    assert_eq!(g2, g);
    std::fs::remove_dir_all(dir).ok();
}

// --- the model on the device ---

use netmorph::autograd::Tape;
use netmorph::graph::Model;
use netmorph::morph::{apply, DeeperKind, Morph};
use netmorph::testing::{device, tensor};
use netmorph::train::Network;

/// max |got - want| / max |want|, printed as an `[accuracy]` figure.
fn assert_close_max_norm(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = got.iter().zip(want).map(|(&g, w)| (g as f64 - w).abs()).fold(0.0, f64::max) / scale;
    eprintln!("[accuracy] {what}: worst relative error (max norm) {err:.2e}");
    assert!(err <= tol, "{what}: {err:.3e} > {tol:.0e}");
}

/// Small graphs covering every layer type the model runs.
fn zoo() -> Vec<(&'static str, Graph)> {
    let mut r = rng(31);
    let cnn = Graph::cnn(&[3, 8, 8], 4, &CnnConfig { blocks: 2, width: 5, dense: 6, ..CnnConfig::default() }, 1).unwrap();
    let main = cnn.main_path();
    let mut morphed = apply(&cnn, &Morph::ConcatSkip { from: main[3], to: main[8] }, &mut r).unwrap();
    morphed = apply(&morphed, &Morph::AddSkip { from: main[0], to: main[5] }, &mut r).unwrap();
    morphed = apply(&morphed, &Morph::Deeper { after: main[12], kind: DeeperKind::Dense }, &mut r).unwrap();
    morphed = apply(&morphed, &Morph::Wider { layer: main[7], n: 3 }, &mut r).unwrap();
    let mlp = Sequential::new(&[6]).dense(7).batch_norm().relu().dropout(0.3).dense(3).build(4).unwrap();
    let avg = Sequential::new(&[2, 9, 9])
        .conv2d_with(4, 3, 2, Padding::Same)
        .layer(Op::AvgPool { kernel: 3, stride: 1 })
        .conv2d_with(3, 1, 1, Padding::Valid)
        .flatten()
        .dense(5)
        .build(5)
        .unwrap();
    let mut normalised = Graph::resnet(&[3, 8, 8], 3, &ResNetConfig { width: 4, stages: 2, blocks: 1 }, 6).unwrap();
    normalised.set_input_normalization(Some(ChannelNorm { mean: vec![0.4, 0.5, 0.6], std: vec![0.25, 0.5, 2.0] })).unwrap();
    let mut shifted = normalised.clone();
    shifted.set_test_time_shifts(vec![[0, 0], [1, 0], [-1, 0], [0, 2], [3, -1]]).unwrap();
    let graphs = vec![
        ("cnn", cnn),
        ("normalised resnet", normalised),
        ("normalised resnet with test-time shifts", shifted),
        ("resnet", Graph::resnet(&[2, 8, 8], 3, &ResNetConfig { width: 4, stages: 2, blocks: 1 }, 2).unwrap()),
        ("keras convnet", Graph::keras_mnist_convnet(&[1, 10, 10], 10, 3).unwrap()),
        ("morphed cnn", morphed),
        ("mlp", mlp),
        ("strided and avg pooled", avg),
    ];
    graphs
        .into_iter()
        .enumerate()
        .map(|(i, (name, mut g))| {
            g.randomize_weights(100 + i as u64);
            (name, g)
        })
        .collect()
}

fn input_shape(g: &Graph, batch: usize) -> Vec<usize> {
    [&[batch], g.input_shape()].concat()
}

#[test]
fn model_evaluation_matches_the_cpu_forward() {
    let dev = device();
    for (name, g) in zoo() {
        for batch in [1, 3] {
            let x = random_input(&g, batch, 7);
            let model = Model::new(&g, &dev).unwrap();
            let got = model.predict(&tensor(&dev, &x, &input_shape(&g, batch))).unwrap().to_vec().unwrap();
            assert_close_max_norm(&got, &g.forward_cpu(&x, batch).unwrap(), 1e-4, &format!("{name} batch {batch}"));
        }
    }
}

#[test]
fn softmax_layer_runs_for_inference_only() {
    let dev = device();
    let g = Sequential::new(&[4]).dense(3).softmax().build(1).unwrap();
    let x = random_input(&g, 2, 1);
    let model = Model::new(&g, &dev).unwrap();
    let xt = tensor(&dev, &x, &[2, 4]);
    let got = model.predict(&xt).unwrap().to_vec().unwrap();
    assert_close_max_norm(&got, &g.forward_cpu(&x, 2).unwrap(), 1e-5, "softmax");
    let tape = Tape::new();
    let xv = tape.constant(xt);
    let e = model.forward(&tape, &xv, true, 0).unwrap_err().to_string();
    assert!(e.contains("softmax") && e.contains("inference only"), "{e}");
}

#[test]
fn training_mode_uses_batch_statistics_and_dropout() {
    let dev = device();
    let mut g = Sequential::new(&[3, 4, 4]).batch_norm().flatten().dropout(0.5).dense(2).build(1).unwrap();
    g.randomize_weights(2);
    let bn = g.main_path()[1];
    let model = Model::new(&g, &dev).unwrap();
    let x = random_input(&g, 4, 3);
    let xt = tensor(&dev, &x, &[4, 3, 4, 4]);
    let run = |training: bool, seed: u64| {
        let tape = Tape::no_grad();
        let xv = tape.constant(xt.clone());
        model.forward(&tape, &xv, training, seed).unwrap().value().to_vec().unwrap()
    };
    // Evaluation: deterministic, running statistics untouched.
    let eval = run(false, 0);
    assert_eq!(eval, run(false, 9));
    assert_eq!(model.to_graph().unwrap(), g, "an evaluation forward changed the weights");
    // Training: dropout masks follow the seed, and batch norm updates its running statistics.
    let (a, b, c) = (run(true, 1), run(true, 1), run(true, 2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, eval);
    let after = model.to_graph().unwrap();
    let (old, new) = (g.layer(bn).param("running_mean"), after.layer(bn).param("running_mean"));
    assert_ne!(old, new, "training did not update the running mean");
    assert_eq!(g.layer(bn).param("gamma"), after.layer(bn).param("gamma"));
}

#[test]
fn a_loaded_model_gives_bit_identical_outputs() {
    let dev = device();
    let dir = temp_dir("model");
    for (name, g) in zoo() {
        let model = Model::new(&g, &dev).unwrap();
        // Move the running statistics away from the graph's, then save what the device holds.
        let x = random_input(&g, 3, 5);
        let xt = tensor(&dev, &x, &input_shape(&g, 3));
        let tape = Tape::no_grad();
        model.forward(&tape, &tape.constant(xt.clone()), true, 1).unwrap();
        let mut trained = g.clone();
        model.sync_to_graph(&mut trained).unwrap();
        let (json, weights) = (dir.join("m.json"), dir.join("m.safetensors"));
        trained.save(&json, &weights).unwrap();
        let loaded = Model::new(&Graph::load(&json, &weights).unwrap(), &dev).unwrap();
        let (a, b) = (model.predict(&xt).unwrap().to_vec().unwrap(), loaded.predict(&xt).unwrap().to_vec().unwrap());
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "{name}: outputs differ after save and load");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn input_normalisation_shifts_and_scales_each_channel() {
    let plain = Sequential::new(&[2, 3, 3]).conv2d(2, 2).flatten().dense(3).build(1).unwrap();
    let norm = ChannelNorm { mean: vec![0.5, -1.0], std: vec![0.25, 4.0] };
    let mut normalised = plain.clone();
    normalised.set_input_normalization(Some(norm.clone())).unwrap();
    let x = random_input(&plain, 2, 3);
    let by_hand: Vec<f64> = x.iter().enumerate().map(|(i, v)| (v - norm.mean[(i / 9) % 2] as f64) / norm.std[(i / 9) % 2] as f64).collect();
    assert_eq!(normalised.forward_cpu(&x, 2).unwrap(), plain.forward_cpu(&by_hand, 2).unwrap());

    // Statistics of bytes: channel 0 holds 0 and 255 (mean 0.5, deviation 0.5), channel 1 is constant.
    let images = [0u8, 255, 7, 7, 255, 0, 7, 7];
    let stats = ChannelNorm::of_images(&images, 2, 2, 1.0 / 255.0);
    assert!((stats.mean[0] - 0.5).abs() < 1e-6 && (stats.std[0] - 0.5).abs() < 1e-6, "{stats:?}");
    assert!((stats.mean[1] - 7.0 / 255.0).abs() < 1e-6 && stats.std[1] == 1.0, "a constant channel keeps its scale: {stats:?}");

    let mut g = plain.clone();
    for (bad, why) in [
        (ChannelNorm { mean: vec![0.0], std: vec![1.0] }, "1 means and 1 deviations for 2 channels"),
        (ChannelNorm { mean: vec![0.0, 0.0], std: vec![1.0, 0.0] }, "deviation 0 must be positive"),
        (ChannelNorm { mean: vec![f32::NAN, 0.0], std: vec![1.0, 1.0] }, "mean NaN is not finite"),
    ] {
        let e = g.set_input_normalization(Some(bad)).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    let e = g.set_class_names(vec!["a".into(), "b".into()]).unwrap_err().to_string();
    assert!(e.contains("2 class names for an output of shape [3]"), "{e}");
}

/// `x` `[n, c, h, w]` moved by `[dx, dy]` with zero fill, written independently of the ops.
fn shifted_by_hand(x: &[f64], h: usize, w: usize, [dx, dy]: [i32; 2]) -> Vec<f64> {
    let plane = h * w;
    (0..x.len())
        .map(|i| {
            let (p, y, xx) = (i / plane, (i % plane) / w, i % w);
            let (sy, sx) = (y as i32 - dy, xx as i32 - dx);
            let inside = sy >= 0 && sy < h as i32 && sx >= 0 && sx < w as i32;
            if inside {
                x[p * plane + sy as usize * w + sx as usize]
            } else {
                0.0
            }
        })
        .collect()
}

#[test]
fn test_time_shifts_average_the_outputs_of_the_shifted_inputs() {
    let mut plain = Graph::cnn(&[2, 7, 9], 5, &CnnConfig { blocks: 2, width: 4, dense: 6, ..CnnConfig::default() }, 8).unwrap();
    plain.randomize_weights(9);
    plain.set_input_normalization(Some(ChannelNorm { mean: vec![0.2, 0.7], std: vec![0.5, 0.3] })).unwrap();
    let shifts = vec![[0, 0], [1, 0], [-2, 0], [0, 1], [4, -3]];
    let mut shifted = plain.clone();
    shifted.set_test_time_shifts(shifts.clone()).unwrap();
    let batch = 3;
    let x = random_input(&plain, batch, 10);
    let mut want = vec![0.0; batch * 5];
    for &by in &shifts {
        let out = plain.forward_cpu(&shifted_by_hand(&x, 7, 9, by), batch).unwrap();
        want.iter_mut().zip(&out).for_each(|(m, o)| *m += o / shifts.len() as f64);
    }
    let got = shifted.forward_cpu(&x, batch).unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + b.abs())), "{got:?}\nvs {want:?}");
    let unshifted = plain.forward_cpu(&x, batch).unwrap();
    assert!(got.iter().zip(&unshifted).any(|(a, b)| (a - b).abs() > 1e-3), "the shifts changed nothing");

    // On the device: evaluation averages, training ignores the shifts (same dropout seed).
    let dev = device();
    let xt = tensor(&dev, &x, &input_shape(&plain, batch));
    let (plain_model, shifted_model) = (Model::new(&plain, &dev).unwrap(), Model::new(&shifted, &dev).unwrap());
    assert_close_max_norm(&shifted_model.predict(&xt).unwrap().to_vec().unwrap(), &want, 1e-4, "test-time shifts on the device");
    let train = |model: &Model| {
        let tape = Tape::no_grad();
        model.forward(&tape, &tape.constant(xt.clone()), true, 4).unwrap().value().to_vec().unwrap()
    };
    assert_eq!(train(&shifted_model), train(&plain_model), "training ignores test-time shifts");
    // Gradients flow through the shifted copies on a recording tape (evaluation mode).
    let tape = Tape::new();
    let xv = tape.param(&xt);
    let logits = shifted_model.forward(&tape, &xv, false, 0).unwrap();
    let grads = tape.backward_with(&logits, tensor(&dev, &vec![1.0; batch * 5], &[batch, 5])).unwrap();
    let dx = grads.of(&xt).expect("a gradient for the input").to_vec().unwrap();
    assert!(dx.iter().all(|v| v.is_finite()) && dx.iter().any(|v| *v != 0.0));

    // Saved and loaded with the architecture, readable in its JSON.
    let dir = temp_dir("test-time-shifts");
    let (json, weights) = (dir.join("g.json"), dir.join("g.safetensors"));
    shifted.save(&json, &weights).unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.contains("\"test_time_shifts\":[[0,0],[1,0],[-2,0],[0,1],[4,-3]]"), "{text}");
    assert_eq!(Graph::load(&json, &weights).unwrap(), shifted);
    assert!(!plain.to_json().contains("test_time_shifts"), "no shifts, no field");

    // Shifts that cannot apply are refused by name, on the graph and in a file.
    let mut g = plain.clone();
    for (bad, why) in [
        (vec![[9, 0]], "test-time shift [9, 0] moves a 7x9 image out of its frame"),
        (vec![[0, -7]], "test-time shift [0, -7] moves a 7x9 image out of its frame"),
        (vec![[1, 1], [0, 0], [1, 1]], "test-time shift [1, 1] is listed twice"),
        ((0..65).map(|i| [i % 5 - 2, i / 5 % 13 - 6]).collect(), "65 test-time shifts, more than the 64 allowed"),
    ] {
        let e = g.set_test_time_shifts(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    assert_eq!(g, plain, "a refused setting leaves the graph as it was");
    let mut flat = Sequential::new(&[6]).dense(3).build(1).unwrap();
    let e = flat.set_test_time_shifts(vec![[1, 0]]).unwrap_err().to_string();
    assert!(e.contains("test-time shifts need an image input [c, h, w], not [6]"), "{e}");
    std::fs::write(&json, text.replace("[4,-3]", "[4,-30]")).unwrap();
    let e = Graph::load(&json, &weights).unwrap_err().to_string();
    assert!(e.contains("g.json") && e.contains("[4, -30]"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}
