//! Pooling bandwidth (GB/s: criterion's byte rate over the bytes each pass must read and write)
//! for the seed model's 2x2 max pool on [128, 64, 24, 24], forward and backward, with the adapter
//! in the benchmark id. The device is synchronised inside the timed region.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netmorph::ops::pool::{max_pool2d, pool2d_shape, Pool2dConfig};
use netmorph::ops::Backward;
use netmorph::{Device, Tensor};

fn values(n: usize) -> Vec<f32> {
    let mut s = 0x9e3779b9u32;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dev = Device::shared().expect("adapter");
    let mut group = c.benchmark_group(format!("pooling/{}", dev.bench_id()));
    group.sample_size(10);
    let xs = [128, 64, 24, 24];
    let cfg = Pool2dConfig::square(2);
    let out_shape = pool2d_shape(&xs, cfg).unwrap();
    let (n_in, n_out) = (xs.iter().product::<usize>() as u64, out_shape.iter().product::<usize>() as u64);
    let x = Tensor::from_slice(&dev, &values(n_in as usize), &xs).unwrap();
    let dout = Tensor::from_slice(&dev, &values(n_out as usize), &out_shape).unwrap();

    // Reads x, writes the output and the argmax.
    group.throughput(Throughput::Bytes(4 * (n_in + 2 * n_out)));
    group.bench_function("max2x2_128x64x24x24/forward", |bch| {
        bch.iter(|| {
            let out = max_pool2d(&x, cfg).unwrap();
            dev.sync().unwrap();
            out
        })
    });
    // Reads dout and the argmax, writes dx.
    let (_, bw) = max_pool2d(&x, cfg).unwrap();
    group.throughput(Throughput::Bytes(4 * (2 * n_out + n_in)));
    group.bench_function("max2x2_128x64x24x24/backward", |bch| {
        bch.iter(|| {
            let dx = bw.backward(&dout).unwrap();
            dev.sync().unwrap();
            dx
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
