//! Batch norm forward + backward in training mode on a conv activation, in GB/s (criterion's byte
//! rate: the bytes the four kernels must move at least, 9 passes over the tensor), with the adapter
//! in the benchmark id. The device is synchronised inside the timed region.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netmorph::ops::batch_norm::{batch_norm, BatchNormConfig};
use netmorph::ops::Backward;
use netmorph::{Device, Tensor};

fn bench(c: &mut Criterion) {
    let dev = Device::shared().expect("adapter");
    let mut group = c.benchmark_group(format!("batch_norm/{}", dev.bench_id()));
    group.sample_size(10);
    let shape = [128usize, 64, 24, 24];
    let n: usize = shape.iter().product();
    let ch = [shape[1]];
    let x = Tensor::from_slice(&dev, &(0..n).map(|i| (i % 97) as f32 * 0.01).collect::<Vec<_>>(), &shape).unwrap();
    let dy = Tensor::full(&dev, &shape, 0.5).unwrap();
    let (gamma, beta) = (Tensor::full(&dev, &ch, 1.0).unwrap(), Tensor::zeros(&dev, &ch).unwrap());
    let (rm, rv) = (Tensor::zeros(&dev, &ch).unwrap(), Tensor::full(&dev, &ch, 1.0).unwrap());
    // Statistics: read x twice; normalise: read x, write y; backward: read x and dy twice, write dx.
    group.throughput(Throughput::Bytes((9 * n * 4) as u64));
    group.bench_function(format!("train_fwd_bwd/{}", shape.map(|d| d.to_string()).join("x")), |b| {
        b.iter(|| {
            let (_y, bw) = batch_norm(&x, &gamma, &beta, &rm, &rv, BatchNormConfig::default()).unwrap();
            let _grads = bw.backward(&dy).unwrap();
            dev.sync().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
