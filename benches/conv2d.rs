//! Convolution throughput (GFLOP/s: criterion's element rate, one element = one FLOP) for the
//! seed model's conv layers and the search's CNN generator's (widths 24 and 32, 'same' padding)
//! at batch 128: forward, backward-data and backward-weight timed separately, with the adapter in
//! the benchmark id. The device is synchronised inside the timed
//! region. Compare with `cargo bench --bench matmul -- 1024` on the same machine.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netmorph::ops::conv2d::{conv2d, conv2d_geometry, Conv2dConfig, Padding};
use netmorph::{Device, Tensor};

/// (name, input shape, weight shape, padding): the Keras mnist_cnn conv layers, then the second
/// and third blocks of the search's generator (`profile_step` shows them as most of its step).
const LAYERS: [(&str, [usize; 4], [usize; 4], Padding); 6] = [
    ("conv1_1to32_28x28_k3", [128, 1, 28, 28], [32, 1, 3, 3], Padding::Valid),
    ("conv2_32to64_26x26_k3", [128, 32, 26, 26], [64, 32, 3, 3], Padding::Valid),
    ("gen24_24to24_14x14_k3_same", [128, 24, 14, 14], [24, 24, 3, 3], Padding::Same),
    ("gen24_24to24_7x7_k3_same", [128, 24, 7, 7], [24, 24, 3, 3], Padding::Same),
    ("gen32_32to32_14x14_k3_same", [128, 32, 14, 14], [32, 32, 3, 3], Padding::Same),
    ("gen32_32to32_7x7_k3_same", [128, 32, 7, 7], [32, 32, 3, 3], Padding::Same),
];

/// Deterministic values in [-1, 1) without an RNG dependency.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dev = Device::shared().expect("adapter");
    let mut group = c.benchmark_group(format!("conv2d/{}", dev.bench_id()));
    group.sample_size(10);
    for (name, xs, ws, padding) in LAYERS {
        let cfg = Conv2dConfig::new(1, padding);
        let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
        let x = Tensor::from_slice(&dev, &values(xs.iter().product(), 1), &xs).unwrap();
        let w = Tensor::from_slice(&dev, &values(ws.iter().product(), 2), &ws).unwrap();
        let b = Tensor::from_slice(&dev, &values(ws[0], 3), &[ws[0]]).unwrap();
        let dout = Tensor::from_slice(&dev, &values(g.out_shape().iter().product(), 4), &g.out_shape()).unwrap();
        group.throughput(Throughput::Elements(g.flops()));
        group.bench_function(format!("{name}/forward"), |bch| {
            bch.iter(|| {
                let out = conv2d(&x, &w, Some(&b), cfg).unwrap();
                dev.sync().unwrap();
                out
            })
        });
        let (_, bw) = conv2d(&x, &w, Some(&b), cfg).unwrap();
        dev.sync().unwrap();
        group.bench_function(format!("{name}/backward_data"), |bch| {
            bch.iter(|| {
                let dx = bw.grad_input(&dout).unwrap();
                dev.sync().unwrap();
                dx
            })
        });
        group.bench_function(format!("{name}/backward_weight"), |bch| {
            bch.iter(|| {
                let dw = bw.grad_weight(&dout).unwrap();
                dev.sync().unwrap();
                dw
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
