use super::*;
use crate::ops::matmul::plans_subgroups;
use crate::testing::*;

/// A random geometry. Cases 0..24 cover every combination of kernel (1, 3, 5, 7, 2, 4),
/// stride (1, 2) and padding; some kernels are not square, some batches are 1, some channel
/// counts exceed one GEMM tile (32 rows).
fn random_case(rng: &mut TestRng, case: usize) -> ([usize; 4], [usize; 4], Conv2dConfig) {
    let ks = [1, 3, 5, 7, 2, 4];
    let kh = ks[case % ks.len()];
    let kw = if case % 5 == 4 { ks[(case / 2) % ks.len()] } else { kh };
    let stride = 1 + (case / 6) % 2;
    let padding = if (case / 12).is_multiple_of(2) { Padding::Valid } else { Padding::Same };
    let n = if case.is_multiple_of(4) { 1 } else { rand_dim(rng, 1, 3) };
    let c_in = rand_dim(rng, 1, 5);
    let c_out = if case % 7 == 3 { rand_dim(rng, 30, 40) } else { rand_dim(rng, 1, 9) };
    let h = rand_dim(rng, kh, kh + 8);
    let w = rand_dim(rng, kw, kw + 8);
    ([n, c_in, h, w], [c_out, c_in, kh, kw], Conv2dConfig::new(stride, padding))
}

/// f32 sums of up to ~250 products (K = 5 * 7 * 7) lose a little more than 1e-4 near zero.
const TOL: f64 = 3e-4;

#[test]
fn same_padding_follows_keras() {
    // TF: in 7, k 3, stride 2 -> out 4, pad_total = 3*2 + 3 - 7 = 2, pad_top = 1.
    let g = conv2d_geometry(&[1, 1, 7, 8], &[1, 1, 3, 4], Conv2dConfig::new(2, Padding::Same)).unwrap();
    assert_eq!((g.oh, g.pad_top, g.ow, g.pad_left), (4, 1, 4, 1));
    let g = conv2d_geometry(&[1, 1, 5, 5], &[1, 1, 1, 1], Conv2dConfig::new(2, Padding::Same)).unwrap();
    assert_eq!((g.oh, g.pad_top), (3, 0));
    let g = conv2d_geometry(&[1, 1, 28, 28], &[32, 1, 3, 3], Conv2dConfig::default()).unwrap();
    assert_eq!(g.out_shape(), [1, 32, 26, 26]);
}

#[test]
fn forward_matches_reference_on_random_shapes() {
    let dev = device();
    let mut rng = rng(21);
    for case in 0..26 {
        let (xs, ws, cfg) = random_case(&mut rng, case);
        let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
        let x = rand_vec(&mut rng, xs.iter().product());
        let w = rand_vec(&mut rng, ws.iter().product());
        let b = rand_vec(&mut rng, ws[0]);
        let with_bias = case % 2 == 0;
        let gb = tensor(&dev, &b, &[ws[0]]);
        let (out, _) = conv2d(&tensor(&dev, &x, &xs), &tensor(&dev, &w, &ws), with_bias.then_some(&gb), cfg).unwrap();
        assert_eq!(out.shape(), g.out_shape());
        let want = cpu::conv2d(&x, &w, with_bias.then_some(&b[..]), &g);
        assert_close(&out.to_vec().unwrap(), &want, TOL, &format!("conv2d forward x{xs:?} w{ws:?} {cfg:?}"));
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = rng(22);
    // A spread of kernels (1, 7, 4, 2, 3, 7, 5, 4), strides and both paddings.
    for case in [0, 3, 5, 10, 13, 15, 20, 23] {
        let (mut xs, mut ws, cfg) = random_case(&mut rng, case);
        // Small enough for finite differences over every input and weight.
        xs[0] = xs[0].min(2);
        xs[1] = xs[1].min(2);
        ws[1] = xs[1];
        ws[0] = ws[0].min(3);
        let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
        let x = rand_vec(&mut rng, xs.iter().product());
        let w = rand_vec(&mut rng, ws.iter().product());
        let b = rand_vec(&mut rng, ws[0]);
        let r = rand_vec(&mut rng, g.out_shape().iter().product()); // L = sum(r * out)
        let (dx, dw, db) = cpu::conv2d_backward(&x, &w, &r, &g);
        let what = format!("x{xs:?} w{ws:?} {cfg:?}");
        assert_close_f64(&dx, &numeric_grad(&x, |x| dot(&cpu::conv2d(x, &w, Some(&b), &g), &r)), 1e-5, &format!("conv2d dx {what}"));
        assert_close_f64(&dw, &numeric_grad(&w, |w| dot(&cpu::conv2d(&x, w, Some(&b), &g), &r)), 1e-5, &format!("conv2d dw {what}"));
        assert_close_f64(&db, &numeric_grad(&b, |b| dot(&cpu::conv2d(&x, &w, Some(b), &g), &r)), 1e-5, &format!("conv2d db {what}"));
    }
}

/// Every knob fixed at the default path (whatever the device's knobs).
fn pinned(dev: &Device) -> Settings {
    Settings {
        max_bytes: dev.max_binding_bytes(),
        orient: Orient::Auto,
        direct: Direct::Rows,
        subgroup_forward: subgroups_allowed(dev),
        subgroup_small_k: plans_small_k_subgroups(dev),
        row_channels: DIRECT_CO,
        row_outputs: DIRECT_FORWARD_ROWS,
    }
}

/// im2col + GEMM for every pass.
fn gemm_only(dev: &Device) -> Settings {
    Settings { direct: Direct::Off, subgroup_small_k: false, ..pinned(dev) }
}

fn check_gpu_backward(dev: &Device, rng: &mut TestRng, xs: [usize; 4], ws: [usize; 4], cfg: Conv2dConfig, settings: Settings) {
    let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
    let x = rand_vec(rng, xs.iter().product());
    let w = rand_vec(rng, ws.iter().product());
    let b = rand_vec(rng, ws[0]);
    let r = rand_vec(rng, g.out_shape().iter().product());
    let gb = tensor(dev, &b, &[ws[0]]);
    let (out, bw) = conv2d_with(&tensor(dev, &x, &xs), &tensor(dev, &w, &ws), Some(&gb), cfg, settings).unwrap();
    let what = format!("x{xs:?} w{ws:?} {cfg:?} {settings:?}");
    assert_close(&out.to_vec().unwrap(), &cpu::conv2d(&x, &w, Some(&b), &g), TOL, &format!("conv2d forward {what}"));
    let grads = bw.backward(&tensor(dev, &r, &g.out_shape())).unwrap();
    let (dx, dw, db) = cpu::conv2d_backward(&x, &w, &r, &g);
    assert_eq!(grads.len(), 3);
    assert_close(&grads[0].as_ref().unwrap().to_vec().unwrap(), &dx, TOL, &format!("conv2d dx {what}"));
    assert_close(&grads[1].as_ref().unwrap().to_vec().unwrap(), &dw, TOL, &format!("conv2d dw {what}"));
    assert_close(&grads[2].as_ref().unwrap().to_vec().unwrap(), &db, TOL, &format!("conv2d db {what}"));
}

#[test]
fn gpu_backward_matches_reference_on_random_shapes() {
    let dev = device();
    let mut rng = rng(23);
    for case in 0..22 {
        let (xs, ws, cfg) = random_case(&mut rng, case);
        check_gpu_backward(&dev, &mut rng, xs, ws, cfg, pinned(&dev));
    }
}

#[test]
fn both_gemm_orientations_match_reference() {
    let dev = device();
    let mut rng = rng(25);
    for (xs, ws, cfg) in [
        ([2, 1, 9, 8], [33, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
        // K = 9 with P = 64: the vec4 GEMMs through the padded weight matrix.
        ([2, 1, 10, 10], [33, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
        ([3, 4, 7, 6], [5, 4, 3, 2], Conv2dConfig::new(2, Padding::Same)),
        ([2, 3, 5, 5], [7, 3, 1, 1], Conv2dConfig::new(1, Padding::Valid)),
    ] {
        for orient in [Orient::Normal, Orient::Transposed] {
            // The forward reads the weight matrix or its transpose.
            for subgroup_forward in [false, true] {
                check_gpu_backward(&dev, &mut rng, xs, ws, cfg, Settings { orient, subgroup_forward, ..gemm_only(&dev) });
            }
        }
    }
}

#[test]
fn a_weight_with_k_not_a_multiple_of_4_still_gets_the_vec4_gemm() {
    // A device of its own: a profile sees every dispatch on its device, other tests' included.
    let dev = crate::testing::own_device();
    let (xs, ws) = ([2, 1, 10, 10], [8, 1, 3, 3]);
    let x = Tensor::zeros(&dev, &xs).unwrap();
    let w = Tensor::zeros(&dev, &ws).unwrap();
    dev.start_profile().unwrap();
    let (out, bw) = conv2d_with(&x, &w, None, Conv2dConfig::default(), gemm_only(&dev)).unwrap();
    bw.grad_input(&out).unwrap();
    bw.grad_weight(&out).unwrap();
    dev.sync().unwrap();
    let kernels: Vec<&str> = dev.finish_profile().iter().map(|t| t.kernel).collect();
    assert!(kernels.contains(&"matmul_vec4") && !kernels.contains(&"matmul"), "K = 9 ran {kernels:?}");
    // A small K's input gradient reads a transposed weight, its rows padded when c_out is
    // not a multiple of 4; a large K's reads the weight matrix as it is.
    let mut rng = rng(27);
    for (xs, ws, transposes) in
        [([2, 1, 10, 10], [5, 1, 3, 3], true), ([1, 4, 6, 7], [6, 4, 2, 2], true), ([1, 2, 6, 6], [3, 2, 3, 3], false)]
    {
        dev.start_profile().unwrap();
        check_gpu_backward(&dev, &mut rng, xs, ws, Conv2dConfig::new(1, Padding::Same), gemm_only(&dev));
        let profile = dev.finish_profile();
        let kernels: Vec<&str> = profile.iter().map(|t| t.kernel).collect();
        // (Products this small keep the forward on the weight matrix.)
        let calls = profile.iter().find(|t| t.kernel == "conv2d_transpose_weight").map_or(0, |t| t.calls);
        assert_eq!(calls, transposes as u64, "w{ws:?} ran {kernels:?}");
        assert!(!kernels.contains(&"matmul"), "w{ws:?} ran {kernels:?}");
    }
}

#[test]
fn the_weight_gradient_reads_a_transposed_output_gradient() {
    // c_out not a multiple of 4 (the transposed rows' pad), planes not a multiple of 4 (the
    // last 4x4 block's missing positions), a pointwise col, and chunks of images.
    let dev = crate::testing::own_device();
    let mut rng = rng(28);
    for (xs, ws, cfg, max_bytes) in [
        ([3, 5, 7, 5], [5, 5, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
        ([2, 8, 6, 6], [9, 8, 3, 3], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
        ([2, 12, 5, 4], [6, 12, 1, 1], Conv2dConfig::default(), dev.max_binding_bytes()),
        ([5, 6, 9, 9], [7, 6, 3, 3], Conv2dConfig::new(2, Padding::Same), 13000),
    ] {
        dev.start_profile().unwrap();
        check_gpu_backward(&dev, &mut rng, xs, ws, cfg, Settings { max_bytes, ..pinned(&dev) });
        let kernels: Vec<&str> = dev.finish_profile().iter().map(|t| t.kernel).collect();
        assert!(kernels.contains(&"conv2d_transpose_grad"), "x{xs:?} w{ws:?} ran {kernels:?}");
    }
}

#[test]
fn the_subgroup_gemms_serve_all_three_passes() {
    let dev = crate::testing::own_device();
    if !plans_subgroups(&dev) {
        eprintln!("{}: the GEMM plans no subgroup kernels, nothing to check", dev.name());
        return;
    }
    // Products of at least 32 x 32 in every pass: the forward through the transposed weight.
    let mut rng = rng(29);
    for (xs, ws, cfg) in [
        ([2, 8, 10, 10], [40, 8, 3, 3], Conv2dConfig::new(1, Padding::Same)),
        ([3, 6, 9, 11], [33, 6, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
    ] {
        dev.start_profile().unwrap();
        check_gpu_backward(&dev, &mut rng, xs, ws, cfg, pinned(&dev));
        let profile = dev.finish_profile();
        let calls = |kernel: &str| profile.iter().find(|t| t.kernel == kernel).map_or(0, |t| t.calls);
        assert_eq!(calls("matmul_subgroup"), 3, "x{xs:?} w{ws:?} ran {profile:?}");
        assert_eq!(calls("conv2d_transpose_weight"), 1, "x{xs:?} w{ws:?} ran {profile:?}");
    }
}

#[test]
fn the_small_k_subgroup_kernels_match_reference() {
    let dev = crate::testing::own_device();
    let lanes = subgroup_lanes_of(&dev);
    // What the child of `the_small_k_subgroup_kernels_match_reference_at_4_lanes` reports.
    eprintln!("subgroup lanes: {lanes:?} on {}", dev.name());
    let Some(lanes) = lanes.map(|l| l as usize) else { return };
    let mut rng = rng(30);
    // K from 2 to 32, c_out around the blocks of 8 lanes and the 1..4 channels per lane (5,
    // 8, 13, 32; 40 and 64 in two blocks, of 3 and 4 channels per lane), batch 1,
    // stride 2, both paddings (taps gathered from outside the input); chunks of images for
    // the input gradient's dcol; and a batch past the weight gradient's partials. Then random
    // shapes (below).
    let mut cases = vec![
        ([3, 1, 28, 28], [32, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
        ([1, 1, 6, 6], [5, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
        ([2, 3, 8, 8], [13, 3, 3, 3], Conv2dConfig::new(2, Padding::Same), dev.max_binding_bytes()),
        ([2, 1, 12, 10], [40, 1, 5, 5], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
        ([1, 8, 6, 6], [8, 8, 2, 2], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
        ([2, 2, 7, 8], [64, 2, 1, 2], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
        ([5, 1, 10, 10], [9, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), 6500),
        // Output rows of 2 and 1: each step of 4 positions wraps rows more than once.
        ([2, 1, 6, 4], [4, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
        ([1, 2, 6, 3], [3, 2, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
        // Row sums of dcol with 'same' padding (taps off both edges) and in chunks.
        ([2, 1, 8, 12], [7, 1, 3, 3], Conv2dConfig::new(1, Padding::Same), dev.max_binding_bytes()),
        ([5, 1, 12, 12], [9, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), 6500),
        // More images than the weight gradient's 32 partials: some workgroups sum two.
        ([37, 1, 6, 6], [6, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid), dev.max_binding_bytes()),
    ];
    // Random shapes the kernels take (K <= 32, planes of whole vec4s): channel counts that fill
    // no block of lanes evenly, up to past the input gradient's limit at 4 lanes (32), kernels
    // not square, strides 1 and 2, both paddings, batches past a lane count.
    while cases.len() < 24 {
        let (kh, kw) = (rand_dim(&mut rng, 1, 5), rand_dim(&mut rng, 1, 5));
        let c_in = rand_dim(&mut rng, 1, 3);
        let (h, w) = (rand_dim(&mut rng, kh.max(2), 13), rand_dim(&mut rng, kw.max(2), 13));
        let cfg = Conv2dConfig::new(rand_dim(&mut rng, 1, 2), if rand_dim(&mut rng, 0, 1) == 1 { Padding::Same } else { Padding::Valid });
        let (xs, ws) = ([rand_dim(&mut rng, 1, 9), c_in, h, w], [rand_dim(&mut rng, 1, 40), c_in, kh, kw]);
        if conv2d_geometry(&xs, &ws, cfg).is_ok_and(|g| g.suits_subgroup()) {
            cases.push((xs, ws, cfg, dev.max_binding_bytes()));
        }
    }
    for (xs, ws, cfg, max_bytes) in cases {
        let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
        assert!(g.suits_subgroup(), "{xs:?} {ws:?} {cfg:?}");
        if max_bytes < dev.max_binding_bytes() {
            assert!(chunks(&g, max_bytes).unwrap().len() > 1, "{xs:?}: one chunk");
        }
        dev.start_profile().unwrap();
        // Pinned on, whatever NETMORPH_GEMM_SUBGROUP says: the adapter has the subgroups.
        check_gpu_backward(&dev, &mut rng, xs, ws, cfg, Settings { max_bytes, subgroup_small_k: true, ..pinned(&dev) });
        let profile = dev.finish_profile();
        let calls = |kernel: &str| profile.iter().find(|t| t.kernel == kernel).map_or(0, |t| t.calls);
        // Forward and weight gradient in one pass each, gathering col from x: no im2col.
        assert_eq!(calls("conv2d_subgroup_forward"), 1, "x{xs:?} w{ws:?} ran {profile:?}");
        assert_eq!(calls("conv2d_subgroup_grad_weight"), 1, "x{xs:?} w{ws:?} ran {profile:?}");
        assert_eq!(calls("conv2d_im2col"), 0, "x{xs:?} w{ws:?} ran {profile:?}");
        // The input gradient needs every channel in one subgroup: per chunk, the row sums of
        // dcol at stride 1 (a lane per kernel row and input channel, rows of whole vec4s),
        // else dcol itself.
        let chunks = if ws[0] <= subgroup_grad_col_max(lanes) { chunks(&g, max_bytes).unwrap().len() as u64 } else { 0 };
        let rowsum = cfg.stride == 1 && xs[1] * ws[2] <= lanes && xs[3].is_multiple_of(4);
        assert_eq!(calls("conv2d_subgroup_grad_rowsum"), if rowsum { chunks } else { 0 }, "x{xs:?} w{ws:?} ran {profile:?}");
        assert_eq!(calls("conv2d_subgroup_grad_col"), if rowsum { 0 } else { chunks }, "x{xs:?} w{ws:?} ran {profile:?}");
    }
    // Planes not of whole vec4s and large reductions keep the other kernels.
    assert!(!conv2d_geometry(&[1, 1, 7, 7], &[4, 1, 3, 3], Conv2dConfig::default()).unwrap().suits_subgroup());
    assert!(!conv2d_geometry(&[1, 32, 6, 6], &[4, 32, 3, 3], Conv2dConfig::default()).unwrap().suits_subgroup());
}

/// [`the_small_k_subgroup_kernels_match_reference`] again in a child process at another subgroup
/// size: lavapipe with LP_NATIVE_VECTOR_WIDTH=128 runs subgroups of 4 (SSE width). On another
/// adapter the child runs at whatever size it has (and says so).
#[test]
fn the_small_k_subgroup_kernels_match_reference_at_4_lanes() {
    crate::testing::rerun_at_4_lanes(&format!(
        "{}::the_small_k_subgroup_kernels_match_reference",
        module_path!().split_once("::").unwrap().1
    ));
}

#[test]
fn odd_output_planes_pad_col_and_keep_the_vec4_gemms() {
    // The CNN generator's third conv works on a 7x7 plane; 3x3 and 5x3 planes come from
    // deeper children, 5x5 from a strided one. Zeros in the pads must not leak into any pass.
    let dev = crate::testing::own_device();
    let mut rng = rng(26);
    for (xs, ws, cfg) in [
        ([3, 8, 7, 7], [8, 8, 3, 3], Conv2dConfig::new(1, Padding::Same)),
        ([2, 4, 3, 3], [12, 4, 3, 3], Conv2dConfig::new(1, Padding::Same)),
        ([1, 4, 7, 5], [4, 4, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
        ([2, 5, 9, 9], [6, 5, 1, 1], Conv2dConfig::new(2, Padding::Same)),
    ] {
        let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
        assert!(!g.p().is_multiple_of(4) && g.col_stride() == g.p().next_multiple_of(4), "{g:?}");
        dev.start_profile().unwrap();
        check_gpu_backward(&dev, &mut rng, xs, ws, cfg, pinned(&dev));
        let kernels: Vec<&str> = dev.finish_profile().iter().map(|t| t.kernel).collect();
        assert!(kernels.contains(&"matmul_vec4") && !kernels.contains(&"matmul"), "x{xs:?} w{ws:?} ran {kernels:?}");
    }
    // A pointwise convolution reads x as col: no pad.
    let g = conv2d_geometry(&[1, 3, 7, 7], &[2, 3, 1, 1], Conv2dConfig::default()).unwrap();
    assert_eq!(g.col_stride(), 49);
}

#[test]
fn the_direct_forwards_match_reference_and_the_gemm_path() {
    let dev = crate::testing::own_device();
    let mut rng = rng(26);
    // K <= 32; channel counts around the block of 8, batch 1, strides, both paddings, rows
    // that the 4 outputs of a `direct` invocation wrap, rows of 26 (4 segments of 7, the
    // last one short), 9 and 5 outputs, kernels from 1x2 to 5x5.
    let mut subgroup_forwards = 0;
    for (xs, ws, cfg) in [
        ([3, 1, 28, 28], [32, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
        ([1, 1, 6, 7], [5, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
        ([2, 3, 8, 8], [13, 3, 3, 3], Conv2dConfig::new(2, Padding::Same)),
        ([2, 1, 12, 10], [9, 1, 5, 5], Conv2dConfig::new(1, Padding::Same)),
        ([1, 2, 10, 8], [17, 2, 4, 4], Conv2dConfig::new(2, Padding::Valid)),
        ([2, 2, 7, 8], [3, 2, 2, 3], Conv2dConfig::new(1, Padding::Same)),
        ([2, 1, 7, 7], [4, 1, 3, 3], Conv2dConfig::new(1, Padding::Valid)),
        ([1, 3, 9, 17], [10, 3, 3, 3], Conv2dConfig::new(2, Padding::Same)),
        ([3, 1, 11, 9], [7, 1, 1, 2], Conv2dConfig::new(1, Padding::Same)),
    ] {
        let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
        assert!(g.suits_direct(Direct::Rows), "{xs:?} {ws:?} {cfg:?}");
        let x = rand_vec(&mut rng, xs.iter().product());
        let w = rand_vec(&mut rng, ws.iter().product());
        let b = rand_vec(&mut rng, ws[0]);
        let (xt, wt, bt) = (tensor(&dev, &x, &xs), tensor(&dev, &w, &ws), tensor(&dev, &b, &[ws[0]]));
        for bias in [true, false] {
            let want = cpu::conv2d(&x, &w, bias.then_some(&b[..]), &g);
            for direct in [Direct::Rows, Direct::Quads, Direct::Off] {
                dev.start_profile().unwrap();
                let settings = Settings { direct, subgroup_forward: false, subgroup_small_k: false, ..pinned(&dev) };
                let (out, _) = conv2d_with(&xt, &wt, bias.then_some(&bt), cfg, settings).unwrap();
                let got = out.to_vec().unwrap();
                let ran: Vec<_> = dev.finish_profile().iter().map(|t| t.kernel).collect();
                let expected = match direct {
                    Direct::Rows => Some("conv2d_direct_rows"),
                    Direct::Quads if g.p().is_multiple_of(4) => Some("conv2d_direct"),
                    _ => None,
                };
                match expected {
                    Some(kernel) => assert_eq!(ran, vec![kernel], "{direct:?} {xs:?} {ws:?}"),
                    None => assert!(ran.contains(&"conv2d_im2col"), "{direct:?} {xs:?} {ws:?}: {ran:?}"),
                }
                assert_close(&got, &want, TOL, &format!("conv2d forward {direct:?} bias={bias} x{xs:?} w{ws:?} {cfg:?}"));
            }
            // Every block height of `direct_rows`, including ones that overhang the plane.
            for rows in 1..=4 {
                let out = Tensor::uninit(&dev, &g.out_shape(), "out").unwrap();
                direct::forward_rows(&xt, &wt, bias.then_some(&bt), &g, &out, rows, DIRECT_CO).unwrap();
                assert_close(&out.to_vec().unwrap(), &want, TOL, &format!("direct_rows {rows} rows bias={bias} x{xs:?} w{ws:?} {cfg:?}"));
            }
        }
        // Where the subgroup GEMM takes the product, it runs the forward instead of the direct kernel.
        if subgroups_allowed(&dev) && subgroup_takes_forward(&dev, &g) {
            dev.start_profile().unwrap();
            let settings = Settings { subgroup_small_k: false, ..pinned(&dev) };
            let (out, _) = conv2d_with(&xt, &wt, Some(&bt), cfg, settings).unwrap();
            let got = out.to_vec().unwrap();
            let ran: Vec<_> = dev.finish_profile().iter().map(|t| t.kernel).collect();
            assert!(ran.contains(&"matmul_subgroup") && !ran.contains(&"conv2d_direct_rows"), "{xs:?} {ws:?}: {ran:?}");
            assert_close(&got, &cpu::conv2d(&x, &w, Some(&b), &g), TOL, &format!("conv2d subgroup forward x{xs:?} w{ws:?}"));
            subgroup_forwards += 1;
        }
        // The gradients: direct with `Rows` (the input's at stride 1 only), the GEMMs' otherwise.
        let r = rand_vec(&mut rng, g.out_shape().iter().product());
        let (want_dx, want_dw, _) = cpu::conv2d_backward(&x, &w, &r, &g);
        let rt = tensor(&dev, &r, &g.out_shape());
        for direct in [Direct::Rows, Direct::Off] {
            let settings = Settings { direct, subgroup_small_k: false, ..pinned(&dev) };
            let (_, bw) = conv2d_with(&xt, &wt, None, cfg, settings).unwrap();
            for (i, kernel, want, direct_here) in [
                (0, "conv2d_direct_grad_input", &want_dx, direct == Direct::Rows && g.stride == 1),
                (1, "conv2d_direct_grad_weight", &want_dw, direct == Direct::Rows),
            ] {
                dev.start_profile().unwrap();
                let needed: Vec<bool> = (0..3).map(|j| j == i).collect();
                let got = bw.backward_needed(&rt, &needed).unwrap()[i].as_ref().unwrap().to_vec().unwrap();
                let ran: Vec<_> = dev.finish_profile().iter().map(|t| t.kernel).collect();
                assert_eq!(ran.contains(&kernel), direct_here, "{direct:?} {xs:?} {ws:?}: {ran:?}");
                assert_close(&got, want, TOL, &format!("conv2d gradient {i} {direct:?} x{xs:?} w{ws:?} {cfg:?}"));
            }
        }
    }
    assert!(subgroup_forwards >= 1 || !plans_subgroups(&dev), "the 28x28 case takes the subgroup GEMM");
    // An odd output plane (5x5) keeps im2col + GEMM with `direct`.
    assert!(!conv2d_geometry(&[1, 1, 7, 7], &[4, 1, 3, 3], Conv2dConfig::default()).unwrap().suits_direct(Direct::Quads));
    // A large reduction and a pointwise convolution keep it with either.
    for kind in [Direct::Quads, Direct::Rows] {
        assert!(!conv2d_geometry(&[1, 32, 6, 6], &[4, 32, 3, 3], Conv2dConfig::default()).unwrap().suits_direct(kind));
        assert!(!conv2d_geometry(&[1, 3, 6, 6], &[4, 3, 1, 1], Conv2dConfig::default()).unwrap().suits_direct(kind));
    }
}

#[test]
fn the_seed_convolutions_plan_the_kernels_they_ran() {
    // The seed model's two convolutions at batch 128, with the kernels examples/profile_conv saw
    // them run on lavapipe before the plan: with subgroups of 8, conv1's three passes in
    // shaders/conv2d_subgroup.wgsl (the input gradient as row sums of dcol) and conv2's in the
    // subgroup GEMM, its forward through the transposed weight; without them (or with
    // NETMORPH_GEMM_SUBGROUP=0), conv1's in the direct row kernels and conv2's in the vec4 GEMMs
    // through the weight matrix.
    let dev = device();
    let conv1 = conv2d_geometry(&[128, 1, 28, 28], &[32, 1, 3, 3], Conv2dConfig::default()).unwrap();
    let conv2 = conv2d_geometry(&[128, 32, 26, 26], &[64, 32, 3, 3], Conv2dConfig::default()).unwrap();
    let gemm = |weight| ConvGemm { weight, orient: Orient::Auto };
    let no_subgroups = Settings { subgroup_forward: false, subgroup_small_k: false, ..pinned(&dev) };
    let mut cases = vec![
        (
            no_subgroups,
            conv1,
            ForwardPath::DirectRows { rows: 1, channels: 8 },
            GradInputPath::Direct { channels: 8 },
            GradWeightPath::Direct { channels: 8 },
        ),
        (
            no_subgroups,
            conv2,
            ForwardPath::Gemm(gemm(WeightLayout::Matrix)),
            GradInputPath::Gemm(gemm(WeightLayout::Matrix)),
            GradWeightPath::Gemm,
        ),
    ];
    // The small-K kernels are planned at 4 lanes too, the subgroup GEMM at 8 only.
    if plans_small_k_subgroups(&dev) {
        cases.push((pinned(&dev), conv1, ForwardPath::SubgroupSmallK, GradInputPath::SubgroupRowSums, GradWeightPath::Subgroup));
    }
    if plans_subgroups(&dev) {
        cases.push((
            pinned(&dev),
            conv2,
            ForwardPath::Gemm(gemm(WeightLayout::Transposed)),
            GradInputPath::Gemm(gemm(WeightLayout::Matrix)),
            GradWeightPath::Gemm,
        ));
    }
    for (settings, g, forward, grad_input, grad_weight) in cases {
        let plan = ConvPlan::new(&dev, &g, &settings);
        assert_eq!((plan.forward, plan.grad_input, plan.grad_weight), (forward, grad_input, grad_weight), "{g:?} {settings:?}");
        // A binding of WebGPU's default 128 MiB holds conv2's col for the whole batch (100 MB):
        // one chunk, and the col kept for the GEMM weight gradient.
        if settings.max_bytes >= 128 << 20 {
            assert_eq!(plan.chunks().unwrap(), [Chunk { first: 0, images: 128 }]);
            assert_eq!(plan.keeps_col(&g), grad_weight == GradWeightPath::Gemm);
        }
    }
}

#[test]
fn chunked_batches_match_reference() {
    let dev = device();
    let mut rng = rng(24);
    // One image's col is 2*9 rows of 25 values padded to 28: 2016 bytes. A 4100-byte limit
    // gives chunks of 2, 2, 1 images.
    let (xs, ws, cfg) = ([5, 2, 7, 7], [3, 2, 3, 3], Conv2dConfig::new(1, Padding::Valid));
    let g = conv2d_geometry(&xs, &ws, cfg).unwrap();
    assert_eq!(
        chunks(&g, 4100).unwrap(),
        vec![Chunk { first: 0, images: 2 }, Chunk { first: 2, images: 2 }, Chunk { first: 4, images: 1 }]
    );
    check_gpu_backward(&dev, &mut rng, xs, ws, cfg, Settings { max_bytes: 4100, direct: Direct::Off, ..pinned(&dev) });
    // Pointwise: x is col, chunks address it by offset.
    check_gpu_backward(
        &dev,
        &mut rng,
        [3, 4, 5, 3],
        [6, 4, 1, 1],
        Conv2dConfig::new(1, Padding::Same),
        Settings { max_bytes: 1000, orient: Orient::Transposed, direct: Direct::Off, ..pinned(&dev) },
    );
    check_gpu_backward(
        &dev,
        &mut rng,
        [3, 3, 6, 5],
        [2, 3, 5, 5],
        Conv2dConfig::new(2, Padding::Same),
        Settings { max_bytes: 6000, orient: Orient::Normal, direct: Direct::Off, ..pinned(&dev) },
    );
    let e = chunks(&g, 1000).unwrap_err().to_string();
    assert!(e.contains("[5, 2, 7, 7]") && e.contains("[3, 2, 3, 3]"), "{e}");
}

#[test]
fn backward_without_bias_has_no_bias_gradient() {
    let dev = device();
    let x = Tensor::full(&dev, &[1, 1, 3, 3], 1.0).unwrap();
    let w = Tensor::full(&dev, &[2, 1, 3, 3], 1.0).unwrap();
    let (out, bw) = conv2d(&x, &w, None, Conv2dConfig::default()).unwrap();
    assert_eq!(out.to_vec().unwrap(), vec![9.0, 9.0]);
    let grads = bw.backward(&Tensor::full(&dev, &[1, 2, 1, 1], 1.0).unwrap()).unwrap();
    assert!(grads[2].is_none());
    assert_eq!(grads[0].as_ref().unwrap().to_vec().unwrap(), vec![2.0; 9]);
}

#[test]
fn shaders_validate() {
    validate_wgsl("conv2d", include_str!("../../../shaders/conv2d.wgsl"));
    validate_wgsl("conv2d_subgroup", subgroup::SUBGROUP_SOURCE);
}

#[test]
fn shape_errors_name_the_shapes() {
    let dev = device();
    let cfg = Conv2dConfig::default();
    let cases: [(&[usize], &[usize], &str, &str); 4] = [
        (&[1, 3, 8, 8], &[4, 2, 3, 3], "[1, 3, 8, 8]", "[4, 2, 3, 3]"),
        (&[1, 3, 2, 8], &[4, 3, 3, 3], "[1, 3, 2, 8]", "[4, 3, 3, 3]"),
        (&[3, 8, 8], &[4, 3, 3, 3], "[3, 8, 8]", "[4, 3, 3, 3]"),
        (&[1, 3, 8, 8], &[4, 3, 3], "[1, 3, 8, 8]", "[4, 3, 3]"),
    ];
    for (xs, ws, xn, wn) in cases {
        let e = conv2d_shape(xs, ws, cfg).unwrap_err().to_string();
        assert!(e.contains(xn) && e.contains(wn), "{e}");
    }
    let e = conv2d_shape(&[1, 3, 8, 8], &[4, 3, 3, 3], Conv2dConfig::new(0, Padding::Same)).unwrap_err().to_string();
    assert!(e.contains("stride"), "{e}");
    let x = Tensor::zeros(&dev, &[1, 3, 8, 8]).unwrap();
    let w = Tensor::zeros(&dev, &[4, 3, 3, 3]).unwrap();
    let b = Tensor::zeros(&dev, &[5]).unwrap();
    let e = conv2d(&x, &w, Some(&b), cfg).err().unwrap().to_string();
    assert!(e.contains("[5]") && e.contains("[4, 3, 3, 3]"), "{e}");
    let (_, bw) = conv2d(&x, &w, None, cfg).unwrap();
    let e = bw.backward(&Tensor::zeros(&dev, &[1, 4, 5, 6]).unwrap()).err().unwrap().to_string();
    assert!(e.contains("[1, 4, 5, 6]") && e.contains("[1, 4, 6, 6]"), "{e}");
}
