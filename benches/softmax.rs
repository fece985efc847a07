//! Softmax cross-entropy forward + backward, in GB/s (criterion's byte rate: read logits, write
//! probabilities, read them, write the gradient), with the adapter in the benchmark id. The device
//! is synchronised inside the timed region.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netmorph::ops::softmax::softmax_cross_entropy;
use netmorph::ops::Backward;
use netmorph::{Device, Tensor};

fn bench(c: &mut Criterion) {
    let dev = Device::shared().expect("adapter");
    let mut group = c.benchmark_group(format!("softmax_xent/{}", dev.bench_id()));
    group.sample_size(10);
    for (rows, cols) in [(128usize, 10usize), (1024, 1000)] {
        let logits: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0).collect();
        let labels: Vec<u32> = (0..rows).map(|r| (r % cols) as u32).collect();
        let x = Tensor::from_slice(&dev, &logits, &[rows, cols]).unwrap();
        let y = Tensor::from_u32(&dev, &labels, &[rows]).unwrap();
        let dloss = Tensor::full(&dev, &[1], 1.0).unwrap();
        group.throughput(Throughput::Bytes((4 * rows * cols * 4) as u64));
        group.bench_function(format!("fwd_bwd/{rows}x{cols}"), |b| {
            b.iter(|| {
                let (_loss, bw) = softmax_cross_entropy(&x, &y).unwrap();
                let _grads = bw.backward(&dloss).unwrap();
                dev.sync().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
