//! An ensemble as one graph: the members side by side on a shared input, their logits averaged by
//! an add layer. The 1/k of the mean is folded into each member's last dense layer, so the result
//! is an ordinary graph: it trains, evaluates, exports and loads like any other, and no reader
//! needs to know it was an ensemble. Averaging logits (a normalised geometric mean of the
//! members' probabilities) rather than probabilities keeps the output logits, which the loss and
//! every consumer of a graph expect.

use super::{Graph, LayerId, Op};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// The graph whose logits are the mean of `members`' logits. Each member must end in a dense
/// layer, and all must take the same input and give the same number of outputs. One member is
/// returned as it is.
pub fn average_logits(members: &[Graph]) -> Result<Graph> {
    let first = members.first().ok_or_else(|| Error::Invalid("an ensemble needs at least one member".into()))?;
    if members.len() == 1 {
        return Ok(first.clone());
    }
    let scale = 1.0 / members.len() as f32;
    let mut merged = Graph::new(first.input_shape());
    merged.set_input_normalization(first.input_normalization().cloned())?;
    // The mean over shifts of the mean over members is the mean over members of each one's mean
    // over shifts: the members' common shifts carry over.
    merged.set_test_time_shifts(first.test_time_shifts().to_vec())?;
    let mut outputs = Vec::with_capacity(members.len());
    for (m, member) in members.iter().enumerate() {
        member.validate()?;
        if member.input_shape() != first.input_shape()
            || member.input_normalization() != first.input_normalization()
            || member.test_time_shifts() != first.test_time_shifts()
        {
            return Err(Error::shape(
                "ensemble",
                format!(
                    "member {m} takes {:?} normalised by {:?} with test-time shifts {:?} but member 0 takes {:?} normalised by {:?} with {:?}",
                    member.input_shape(),
                    member.input_normalization(),
                    member.test_time_shifts(),
                    first.input_shape(),
                    first.input_normalization(),
                    first.test_time_shifts()
                ),
            ));
        }
        let (out_shape, want) = (member.shape_of(member.output().id)?, first.shape_of(first.output().id)?);
        if out_shape != want {
            return Err(Error::shape("ensemble", format!("member {m} gives {out_shape:?} but member 0 gives {want:?}")));
        }
        if !matches!(member.output().op, Op::Dense { .. }) {
            return Err(Error::Invalid(format!(
                "ensemble member {m} ends in {} (layer {}), not a dense layer: only logits can be averaged",
                member.output().op,
                member.output().id
            )));
        }
        let mut ids: HashMap<LayerId, LayerId> = HashMap::from([(member.input().id, merged.input().id)]);
        for layer in &member.layers()[1..] {
            let inputs: Vec<LayerId> = layer.inputs.iter().map(|i| ids[i]).collect();
            let id = merged.push(layer.op.clone(), &inputs);
            merged.layer_mut(id).params = layer.params.clone();
            ids.insert(layer.id, id);
        }
        let out = ids[&member.output().id];
        for tensor in merged.layer_mut(out).params.values_mut() {
            tensor.data.iter_mut().for_each(|v| *v *= scale);
        }
        outputs.push(out);
    }
    merged.push(Op::Add, &outputs);
    merged.set_class_names(first.class_names().to_vec())?;
    merged.validate()?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::CnnConfig;
    use rand::{Rng, SeedableRng};

    fn member(seed: u64, width: usize) -> Graph {
        let config = CnnConfig { blocks: 2, width, dense: 8, ..Default::default() };
        let mut graph = Graph::cnn(&[1, 8, 8], 4, &config, seed).unwrap();
        // Batch norms away from the identity, so the members differ in every part.
        graph.randomize_weights(seed + 100);
        graph
    }

    #[test]
    fn the_ensemble_computes_the_mean_of_its_members_logits() {
        let members = [member(1, 4), member(2, 6), member(3, 3)];
        let merged = average_logits(&members).unwrap();
        let n = 5;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let x: Vec<f64> = (0..n * 64).map(|_| rng.random_range(0.0..1.0)).collect();
        let outs: Vec<Vec<f64>> = members.iter().map(|g| g.forward_cpu(&x, n).unwrap()).collect();
        let got = merged.forward_cpu(&x, n).unwrap();
        assert_eq!(got.len(), n * 4);
        for (i, v) in got.iter().enumerate() {
            let mean = outs.iter().map(|o| o[i]).sum::<f64>() / 3.0;
            assert!((v - mean).abs() <= 1e-5 * (1.0 + mean.abs()), "output {i}: {v} vs mean {mean}");
        }
        let (trainable, _) = merged.param_counts().unwrap();
        let sum: usize = members.iter().map(|g| g.param_counts().unwrap().0).sum();
        assert_eq!(trainable, sum, "every member's weights, nothing else");
    }

    #[test]
    fn one_member_is_itself_and_mismatches_are_named() {
        let one = member(1, 4);
        assert_eq!(average_logits(std::slice::from_ref(&one)).unwrap(), one);
        assert!(average_logits(&[]).unwrap_err().to_string().contains("at least one"));

        let other_input = Graph::cnn(&[1, 10, 10], 4, &CnnConfig { blocks: 2, width: 4, dense: 8, ..Default::default() }, 1).unwrap();
        let err = average_logits(&[one.clone(), other_input]).unwrap_err().to_string();
        assert!(err.contains("member 1 takes [1, 10, 10]"), "{err}");

        let other_classes = Graph::cnn(&[1, 8, 8], 3, &CnnConfig { blocks: 2, width: 4, dense: 8, ..Default::default() }, 1).unwrap();
        let err = average_logits(&[one.clone(), other_classes]).unwrap_err().to_string();
        assert!(err.contains("member 1 gives [3]"), "{err}");

        let mut probabilities = one.clone();
        let out = probabilities.output().id;
        probabilities.push(Op::Softmax, &[out]);
        let err = average_logits(&[one, probabilities]).unwrap_err().to_string();
        assert!(err.contains("member 1 ends in softmax"), "{err}");
    }
}
