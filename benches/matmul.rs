//! GEMM throughput (GFLOP/s: criterion's element rate, one element = one FLOP), per tiling, with
//! the adapter in the benchmark id. The device is synchronised inside the timed region.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netmorph::ops::matmul::{gemm_tiled, Gemm, Strides, Tiling};
use netmorph::{Device, Tensor};

fn bench(c: &mut Criterion) {
    let dev = Device::shared().expect("adapter");
    let id = dev.bench_id();
    let sizes: Vec<usize> = std::env::var("NETMORPH_BENCH_SIZES")
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|_| vec![256, 1024]);
    let tilings = [Tiling::new(4, 4, 8, 8), Tiling::new(8, 8, 8, 8), Tiling::new(4, 8, 16, 4), Tiling::new(8, 4, 8, 8)];
    let mut group = c.benchmark_group(format!("matmul/{id}"));
    group.sample_size(10);
    for &s in &sizes {
        let a = Tensor::full(&dev, &[s, s], 0.5).unwrap();
        let b = Tensor::full(&dev, &[s, s], 0.25).unwrap();
        let out = Tensor::uninit(&dev, &[s, s], "out").unwrap();
        let g = Gemm {
            m: s,
            n: s,
            k: s,
            batch: 1,
            a: Strides::matrix(s, s, false),
            b: Strides::matrix(s, s, false),
            c: Strides::matrix(s, s, false),
            flags: 0,
        };
        group.throughput(Throughput::Elements((2 * s * s * s) as u64));
        for t in tilings {
            group.bench_function(format!("{s}x{s}x{s}/tile{}x{}_wg{}x{}", t.tm, t.tn, t.wg_x, t.wg_y), |bch| {
                bch.iter(|| {
                    gemm_tiled(&dev, &g, a.buffer(), b.buffer(), None, out.buffer(), t).unwrap();
                    dev.sync().unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
