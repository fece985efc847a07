//! Net2Net widening. A channel map sends each channel of a widened tensor to the old channel it
//! copies (the identity on the old ones, then the copies). The map flows forward through layers
//! that act per channel (batch norm, ReLU, pools, dropout), is offset at concats and spread over
//! the pixels at a flatten; each conv or dense layer that reads a widened tensor divides the
//! copied inputs' weights by their number of copies. An add must see the same map on all its
//! inputs, so the layers that produce its other inputs are widened with the same copies.

use super::{add_noise, not_applicable, Morph};
use crate::error::Result;
use crate::graph::{Graph, HostTensor, Layer, LayerId, Op};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};

/// New channel -> old channel.
type Map = Vec<usize>;

/// The widened layers (with their output maps) and the map of every tensor whose width changes.
pub(super) struct Plan {
    imposed: BTreeMap<LayerId, Map>,
    maps: HashMap<LayerId, Map>,
}

enum Conflict {
    /// This tensor feeds an add whose other inputs carry this map: widen its producers too.
    Impose(LayerId, Map),
    Fail(String),
}

/// A map that copies one unit: enough to test whether a layer can be widened at all.
pub(super) fn probe_map(width: usize) -> Map {
    (0..width).chain([0]).collect()
}

pub(super) fn plan(graph: &Graph, shapes: &HashMap<LayerId, Vec<usize>>, target: LayerId, map: &Map) -> Result<Plan, String> {
    let mut imposed = BTreeMap::from([(target, map.clone())]);
    // Each round widens at least one more layer, so this settles within the graph's size.
    for _ in 0..=graph.layers().len() {
        match propagate(graph, shapes, &imposed) {
            Ok(maps) => return Ok(Plan { imposed, maps }),
            Err(Conflict::Fail(why)) => return Err(why),
            Err(Conflict::Impose(tensor, m)) => impose(graph, tensor, &m, &mut imposed)?,
        }
    }
    Err("the widening does not settle".into())
}

fn propagate(
    graph: &Graph,
    shapes: &HashMap<LayerId, Vec<usize>>,
    imposed: &BTreeMap<LayerId, Map>,
) -> Result<HashMap<LayerId, Map>, Conflict> {
    let mut maps: HashMap<LayerId, Map> = HashMap::new();
    let output = graph.output().id;
    for layer in graph.layers() {
        let first = layer.inputs.first().and_then(|i| maps.get(i)).cloned();
        let out = match &layer.op {
            Op::Input { .. } => None,
            Op::Conv2d { .. } | Op::Dense { .. } => imposed.get(&layer.id).cloned(),
            Op::BatchNorm { .. } | Op::Relu | Op::MaxPool { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool | Op::Dropout { .. } => first,
            Op::Flatten => first.map(|m| match shapes[&layer.inputs[0]][..] {
                [_, h, w] => m.iter().flat_map(|&c| (0..h * w).map(move |p| c * h * w + p)).collect(),
                _ => m,
            }),
            Op::Softmax => {
                if first.is_some() {
                    return Err(Conflict::Fail(format!("softmax layer {} would see copied units", layer.id)));
                }
                None
            }
            Op::Concat => {
                if layer.inputs.iter().all(|i| !maps.contains_key(i)) {
                    None
                } else {
                    let mut m = vec![];
                    let mut offset = 0;
                    for i in &layer.inputs {
                        let old = shapes[i][0];
                        match maps.get(i) {
                            Some(mi) => m.extend(mi.iter().map(|c| offset + c)),
                            None => m.extend(offset..offset + old),
                        }
                        offset += old;
                    }
                    Some(m)
                }
            }
            Op::Add => {
                let mut widened = layer.inputs.iter().filter_map(|i| maps.get(i));
                match widened.next() {
                    None => None,
                    Some(m) => {
                        if widened.any(|other| other != m) {
                            return Err(Conflict::Fail(format!("add layer {} would sum differently widened inputs", layer.id)));
                        }
                        if let Some(&plain) = layer.inputs.iter().find(|i| !maps.contains_key(i)) {
                            return Err(Conflict::Impose(plain, m.clone()));
                        }
                        Some(m.clone())
                    }
                }
            }
        };
        if let Some(m) = out {
            if layer.id == output {
                return Err(Conflict::Fail(format!("the output layer {} would change width", layer.id)));
            }
            maps.insert(layer.id, m);
        }
    }
    Ok(maps)
}

/// Widens the producers of `tensor` (through per-channel layers and adds) with map `m`.
fn impose(graph: &Graph, tensor: LayerId, m: &Map, imposed: &mut BTreeMap<LayerId, Map>) -> Result<(), String> {
    let layer = graph.layer(tensor);
    match &layer.op {
        Op::Conv2d { .. } | Op::Dense { .. } => match imposed.get(&tensor) {
            Some(existing) if existing != m => Err(format!("layer {tensor} would need two different widenings")),
            _ => {
                imposed.insert(tensor, m.clone());
                Ok(())
            }
        },
        Op::BatchNorm { .. } | Op::Relu | Op::MaxPool { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool | Op::Dropout { .. } => {
            impose(graph, layer.inputs[0], m, imposed)
        }
        Op::Add => layer.inputs.iter().try_for_each(|&i| impose(graph, i, m, imposed)),
        op => Err(format!("layer {tensor} ({op}) feeds an add with the widened layer and cannot be widened")),
    }
}

/// How many new channels copy each old channel.
fn counts(map: &[usize]) -> Vec<usize> {
    let mut c = vec![0; map.iter().max().map_or(0, |m| m + 1)];
    map.iter().for_each(|&i| c[i] += 1);
    c
}

/// `new[o, j, i] = old[o, map[j], i] * scale(j)` for data laid out `[outer, mid, inner]`.
fn gather(data: &[f32], outer: usize, inner: usize, map: &[usize], scale: impl Fn(usize) -> f64) -> Vec<f32> {
    let mid = data.len() / (outer * inner);
    let mut out = Vec::with_capacity(outer * map.len() * inner);
    for o in 0..outer {
        for (j, &src) in map.iter().enumerate() {
            let s = scale(j);
            let start = (o * mid + src) * inner;
            out.extend(data[start..start + inner].iter().map(|&v| if s == 1.0 { v } else { (v as f64 * s) as f32 }));
        }
    }
    out
}

/// New indices that repeat an earlier one (the copies, which get the noise).
fn copies(map: &[usize]) -> Vec<usize> {
    let mut seen = vec![false; map.iter().max().map_or(0, |m| m + 1)];
    map.iter().enumerate().filter_map(|(j, &i)| if std::mem::replace(&mut seen[i], true) { Some(j) } else { None }).collect()
}

pub(super) fn wider<R: Rng + ?Sized>(graph: &Graph, target: LayerId, n: usize, noise: f32, rng: &mut R) -> Result<Graph> {
    let morph = Morph::Wider { layer: target, n };
    if !graph.contains(target) {
        return Err(not_applicable(&morph, format!("there is no layer {target}")));
    }
    let width = match graph.layer(target).op {
        Op::Conv2d { filters, .. } => filters,
        Op::Dense { units, .. } => units,
        ref op => return Err(not_applicable(&morph, format!("layer {target} is {op}; only conv2d and dense layers can be widened"))),
    };
    if n == 0 {
        return Err(not_applicable(&morph, "n must be positive"));
    }
    let shapes = graph.infer_shapes()?;
    let map: Map = (0..width).chain((0..n).map(|_| rng.random_range(0..width))).collect();
    let plan = plan(graph, &shapes, target, &map).map_err(|why| not_applicable(&morph, why))?;
    let mut g = graph.clone();
    for layer in graph.layers() {
        let in_map = layer.inputs.first().and_then(|i| plan.maps.get(i));
        let out_map = plan.imposed.get(&layer.id);
        if in_map.is_some() || out_map.is_some() {
            remap_layer(g.layer_mut(layer.id), in_map, out_map, noise, rng);
        }
    }
    Ok(g)
}

/// Rewrites one layer's weights for a widened input (`in_map`) and/or output (`out_map`).
fn remap_layer<R: Rng + ?Sized>(layer: &mut Layer, in_map: Option<&Map>, out_map: Option<&Map>, noise: f32, rng: &mut R) {
    let Layer { op, params, .. } = layer;
    if params.is_empty() {
        // An architecture without weights: only the widths change.
        if let (Op::Conv2d { filters: width, .. } | Op::Dense { units: width, .. }, Some(m)) = (op, out_map) {
            *width = m.len();
        }
        return;
    }
    let take = |params: &mut BTreeMap<String, HostTensor>, name: &str| params.remove(name).expect("validated weights");
    match op {
        Op::Conv2d { filters, kernel, bias, .. } => {
            let k2 = *kernel * *kernel;
            let mut w = take(params, "kernel");
            if let Some(m) = in_map {
                let cnt = counts(m);
                w.data = gather(&w.data, w.shape[0], k2, m, |j| 1.0 / cnt[m[j]] as f64);
                w.shape[1] = m.len();
            }
            if let Some(m) = out_map {
                let row = w.shape[1] * k2;
                let amplitude = noise * w.max_abs();
                w.data = gather(&w.data, 1, row, m, |_| 1.0);
                w.shape[0] = m.len();
                for j in copies(m) {
                    add_noise(&mut w.data[j * row..(j + 1) * row], amplitude, rng);
                }
                if *bias {
                    let b = take(params, "bias");
                    params.insert("bias".into(), HostTensor::new(vec![m.len()], gather(&b.data, 1, 1, m, |_| 1.0)));
                }
                *filters = m.len();
            }
            params.insert("kernel".into(), w);
        }
        Op::Dense { units, bias } => {
            let mut w = take(params, "kernel");
            if let Some(m) = in_map {
                let cnt = counts(m);
                w.data = gather(&w.data, 1, w.shape[1], m, |j| 1.0 / cnt[m[j]] as f64);
                w.shape[0] = m.len();
            }
            if let Some(m) = out_map {
                let amplitude = noise * w.max_abs();
                let rows = w.shape[0];
                w.data = gather(&w.data, rows, 1, m, |_| 1.0);
                w.shape[1] = m.len();
                for j in copies(m) {
                    for r in 0..rows {
                        add_noise(&mut w.data[r * m.len() + j..r * m.len() + j + 1], amplitude, rng);
                    }
                }
                if *bias {
                    let b = take(params, "bias");
                    params.insert("bias".into(), HostTensor::new(vec![m.len()], gather(&b.data, 1, 1, m, |_| 1.0)));
                }
                *units = m.len();
            }
            params.insert("kernel".into(), w);
        }
        Op::BatchNorm { .. } => {
            let m = in_map.expect("batch norm is only remapped for its input");
            for t in params.values_mut() {
                *t = HostTensor::new(vec![m.len()], gather(&t.data, 1, 1, m, |_| 1.0));
            }
        }
        _ => {}
    }
}
