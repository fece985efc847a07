//! GEMM throughput (GFLOP/s: criterion's element rate, one element = one FLOP) for 1024^3 and the
//! products the seed model runs at batch 128 (conv2 via im2col, dense), with the adapter in the
//! benchmark id and the device synchronised inside the timed region.
//!
//! Each shape runs twice: `before` is the generic scalar kernel with the old 4x4/8x8 tiling,
//! `after_...` is what `gemm` picks (variant and default tiling, named in the id); where that is a
//! subgroup kernel, `vec4_...` is the same layout without subgroups. `Workgroup_...` is the
//! workgroup-memory kernel at its default tiling for the adapter. NETMORPH_BENCH_TILINGS="8x8/8x8,4x8/16x4"
//! adds the picked variant at each listed tiling, NETMORPH_BENCH_WORKGROUP_TILINGS="4x4/16x16/16,..."
//! the workgroup-memory kernel at each listed tiling (with its k-step). Filter shapes with criterion's argument, e.g.
//! `cargo bench --bench matmul -- 1024 --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netmorph::ops::matmul::{gemm_variant, plan, Gemm, Strides, Tiling, Variant, REDUCE_BATCH};
use netmorph::{Device, Tensor};

struct Case {
    name: &'static str,
    g: Gemm,
    /// Elements of A, B and C to allocate.
    sizes: [usize; 3],
}

fn cases() -> Vec<Case> {
    let s = 1024;
    let square = Gemm {
        m: s,
        n: s,
        k: s,
        batch: 1,
        a: Strides::matrix(s, s, false),
        b: Strides::matrix(s, s, false),
        c: Strides::matrix(s, s, false),
        flags: 0,
    };
    // conv2 of the seed: 32 -> 64 channels, 3x3, on 26x26 -> 24x24, batch 128; im2col is [288, 576].
    let (bsz, co, ckk, hw) = (128, 64, 288, 576);
    let conv_fwd = Gemm {
        m: co,
        n: hw,
        k: ckk,
        batch: bsz,
        a: Strides::matrix(co, ckk, false).with_batch(0),
        b: Strides::matrix(ckk, hw, false),
        c: Strides::matrix(co, hw, false),
        flags: 0,
    };
    let conv_bwd_data = Gemm {
        m: ckk,
        n: hw,
        k: co,
        batch: bsz,
        a: Strides::matrix(ckk, co, true).with_batch(0),
        b: Strides::matrix(co, hw, false),
        c: Strides::matrix(ckk, hw, false),
        flags: 0,
    };
    let conv_bwd_weight = Gemm {
        m: co,
        n: ckk,
        k: hw,
        batch: bsz,
        a: Strides::matrix(co, hw, false),
        b: Strides::matrix(hw, ckk, true),
        c: Strides::matrix(co, ckk, false).with_batch(0),
        flags: REDUCE_BATCH,
    };
    // dense 9216 -> 128 at batch 128: y = x W, dW = x^T dy, dx = dy W^T.
    let (nb, din, dout) = (128, 9216, 128);
    let dense = |m, k, n, ta, tb| Gemm {
        m,
        n,
        k,
        batch: 1,
        a: Strides::matrix(m, k, ta),
        b: Strides::matrix(k, n, tb),
        c: Strides::matrix(m, n, false),
        flags: 0,
    };
    vec![
        Case { name: "1024x1024x1024", g: square, sizes: [s * s, s * s, s * s] },
        Case { name: "conv2_fwd_128x64x288x576", g: conv_fwd, sizes: [co * ckk, bsz * ckk * hw, bsz * co * hw] },
        Case { name: "conv2_bwd_data_128x288x64x576", g: conv_bwd_data, sizes: [co * ckk, bsz * co * hw, bsz * ckk * hw] },
        Case { name: "conv2_bwd_weight_128x64x576x288", g: conv_bwd_weight, sizes: [bsz * co * hw, bsz * ckk * hw, co * ckk] },
        Case { name: "dense_fwd_128x9216x128", g: dense(nb, din, dout, false, false), sizes: [nb * din, din * dout, nb * dout] },
        Case { name: "dense_dw_9216x128x128", g: dense(din, nb, dout, true, false), sizes: [nb * din, nb * dout, din * dout] },
        Case { name: "dense_dx_128x128x9216", g: dense(nb, dout, din, false, true), sizes: [nb * dout, din * dout, nb * din] },
    ]
}

fn bench(c: &mut Criterion) {
    let dev = Device::shared().expect("adapter");
    let id = dev.bench_id();
    let tilings_from =
        |var: &str| -> Vec<Tiling> { std::env::var(var).map(|s| s.split(',').filter_map(Tiling::parse).collect()).unwrap_or_default() };
    let extra = tilings_from("NETMORPH_BENCH_TILINGS");
    let workgroup_default = Tiling::default_for_variant(&dev, Variant::Workgroup);
    let workgroup_tilings: Vec<Tiling> =
        std::iter::once(workgroup_default).chain(tilings_from("NETMORPH_BENCH_WORKGROUP_TILINGS")).collect();
    let old = Tiling::new(4, 4, 8, 8);
    let mut group = c.benchmark_group(format!("matmul/{id}"));
    group.sample_size(10);
    for case in cases() {
        let g = case.g;
        let a = Tensor::full(&dev, &[case.sizes[0]], 0.5).unwrap();
        let b = Tensor::full(&dev, &[case.sizes[1]], 0.25).unwrap();
        let out = Tensor::zeros(&dev, &[case.sizes[2]]).unwrap();
        group.throughput(Throughput::Elements((2 * g.m * g.n * g.k * g.batch) as u64));
        let (v, t) = plan(&dev, &g);
        let mut runs =
            vec![("before".to_string(), Variant::Scalar, old), (format!("after_{v:?}_{}x{}_wg{}x{}", t.tm, t.tn, t.wg_x, t.wg_y), v, t)];
        if v.is_subgroup() {
            // The same layout without subgroups, as every other adapter runs it.
            let (lv, lt) = (v.layout(), Tiling::default_for_variant(&dev, v.layout()).fitted(v.layout(), &g));
            runs.push((format!("vec4_{lv:?}_{}x{}_wg{}x{}", lt.tm, lt.tn, lt.wg_x, lt.wg_y), lv, lt));
        }
        for &t in &extra {
            let v = Variant::select(&g, t);
            runs.push((format!("{v:?}_{}x{}_wg{}x{}", t.tm, t.tn, t.wg_x, t.wg_y), v, t));
        }
        for &t in &workgroup_tilings {
            runs.push((format!("Workgroup_{}x{}_wg{}x{}_bk{}", t.tm, t.tn, t.wg_x, t.wg_y, t.bk), Variant::Workgroup, t));
        }
        for (label, v, t) in runs {
            group.bench_function(format!("{}/{label}", case.name), |bch| {
                bch.iter(|| {
                    gemm_variant(&dev, &g, a.buffer(), b.buffer(), None, out.buffer(), t, v).unwrap();
                    dev.sync().unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
