//! One convolution layer's three passes, each timed alone (best of 40 runs, device synchronised)
//! and then profiled by kernel: for tuning the conv kernels on a noisy host, where criterion's
//! medians (`cargo bench --bench conv2d`) move with the host's load.
//!
//! cargo run --release --example profile_conv -- [batch c_in size c_out kernel [same]]
//!
//! The default is the seed's conv1: 128 1 28 32 3 (valid padding, stride 1).

use netmorph::device::Device;
use netmorph::ops::conv2d::{conv2d, conv2d_geometry, Conv2dConfig, Padding};
use netmorph::{Result, Tensor};
use std::time::Instant;

const RUNS: usize = 40;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (n, c_in, size, c_out, k) = (num(0, 128), num(1, 1), num(2, 28), num(3, 32), num(4, 3));
    let padding = if args.get(5).is_some_and(|p| p == "same") { Padding::Same } else { Padding::Valid };
    let cfg = Conv2dConfig::new(1, padding);
    let (xs, ws) = ([n, c_in, size, size], [c_out, c_in, k, k]);
    let g = conv2d_geometry(&xs, &ws, cfg)?;
    let dev = Device::shared()?;
    // Deterministic values in [-0.5, 0.5).
    let values = |len: usize| (0..len).map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5).collect::<Vec<_>>();
    let x = Tensor::from_slice(&dev, &values(xs.iter().product()), &xs)?;
    let w = Tensor::from_slice(&dev, &values(ws.iter().product()), &ws)?;
    let b = Tensor::from_slice(&dev, &values(c_out), &[c_out])?;
    let dout = Tensor::from_slice(&dev, &values(g.out_shape().iter().product()), &g.out_shape())?;
    let (_, backward) = conv2d(&x, &w, Some(&b), cfg)?;
    dev.sync()?;
    println!("x {xs:?}, w {ws:?}, {padding:?} padding, on {}", dev.name());
    for pass in ["forward", "backward_data", "backward_weight"] {
        let run = || -> Result<()> {
            match pass {
                "forward" => drop(conv2d(&x, &w, Some(&b), cfg)?),
                "backward_data" => drop(backward.grad_input(&dout)?),
                _ => drop(backward.grad_weight(&dout)?),
            }
            Ok(())
        };
        run()?;
        dev.sync()?;
        let mut best = f64::MAX;
        for _ in 0..RUNS {
            let start = Instant::now();
            run()?;
            dev.sync()?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        dev.start_profile()?;
        run()?;
        let kernels: Vec<String> = dev.finish_profile().iter().map(|t| format!("{} {:.2} ms", t.kernel, t.seconds * 1e3)).collect();
        println!("{pass:>16}: {:.3} ms, {:.1} GFLOP/s | {}", best * 1e3, g.flops() as f64 / best / 1e9, kernels.join(", "));
    }
    Ok(())
}
