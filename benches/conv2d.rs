//! Convolution throughput (GFLOP/s: criterion's element rate, one element = one FLOP) for the
//! seed model's conv layers and the search's CNN generator's (widths 24 and 32, 'same' padding)
//! at batch 128: forward, backward-data and backward-weight timed separately, with the adapter in
//! the benchmark id. The device is synchronised inside the timed
//! region. Compare with `cargo bench --bench matmul -- 1024` on the same machine.
//!
//! The first layer's reduction is only 9 long (4.5 FLOP per byte of its output), so its passes
//! are bound by writing its output (forward) or reading its output gradient (both backward
//! passes). Two streaming kernels give that floor in the same run, in GB/s: `stream_write` and
//! `stream_read` over a buffer of the output's size, vec4 per invocation, neighbours side by side.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netmorph::device::{Access, DType, KernelSpec};
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

/// The layers that get the streaming baselines: those whose reduction is too short to hide memory.
const STREAM_BASELINE: &[&str] = &["conv1_1to32_28x28_k3"];

const STREAM_SOURCE: &str = r#"
struct Params { n: u32, nan_bits: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

// Each workgroup streams 64 x 16 vec4s; the invocations of a subgroup touch neighbouring vec4s.
@compute @workgroup_size(64)
fn stream_write(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let base = wg.x * 1024u + l;
    for (var j = 0u; j < 16u; j++) {
        let i = base + j * 64u;
        if (i < p.n) { dst[i] = vec4<f32>(f32(l), 1.0, 2.0, 3.0); }
    }
}

@compute @workgroup_size(64)
fn stream_read(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let base = wg.x * 1024u + l;
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < 16u; j++) {
        let i = base + j * 64u;
        if (i < p.n) { acc += src[i]; }
    }
    // Never true (p.nan_bits is a NaN), but the compiler cannot know: keeps the loads.
    if (acc.x == bitcast<f32>(p.nan_bits)) { dst[base] = acc; }
}
"#;
static STREAM_WRITE: KernelSpec =
    KernelSpec { name: "stream_write", source: STREAM_SOURCE, entry: "stream_write", bindings: &[Access::Read, Access::ReadWrite] };
static STREAM_READ: KernelSpec =
    KernelSpec { name: "stream_read", source: STREAM_SOURCE, entry: "stream_read", bindings: &[Access::Read, Access::ReadWrite] };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StreamParams {
    n: u32,
    nan_bits: u32,
    _pad: [u32; 2],
}

/// Times one pass of each streaming kernel over `values` f32s (a multiple of 4).
fn bench_stream(group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>, dev: &Device, name: &str, values: usize) {
    let n = values.div_ceil(4);
    let src = dev.upload(&vec![0.5f32; n * 4], DType::F32, "stream source").unwrap();
    let dst = dev.alloc(n * 4, DType::F32, "stream destination").unwrap();
    let params = StreamParams { n: n as u32, nan_bits: f32::NAN.to_bits(), _pad: [0; 2] };
    let groups = [n.div_ceil(1024) as u32, 1, 1];
    group.throughput(Throughput::Bytes((n * 16) as u64));
    for (kernel, label) in [(&STREAM_WRITE, "stream_write"), (&STREAM_READ, "stream_read")] {
        group.bench_function(format!("{name}/{label}"), |bch| {
            bch.iter(|| {
                dev.dispatch(kernel, &[], &params, &[&src, &dst], groups).unwrap();
                dev.sync().unwrap();
            })
        });
    }
}

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
        if STREAM_BASELINE.contains(&name) {
            bench_stream(&mut group, &dev, name, g.out_shape().iter().product());
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
