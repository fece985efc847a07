//! ONNX export: exported models run in tract (a pure-Rust ONNX runtime) and give the CPU
//! reference's probabilities, for random graphs put through random morphisms, the generators and a
//! merged ensemble; the metadata, the symbolic batch and the errors.

use netmorph::export::onnx::{self, tensor_name, CLASS_NAMES_KEY, INPUT_NAME, OPSET, OUTPUT_NAME, TEST_TIME_MEAN};
use netmorph::export::onnx_proto as pb;
use netmorph::export::{to_onnx, write_onnx};
use netmorph::graph::ensemble::average_logits;
use netmorph::graph::{ChannelNorm, CnnConfig, Graph, Op, Padding, ResNetConfig, Sequential};
use netmorph::morph::{applicable, apply, Morph};
use netmorph::testing::{rng, TestRng};
use prost::Message;
use rand::seq::IndexedRandom;
use rand::Rng;
use std::collections::BTreeMap;
use tract_onnx::prelude::{tvec, Framework, InferenceModel, InferenceModelExt, IntoRunnable, Tensor, TractResult};

/// Pixels as the exported model takes them, like netmorph's graphs: bytes divided by 255.
fn random_pixels(rng: &mut TestRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(0..=255u8) as f32 / 255.0).collect()
}

/// Row-wise softmax of `[n, classes]` logits.
fn softmax(logits: &[f64], classes: usize) -> Vec<f64> {
    logits
        .chunks(classes)
        .flat_map(|row| {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
            let exp: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            exp.into_iter().map(move |e| e / sum)
        })
        .collect()
}

fn max_abs_difference(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max)
}

/// Runs the exported `bytes` in tract on `pixels` (`[batch, ...input_shape]`) and returns the
/// named output tensors, flattened. The model is loaded with its symbolic batch as it is.
fn run_tract(bytes: &[u8], input_shape: &[usize], batch: usize, pixels: &[f32], outputs: &[&str]) -> TractResult<Vec<Vec<f32>>> {
    let model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?.with_outputs_by_name(outputs)?.into_optimized()?.into_runnable()?;
    let shape: Vec<usize> = std::iter::once(batch).chain(input_shape.iter().copied()).collect();
    let input = Tensor::from_shape(&shape, pixels)?;
    let results = model.run(tvec!(input.into()))?;
    results.iter().map(|t| Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())).collect()
}

/// The worst differences from the CPU reference: probabilities (absolute), logits (relative to
/// their largest magnitude).
#[derive(Clone, Copy, Debug, Default)]
struct Worst {
    probabilities: f64,
    logits: f64,
}

impl std::fmt::Display for Worst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "probabilities {:.2e} (absolute), logits {:.2e} (relative)", self.probabilities, self.logits)
    }
}

impl Worst {
    fn max(self, other: Worst) -> Worst {
        Worst { probabilities: self.probabilities.max(other.probabilities), logits: self.logits.max(other.logits) }
    }
}

/// Exports `graph`, runs it in tract on random pixels, and compares its probabilities (and its
/// logits, read from inside the model) with the CPU reference.
fn check_against_reference(graph: &Graph, batch: usize, rng: &mut TestRng) -> Worst {
    let bytes = to_onnx(graph).unwrap_or_else(|e| panic!("export failed: {e}\n{}", graph.summary().unwrap()));
    let input_shape = graph.input_shape().to_vec();
    let pixels = random_pixels(rng, batch * input_shape.iter().product::<usize>());
    let scaled: Vec<f64> = pixels.iter().map(|&p| p as f64).collect();
    let logits = graph.forward_cpu(&scaled, batch).unwrap();
    let classes = logits.len() / batch;
    let ends_in_softmax = matches!(graph.output().op, Op::Softmax);
    let want = if ends_in_softmax { logits.clone() } else { softmax(&logits, classes) };

    // With test-time shifts the output layer's tensor holds every copy: the mean is the logits.
    let logits_name = if graph.test_time_shifts().is_empty() { tensor_name(graph.output()) } else { TEST_TIME_MEAN.to_string() };
    let names: Vec<&str> = if ends_in_softmax { vec![OUTPUT_NAME] } else { vec![OUTPUT_NAME, &logits_name] };
    let got = run_tract(&bytes, &input_shape, batch, &pixels, &names)
        .unwrap_or_else(|e| panic!("tract failed: {e:?}\n{}", graph.summary().unwrap()));
    let mut worst = Worst { probabilities: max_abs_difference(&got[0], &want), logits: 0.0 };
    assert!(worst.probabilities <= 1e-4, "probabilities differ by {:.3e}\n{}", worst.probabilities, graph.summary().unwrap());
    for row in got[0].chunks(classes) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
    }
    if !ends_in_softmax {
        // Logits are unbounded: relative to their scale. Tighter than the probabilities, which a
        // softmax squeezes: a batch norm's epsilon left at ONNX's default shows here only.
        let scale = logits.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        worst.logits = max_abs_difference(&got[1], &logits) / scale;
        assert!(worst.logits <= 1e-5, "logits differ by {:.3e} (relative)\n{}", worst.logits, graph.summary().unwrap());
    }
    worst
}

/// A random graph of every kind the morphism tests use (batch norm and dropout in each).
fn random_graph(rng: &mut TestRng) -> Graph {
    let c = rng.random_range(1..=3);
    let input = [c, rng.random_range(7..=9), 8];
    let classes = rng.random_range(2..=5);
    let seed = rng.random();
    match rng.random_range(0..3) {
        0 => {
            let cfg = CnnConfig {
                blocks: rng.random_range(1..=3),
                width: rng.random_range(2..=5),
                kernel: *[2, 3, 4].choose(rng).unwrap(),
                dense: rng.random_range(2..=6),
                ..Default::default()
            };
            Graph::cnn(&input, classes, &cfg, seed).unwrap()
        }
        1 => Graph::resnet(
            &input,
            classes,
            &ResNetConfig { width: rng.random_range(2..=4), stages: rng.random_range(1..=2), blocks: rng.random_range(1..=2) },
            seed,
        )
        .unwrap(),
        _ => {
            let mut s = Sequential::new(&input).conv2d(rng.random_range(2..=4), 3).relu().batch_norm();
            // A strided same conv on an odd size: asymmetric padding.
            s = s.conv2d_with(rng.random_range(2..=4), rng.random_range(2..=4), 2, Padding::Same).relu();
            s = if rng.random_bool(0.5) { s.max_pool(2) } else { s.avg_pool(2) };
            s = s.dropout(0.25);
            s = if rng.random_bool(0.5) { s.flatten() } else { s.global_avg_pool() };
            s.dense(rng.random_range(3..=6)).batch_norm().relu().dropout(0.5).dense(classes).build(seed).unwrap()
        }
    }
}

/// A random legal morphism, widening by 1 to 3 units so that sizes stay small.
fn random_morph(g: &Graph, rng: &mut TestRng) -> Morph {
    let mut by_family: BTreeMap<&str, Vec<Morph>> = BTreeMap::new();
    for m in applicable(g) {
        by_family.entry(m.family()).or_default().push(m);
    }
    let families: Vec<&str> = by_family.keys().copied().collect();
    match by_family[families.choose(rng).unwrap()].choose(rng).unwrap().clone() {
        Morph::Wider { layer, .. } => Morph::Wider { layer, n: rng.random_range(1..=3) },
        m => m,
    }
}

#[test]
fn random_morphed_graphs_give_the_reference_probabilities() {
    let mut rng = rng(16);
    let mut worst = Worst::default();
    let mut families: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..30 {
        let mut graph = random_graph(&mut rng);
        for _ in 0..rng.random_range(2..=6) {
            let morph = random_morph(&graph, &mut rng);
            *families.entry(morph.family()).or_default() += 1;
            graph = apply(&graph, &morph, &mut rng).unwrap();
        }
        // Morphisms insert identities (batch norms of fresh statistics, identity kernels): random
        // weights everywhere make every layer count.
        graph.randomize_weights(rng.random());
        for layer in graph.layers() {
            *kinds.entry(layer.op.kind()).or_default() += 1;
        }
        worst = worst.max(check_against_reference(&graph, rng.random_range(1..=3), &mut rng));
    }
    eprintln!("[onnx] random morphed graphs: worst differences {worst}; morphisms {families:?}");
    assert_eq!(families.len(), 4, "every morphism family was exercised: {families:?}");
    for kind in ["conv2d", "batch_norm", "dropout", "add", "concat", "max_pool", "global_avg_pool", "dense"] {
        assert!(kinds.contains_key(kind), "no {kind} layer in any graph: {kinds:?}");
    }
}

#[test]
fn generators_and_ensembles_give_the_reference_probabilities() {
    let mut rng = rng(17);
    let mut cnn = Graph::cnn(&[3, 9, 7], 10, &CnnConfig { blocks: 3, width: 6, dense: 8, ..Default::default() }, 1).unwrap();
    cnn.randomize_weights(2);
    let mut resnet = Graph::resnet(&[3, 9, 9], 10, &ResNetConfig { width: 4, stages: 2, blocks: 2 }, 3).unwrap();
    resnet.randomize_weights(4);
    let mut mnist = Graph::keras_mnist_convnet(&[1, 12, 12], 10, 5).unwrap();
    mnist.randomize_weights(6);
    // A flat input (features): batch norm and the normalisation over [N, features].
    let mut flat = Sequential::new(&[6]).dense(5).batch_norm().relu().dropout(0.2).dense(4).build(11).unwrap();
    flat.randomize_weights(12);
    flat.set_input_normalization(Some(ChannelNorm { mean: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6], std: vec![0.5, 1.0, 1.5, 2.0, 0.25, 0.3] }))
        .unwrap();
    let mut worst = Worst::default();
    for graph in [&cnn, &resnet, &mnist, &flat] {
        worst = worst.max(check_against_reference(graph, 4, &mut rng));
    }
    // Three members of different architectures side by side: a three-input add of their logits.
    let mut other = Graph::cnn(&[3, 9, 9], 10, &CnnConfig { blocks: 2, width: 3, dense: 5, ..Default::default() }, 7).unwrap();
    other.randomize_weights(8);
    let mut third = Graph::resnet(&[3, 9, 9], 10, &ResNetConfig { width: 3, stages: 1, blocks: 1 }, 9).unwrap();
    third.randomize_weights(10);
    let ensemble = average_logits(&[resnet, other, third]).unwrap();
    assert_eq!(ensemble.output().inputs.len(), 3);
    worst = worst.max(check_against_reference(&ensemble, 3, &mut rng));
    eprintln!("[onnx] generators and ensemble: worst differences {worst}");
}

#[test]
fn test_time_shifts_travel_with_the_model() {
    let mut rng = rng(18);
    let cross = vec![[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]];
    // A normalised input (the shifts come before the normalisation: zero is a black pixel), shifts
    // larger than one pixel, and a graph without the unshifted copy.
    let mut cnn = Graph::cnn(&[2, 9, 7], 6, &CnnConfig { blocks: 2, width: 4, dense: 8, ..Default::default() }, 31).unwrap();
    cnn.randomize_weights(32);
    cnn.set_input_normalization(Some(ChannelNorm { mean: vec![0.3, 0.6], std: vec![0.5, 0.2] })).unwrap();
    let plain_probabilities = check_against_reference(&cnn, 3, &mut rng);
    let mut worst = Worst::default();
    for shifts in [cross.clone(), vec![[2, -3], [-6, 8], [1, 1]]] {
        let mut shifted = cnn.clone();
        shifted.set_test_time_shifts(shifts).unwrap();
        worst = worst.max(check_against_reference(&shifted, 3, &mut rng));
    }
    // An ensemble of shifted members, and a graph ending in a softmax (its probabilities averaged).
    let members: Vec<Graph> = (0..2)
        .map(|i| {
            let mut g = Graph::resnet(&[1, 8, 8], 4, &ResNetConfig { width: 3, stages: 1, blocks: 1 }, 40 + i).unwrap();
            g.randomize_weights(50 + i);
            g.set_test_time_shifts(cross.clone()).unwrap();
            g
        })
        .collect();
    let ensemble = average_logits(&members).unwrap();
    assert_eq!(ensemble.test_time_shifts(), cross.as_slice(), "the members' shifts carry over");
    worst = worst.max(check_against_reference(&ensemble, 2, &mut rng));
    let mut softmax_graph = Sequential::new(&[1, 6, 6]).conv2d(3, 3).relu().flatten().dense(4).softmax().build(60).unwrap();
    softmax_graph.randomize_weights(61);
    softmax_graph.set_test_time_shifts(cross.clone()).unwrap();
    worst = worst.max(check_against_reference(&softmax_graph, 2, &mut rng));
    eprintln!("[onnx] test-time shifts: worst differences {worst} (plain {plain_probabilities})");

    // The exported graph stacks the copies once and averages them once.
    let mut shifted = cnn.clone();
    shifted.set_test_time_shifts(cross).unwrap();
    let model = pb::ModelProto::decode(to_onnx(&shifted).unwrap().as_slice()).unwrap();
    let nodes = &model.graph.as_ref().unwrap().node;
    let count = |op: &str| nodes.iter().filter(|n| n.op_type() == op).count();
    assert_eq!((count("Pad"), count("Slice"), count("ReduceMean"), count("Conv")), (4, 4, 1, 2), "{nodes:?}");
}

/// Every kind of layer in one small graph, with odd sizes, a trailing softmax and dropout after it.
#[test]
fn a_graph_that_ends_in_softmax_gets_no_second_one() {
    let mut graph = Sequential::new(&[2, 7, 7])
        .conv2d_with(3, 4, 2, Padding::Same)
        .batch_norm()
        .relu()
        .avg_pool(2)
        .flatten()
        .dropout(0.3)
        .dense(4)
        .softmax()
        .dropout(0.1)
        .build(11)
        .unwrap();
    graph.randomize_weights(12);
    let model = pb::ModelProto::decode(to_onnx(&graph).unwrap().as_slice()).unwrap();
    let nodes = &model.graph.as_ref().unwrap().node;
    let softmaxes = nodes.iter().filter(|n| n.op_type() == "Softmax").count();
    assert_eq!(softmaxes, 1, "{nodes:?}");
    assert!(nodes.iter().all(|n| n.op_type() != "Dropout" && n.op_type() != "Identity"), "dropout leaves no node");
    assert_eq!(nodes.last().unwrap().output, [OUTPUT_NAME]);
    // The conv's "same" padding of a 4x4 window on 7x7 with stride 2: 3 pixels, 1 before and 2 after.
    let conv = nodes.iter().find(|n| n.op_type() == "Conv").unwrap();
    let pads = conv.attribute.iter().find(|a| a.name() == "pads").unwrap();
    assert_eq!(pads.ints, [1, 1, 2, 2]);

    let mut rng = rng(13);
    // The graph's output is the dropout after the softmax: the reference is already probabilities.
    let pixels = random_pixels(&mut rng, 2 * 98);
    let scaled: Vec<f64> = pixels.iter().map(|&p| p as f64).collect();
    let want = graph.forward_cpu(&scaled, 2).unwrap();
    let got = run_tract(&to_onnx(&graph).unwrap(), &[2, 7, 7], 2, &pixels, &[OUTPUT_NAME]).unwrap();
    let difference = max_abs_difference(&got[0], &want);
    assert!(difference <= 1e-5, "{difference:.3e}");
}

#[test]
fn the_model_declares_its_input_output_opset_and_symbolic_batch() {
    let graph = Graph::cnn(&[3, 8, 8], 5, &CnnConfig { blocks: 2, width: 4, dense: 6, ..Default::default() }, 21).unwrap();
    let bytes = to_onnx(&graph).unwrap();
    let model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(model.opset_import.len(), 1);
    assert!(model.opset_import[0].version() >= 13 && model.opset_import[0].version() == OPSET);
    assert_eq!(model.producer_name(), "netmorph");
    assert_eq!(model.producer_version(), env!("CARGO_PKG_VERSION"));
    let g = model.graph.as_ref().unwrap();
    let dims = |info: &pb::ValueInfoProto| -> Vec<String> {
        let Some(pb::type_proto::Value::TensorType(t)) = &info.r#type.as_ref().unwrap().value else { panic!("not a tensor: {info:?}") };
        assert_eq!(t.elem_type(), pb::tensor_proto::DataType::Float as i32);
        t.shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                pb::tensor_shape_proto::dimension::Value::DimValue(v) => v.to_string(),
                pb::tensor_shape_proto::dimension::Value::DimParam(p) => p.clone(),
            })
            .collect()
    };
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name(), INPUT_NAME);
    assert_eq!(dims(&g.input[0]), ["N", "3", "8", "8"]);
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name(), OUTPUT_NAME);
    assert_eq!(dims(&g.output[0]), ["N", "5"]);
    // Weights are initializers, not graph inputs; batch norm in evaluation mode has one output.
    assert!(g.initializer.iter().any(|t| t.name().ends_with(".running_var")));
    let bn = g.node.iter().find(|n| n.op_type() == "BatchNormalization").unwrap();
    assert_eq!((bn.input.len(), bn.output.len()), (5, 1));

    // One loaded model runs batches of different sizes.
    let model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let mut rng = rng(22);
    for batch in [1, 4] {
        let pixels = random_pixels(&mut rng, batch * 192);
        let input = Tensor::from_shape(&[batch, 3, 8, 8], &pixels).unwrap();
        let out = model.run(tvec!(input.into())).unwrap();
        assert_eq!(out[0].shape(), [batch, 5]);
        let scaled: Vec<f64> = pixels.iter().map(|&p| p as f64).collect();
        let want = softmax(&graph.forward_cpu(&scaled, batch).unwrap(), 5);
        let got: Vec<f32> = out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
        assert!(max_abs_difference(&got, &want) <= 1e-4);
    }
}

#[test]
fn normalization_and_class_names_travel_with_the_model() {
    let mut graph = Graph::resnet(&[3, 8, 8], 3, &ResNetConfig { width: 3, stages: 2, blocks: 1 }, 31).unwrap();
    graph.randomize_weights(32);
    let unnamed = tract_onnx::onnx().model_for_read(&mut &to_onnx(&graph).unwrap()[..]).unwrap();
    let property = |model: &InferenceModel, key: &str| -> String {
        model.properties[key].try_as_plain_ram().unwrap().to_scalar::<String>().unwrap().clone()
    };
    let names = |model: &InferenceModel| -> Vec<String> {
        serde_json::from_str(&property(model, &format!("onnx.metadata_props.{CLASS_NAMES_KEY}"))).unwrap()
    };
    assert_eq!(names(&unnamed), ["0", "1", "2"]);

    let norm = ChannelNorm { mean: vec![0.49, 0.48, 0.45], std: vec![0.25, 0.24, 0.26] };
    graph.set_input_normalization(Some(norm)).unwrap();
    let class_names: Vec<String> = ["cat", "dog \"quoted\"", "café"].map(String::from).to_vec();
    graph.set_class_names(class_names.clone()).unwrap();
    let bytes = to_onnx(&graph).unwrap();
    let named = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap();
    assert_eq!(names(&named), class_names);
    assert_eq!(property(&named, "onnx.producer_name"), "netmorph");

    // The normalisation is inside the model: it takes the same pixels / 255.
    let nodes = pb::ModelProto::decode(bytes.as_slice()).unwrap().graph.unwrap().node;
    let op_types: Vec<&str> = nodes.iter().take(2).map(|n| n.op_type()).collect();
    assert_eq!(op_types, ["Sub", "Div"]);
    assert_eq!(nodes[0].input[0], INPUT_NAME, "the model's input goes straight to the normalisation");
    let worst = check_against_reference(&graph, 3, &mut rng(33));
    // Without the normalisation the same model computes something else.
    let mut plain = graph.clone();
    plain.set_input_normalization(None).unwrap();
    let pixels = random_pixels(&mut rng(34), 192);
    let with = run_tract(&bytes, &[3, 8, 8], 1, &pixels, &[OUTPUT_NAME]).unwrap();
    let without = run_tract(&to_onnx(&plain).unwrap(), &[3, 8, 8], 1, &pixels, &[OUTPUT_NAME]).unwrap();
    let change = with[0].iter().zip(&without[0]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(change > 1e-3, "the normalisation changed the probabilities by only {change}");
    eprintln!("[onnx] normalised input: worst differences {worst}");
}

#[test]
fn what_cannot_be_exported_is_an_error_that_names_the_layer() {
    // Output is an image, not logits.
    let images = Sequential::new(&[1, 8, 8]).conv2d(2, 3).build(1).unwrap();
    let err = to_onnx(&images).unwrap_err().to_string();
    assert!(err.contains("layer 1 (conv2d 2 3x3/1 valid)") && err.contains("[2, 6, 6]"), "{err}");

    // An architecture without weights.
    let graph = Graph::cnn(&[1, 8, 8], 3, &CnnConfig { blocks: 1, width: 2, dense: 3, ..Default::default() }, 2).unwrap();
    let err = to_onnx(&graph.without_weights()).unwrap_err().to_string();
    assert!(err.contains("missing weight") && err.contains("layer"), "{err}");

    // A path in a directory that does not exist: the error names it, and nothing is left behind.
    let dir = std::env::temp_dir().join(format!("netmorph-onnx-test-{}", std::process::id()));
    let missing = dir.join("no-such-dir").join("model.onnx");
    let err = write_onnx(&graph, &missing).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[test]
fn write_onnx_replaces_the_file_with_the_exported_bytes() {
    let dir = std::env::temp_dir().join(format!("netmorph-onnx-write-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(&path, b"an older model").unwrap();
    let graph = Graph::cnn(&[1, 8, 8], 3, &CnnConfig { blocks: 1, width: 2, dense: 3, ..Default::default() }, 3).unwrap();
    write_onnx(&graph, &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), to_onnx(&graph).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "model.onnx").collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // The bytes are a model tract loads.
    tract_onnx::onnx().model_for_path(&path).unwrap().into_optimized().unwrap();
    // `model` gives the same messages that `to_onnx` serialises.
    assert_eq!(onnx::model(&graph).unwrap().encode_to_vec(), to_onnx(&graph).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
