//! A composite gradient check through a small network with batch norm, max pooling, an add skip,
//! a concat skip, global pooling, a dense layer and softmax cross-entropy: the GPU tape's gradients
//! against central finite differences of the same network composed from the ops' f64 references.

use netmorph::autograd::Tape;
use netmorph::ops::batch_norm::{cpu as bn, BatchNormConfig, Layout};
use netmorph::ops::conv2d::{conv2d_geometry, cpu as conv, Conv2dConfig, Padding};
use netmorph::ops::pool::{cpu as pool, Pool2dConfig};
use netmorph::ops::{add::cpu as add, concat::cpu as concat, dense::cpu as dense, relu::cpu as relu, softmax::cpu as xent};
use netmorph::testing::*;
use netmorph::Tensor;

const N: usize = 2;
const C: usize = 3;
const S: usize = 6;
const EPS: f64 = 1e-3;

struct Params {
    x: Vec<f64>,
    w1: Vec<f64>,
    gamma: Vec<f64>,
    beta: Vec<f64>,
    w2: Vec<f64>,
    b2: Vec<f64>,
    w3: Vec<f64>,
    b3: Vec<f64>,
}

fn same() -> Conv2dConfig {
    Conv2dConfig { stride: 1, padding: Padding::Same }
}

/// The network in f64: conv -> BN -> ReLU -> max pool = p; s = p + conv(p); concat(s, p) ->
/// global average pool -> dense -> cross-entropy.
fn loss(p: &Params, labels: &[u32]) -> f64 {
    let g1 = conv2d_geometry(&[N, 2, S, S], &[C, 2, 3, 3], same()).unwrap();
    let c1 = conv::conv2d(&p.x, &p.w1, None, &g1);
    let l = Layout { outer: N, channels: C, inner: S * S };
    let r = relu::relu(&bn::batch_norm_train(&c1, &l, &p.gamma, &p.beta, EPS));
    let (pooled, _) = pool::max_pool2d(&r, [N, C, S, S], Pool2dConfig { kernel: 2, stride: 2 });
    let h = S / 2;
    let g2 = conv2d_geometry(&[N, C, h, h], &[C, C, 3, 3], same()).unwrap();
    let s = add::add(&pooled, &conv::conv2d(&pooled, &p.w2, Some(&p.b2), &g2));
    let shape = vec![N, C, h, h];
    let cat = concat::concat_channels(&[s, pooled.clone()], &[shape.clone(), shape]);
    let gap = pool::global_avg_pool(&cat, [N, 2 * C, h, h]);
    let logits = dense::dense(&gap, &p.w3, &p.b3, N, 2 * C, 4);
    xent::softmax_cross_entropy(&logits, labels, 4)
}

#[test]
fn tape_gradients_match_finite_differences_through_a_composite_network() {
    let dev = device();
    let mut rng = rng(77);
    let p = Params {
        x: rand_vec(&mut rng, N * 2 * S * S),
        w1: rand_vec(&mut rng, C * 2 * 9),
        gamma: rand_vec(&mut rng, C).iter().map(|g| 1.0 + 0.5 * g).collect(),
        beta: rand_vec(&mut rng, C),
        w2: rand_vec(&mut rng, C * C * 9),
        b2: rand_vec(&mut rng, C),
        w3: rand_vec(&mut rng, 2 * C * 4),
        b3: rand_vec(&mut rng, 4),
    };
    let labels = [1u32, 3];

    let tape = Tape::new();
    let var = |v: &[f64], shape: &[usize]| tape.param(&tensor(&dev, v, shape));
    let (x, w1) = (var(&p.x, &[N, 2, S, S]), var(&p.w1, &[C, 2, 3, 3]));
    let (gamma, beta) = (var(&p.gamma, &[C]), var(&p.beta, &[C]));
    let (w2, b2, w3, b3) = (var(&p.w2, &[C, C, 3, 3]), var(&p.b2, &[C]), var(&p.w3, &[2 * C, 4]), var(&p.b3, &[4]));
    let running_mean = Tensor::zeros(&dev, &[C]).unwrap();
    let running_var = Tensor::full(&dev, &[C], 1.0).unwrap();
    let bn_cfg = BatchNormConfig { momentum: 0.99, eps: EPS as f32, training: true };
    let y = tape.conv2d(&x, &w1, None, same()).unwrap();
    let y = tape.batch_norm(&y, &gamma, &beta, &running_mean, &running_var, bn_cfg).unwrap();
    let y = tape.relu(&y).unwrap();
    let pooled = tape.max_pool2d(&y, Pool2dConfig { kernel: 2, stride: 2 }).unwrap();
    let branch = tape.conv2d(&pooled, &w2, Some(&b2), same()).unwrap();
    let s = tape.add(&pooled, &branch).unwrap();
    let cat = tape.concat_channels(&[&s, &pooled]).unwrap();
    let gap = tape.global_avg_pool(&cat).unwrap();
    let logits = tape.dense(&gap, &w3, Some(&b3)).unwrap();
    let labels_var = tape.constant(Tensor::from_u32(&dev, &labels, &[N]).unwrap());
    let l = tape.softmax_cross_entropy(&logits, &labels_var).unwrap();
    let got_loss = l.value().to_vec().unwrap()[0] as f64;
    let want_loss = loss(&p, &labels);
    assert!((got_loss - want_loss).abs() < 1e-4 * want_loss.abs().max(1.0), "loss {got_loss} vs {want_loss}");

    let grads = tape.backward(&l).unwrap();
    type Field = fn(&mut Params) -> &mut Vec<f64>;
    // The first conv has no bias: batch norm would cancel it (its gradient is exactly zero).
    let checks: [(&str, &netmorph::autograd::Var, Field); 8] = [
        ("x", &x, |p| &mut p.x),
        ("w1", &w1, |p| &mut p.w1),
        ("gamma", &gamma, |p| &mut p.gamma),
        ("beta", &beta, |p| &mut p.beta),
        ("w2", &w2, |p| &mut p.w2),
        ("b2", &b2, |p| &mut p.b2),
        ("w3", &w3, |p| &mut p.w3),
        ("b3", &b3, |p| &mut p.b3),
    ];
    let mut p = p;
    for (name, v, field) in checks {
        let original = field(&mut p).clone();
        let numeric = numeric_grad(&original, |vals| {
            let mut q = Params { ..clone_params(&p) };
            *field(&mut q) = vals.to_vec();
            loss(&q, &labels)
        });
        *field(&mut p) = original;
        let got = grads.get(v).unwrap_or_else(|| panic!("no gradient for {name}")).to_vec().unwrap();
        assert_close(&got, &numeric, 2e-3, &format!("composite d loss / d {name}"));
    }
}

fn clone_params(p: &Params) -> Params {
    Params {
        x: p.x.clone(),
        w1: p.w1.clone(),
        gamma: p.gamma.clone(),
        beta: p.beta.clone(),
        w2: p.w2.clone(),
        b2: p.b2.clone(),
        w3: p.w3.clone(),
        b3: p.b3.clone(),
    }
}
