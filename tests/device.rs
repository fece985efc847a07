//! Device-layer contracts: limits give clear errors, work is recorded and submitted once, the
//! profiler attributes time to kernels.

use netmorph::ops::matmul::matmul;
use netmorph::testing::device;
use netmorph::{Error, Tensor};

#[test]
fn a_tensor_over_the_binding_limit_is_a_clear_error() {
    let dev = device();
    let too_many = (dev.max_binding_bytes() / 4 + 1) as usize;
    match Tensor::uninit(&dev, &[too_many], "huge") {
        Err(Error::TooLarge { what, bytes, limit, .. }) => {
            assert!(what.contains(&too_many.to_string()), "{what}");
            assert!(bytes > limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn many_dispatches_go_out_in_one_submit() {
    let dev = device();
    let a = Tensor::full(&dev, &[8, 8], 1.0).unwrap();
    dev.flush().unwrap();
    let (d0, s0) = (dev.dispatch_count(), dev.submit_count());
    let mut x = a.clone();
    for _ in 0..10 {
        x = matmul(&x, &a, false, false).unwrap();
    }
    assert!(dev.dispatch_count() - d0 >= 10);
    dev.flush().unwrap();
    // Other tests share the device, so allow their submits, but ten dispatches must not need ten.
    assert!(dev.submit_count() - s0 < 10, "{} submits for 10 dispatches", dev.submit_count() - s0);
    assert_eq!(x.to_vec().unwrap()[0], 8f32.powi(10));
}

#[test]
fn the_profiler_times_each_kernel() {
    let dev = netmorph::testing::own_device(); // its own device: profiling is device-wide
    let a = Tensor::full(&dev, &[16, 16], 1.0).unwrap();
    dev.start_profile().unwrap();
    let _ = matmul(&a, &a, false, false).unwrap();
    let _ = matmul(&a, &a, true, false).unwrap();
    let times = dev.finish_profile();
    let gemm: Vec<_> = times.iter().filter(|t| t.kernel.starts_with("matmul")).collect();
    assert_eq!(gemm.iter().map(|t| t.calls).sum::<u64>(), 2, "{times:?}");
    assert!(gemm.iter().all(|t| t.seconds > 0.0));
}
