//! Pooling over NCHW f32: max pooling (argmax saved in forward, backward gathers through it),
//! average pooling (valid windows of `kernel x kernel`, step `stride`) and global average pooling
//! (`[n, c, h, w] -> [n, c]`). Backward passes gather per input pixel, so overlapping windows
//! (stride < kernel) are summed without atomics.

use super::Backward;
use crate::device::{Access, DType, GpuBuffer, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

static MAX_FORWARD: KernelSpec = KernelSpec {
    name: "pool_max",
    source: include_str!("../../shaders/pool_max.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::ReadWrite, Access::ReadWrite],
};
static MAX_BACKWARD_GATHER: KernelSpec = max_backward_kernel("pool_max_backward_gather", "gather");
static MAX_BACKWARD_SCATTER: KernelSpec = max_backward_kernel("pool_max_backward_scatter", "scatter");
static AVG_FORWARD: KernelSpec = pool_kernel("pool_avg_forward", "avg_forward");
static AVG_BACKWARD_GATHER: KernelSpec = pool_kernel("pool_avg_backward_gather", "avg_backward");
static AVG_BACKWARD_SCATTER: KernelSpec = pool_kernel("pool_avg_backward_scatter", "avg_backward_scatter");
static GLOBAL_AVG_FORWARD: KernelSpec = pool_kernel("pool_global_avg_forward", "global_avg_forward");
static GLOBAL_AVG_BACKWARD: KernelSpec = pool_kernel("pool_global_avg_backward", "global_avg_backward");

const fn pool_kernel(name: &'static str, entry: &'static str) -> KernelSpec {
    KernelSpec { name, source: include_str!("../../shaders/pool.wgsl"), entry, bindings: &[Access::Read, Access::ReadWrite] }
}

const fn max_backward_kernel(name: &'static str, entry: &'static str) -> KernelSpec {
    KernelSpec {
        name,
        source: include_str!("../../shaders/pool_max_backward.wgsl"),
        entry,
        bindings: &[Access::Read, Access::Read, Access::ReadWrite],
    }
}

const WG: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool2dConfig {
    pub kernel: usize,
    pub stride: usize,
}

impl Pool2dConfig {
    /// Non-overlapping `k x k` windows (Keras' default: stride = pool size).
    pub fn square(k: usize) -> Self {
        Pool2dConfig { kernel: k, stride: k }
    }
}

/// Mirrors `Params` in shaders/pool*.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kernel: u32,
    stride: u32,
    _pad: u32,
}

impl PoolParams {
    fn new(x: &[usize], cfg: Pool2dConfig) -> Self {
        let out = pool_out(x, cfg);
        PoolParams {
            planes: (x[0] * x[1]) as u32,
            h: x[2] as u32,
            w: x[3] as u32,
            oh: out[2] as u32,
            ow: out[3] as u32,
            kernel: cfg.kernel as u32,
            stride: cfg.stride as u32,
            _pad: 0,
        }
    }
    fn groups(&self, rows: u32) -> [u32; 3] {
        super::grid_1d(super::groups(rows as usize, WG))
    }
    /// Each input pixel lies in at most one window.
    fn disjoint(&self) -> bool {
        self.stride >= self.kernel
    }
    /// Some input pixels lie in no window (gaps between windows, or rows/columns past the last).
    fn has_uncovered(&self) -> bool {
        let reach = |out: u32| (out - 1) * self.stride + self.kernel;
        reach(self.oh) < self.h || reach(self.ow) < self.w || self.stride > self.kernel
    }
}

/// Records a pooling backward: a scatter per output row when windows are disjoint (zeroing first
/// the pixels no window covers), else a gather per input row.
fn dispatch_backward(p: &PoolParams, gather: &KernelSpec, scatter: &KernelSpec, buffers: &[&GpuBuffer], dx: &Tensor) -> Result<()> {
    let dev = dx.device();
    if !p.disjoint() {
        return dev.dispatch(gather, &[], p, buffers, p.groups(p.planes * p.h));
    }
    if p.has_uncovered() {
        dev.zero(dx.buffer());
    }
    dev.dispatch(scatter, &[], p, buffers, p.groups(p.planes * p.oh))
}

fn pool_out(x: &[usize], cfg: Pool2dConfig) -> [usize; 4] {
    [x[0], x[1], (x[2] - cfg.kernel) / cfg.stride + 1, (x[3] - cfg.kernel) / cfg.stride + 1]
}

/// Output shape `[n, c, (h - k)/stride + 1, (w - k)/stride + 1]`, or an error naming the shape.
pub fn pool2d_shape(x: &[usize], cfg: Pool2dConfig) -> Result<Vec<usize>> {
    let err = |why: &str| Err(Error::shape("pool2d", format!("input {x:?} (kernel {}, stride {}): {why}", cfg.kernel, cfg.stride)));
    if x.len() != 4 {
        return err("expects a 4-D NCHW input");
    }
    if x.contains(&0) {
        return err("zero-sized dimension");
    }
    if cfg.kernel == 0 || cfg.stride == 0 {
        return err("kernel and stride must be at least 1");
    }
    if cfg.kernel > x[2] || cfg.kernel > x[3] {
        return err("the window is larger than the input");
    }
    Ok(pool_out(x, cfg).to_vec())
}

fn check_grad(op: &'static str, dout: &Tensor, want: &[usize], x: &[usize]) -> Result<()> {
    if dout.shape() != want {
        return Err(Error::shape(op, format!("output gradient {:?} does not match the output {want:?} of input {x:?}", dout.shape())));
    }
    Ok(())
}

/// Max pooling; the backward keeps the argmax (`u32` index within the input plane) per output.
pub fn max_pool2d(x: &Tensor, cfg: Pool2dConfig) -> Result<(Tensor, MaxPool2dBackward)> {
    x.expect_f32("max_pool2d")?;
    let out_shape = pool2d_shape(x.shape(), cfg)?;
    let dev = x.device();
    let out = Tensor::uninit(dev, &out_shape, "max_pool2d output")?;
    let argmax = Tensor::uninit_typed(dev, &out_shape, DType::U32, "max_pool2d argmax")?;
    let params = PoolParams::new(x.shape(), cfg);
    dev.dispatch(&MAX_FORWARD, &[], &params, &[x.buffer(), out.buffer(), argmax.buffer()], params.groups(params.planes * params.oh))?;
    Ok((out, MaxPool2dBackward { x_shape: x.shape().to_vec(), cfg, argmax }))
}

pub struct MaxPool2dBackward {
    x_shape: Vec<usize>,
    cfg: Pool2dConfig,
    argmax: Tensor,
}

impl MaxPool2dBackward {
    /// Per output, the index `y * w + x` within its input plane of the window's first maximum.
    pub fn argmax(&self) -> &Tensor {
        &self.argmax
    }
}

impl Backward for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    // dx[i] = sum of dout over the windows whose argmax is i.
    fn backward(&self, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        check_grad("max_pool2d backward", dout, self.argmax.shape(), &self.x_shape)?;
        let dx = Tensor::uninit(dout.device(), &self.x_shape, "max_pool2d input gradient")?;
        let params = PoolParams::new(&self.x_shape, self.cfg);
        let buffers = [dout.buffer(), self.argmax.buffer(), dx.buffer()];
        dispatch_backward(&params, &MAX_BACKWARD_GATHER, &MAX_BACKWARD_SCATTER, &buffers, &dx)?;
        Ok(vec![Some(dx)])
    }
}

/// Average pooling over valid windows.
pub fn avg_pool2d(x: &Tensor, cfg: Pool2dConfig) -> Result<(Tensor, AvgPool2dBackward)> {
    x.expect_f32("avg_pool2d")?;
    let out_shape = pool2d_shape(x.shape(), cfg)?;
    let dev = x.device();
    let out = Tensor::uninit(dev, &out_shape, "avg_pool2d output")?;
    let params = PoolParams::new(x.shape(), cfg);
    dev.dispatch(&AVG_FORWARD, &[], &params, &[x.buffer(), out.buffer()], params.groups(params.planes * params.oh))?;
    Ok((out, AvgPool2dBackward { x_shape: x.shape().to_vec(), out_shape, cfg }))
}

pub struct AvgPool2dBackward {
    x_shape: Vec<usize>,
    out_shape: Vec<usize>,
    cfg: Pool2dConfig,
}

impl Backward for AvgPool2dBackward {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    // dx[i] = sum of dout / k^2 over the windows covering i.
    fn backward(&self, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        check_grad("avg_pool2d backward", dout, &self.out_shape, &self.x_shape)?;
        let dev = dout.device();
        let dx = Tensor::uninit(dev, &self.x_shape, "avg_pool2d input gradient")?;
        let params = PoolParams::new(&self.x_shape, self.cfg);
        dispatch_backward(&params, &AVG_BACKWARD_GATHER, &AVG_BACKWARD_SCATTER, &[dout.buffer(), dx.buffer()], &dx)?;
        Ok(vec![Some(dx)])
    }
}

/// Mean over each plane: `[n, c, h, w] -> [n, c]`.
pub fn global_avg_pool(x: &Tensor) -> Result<(Tensor, GlobalAvgPoolBackward)> {
    x.expect_f32("global_avg_pool")?;
    let s = x.shape();
    if s.len() != 4 || s.contains(&0) {
        return Err(Error::shape("global_avg_pool", format!("expects a non-empty 4-D NCHW input, got {s:?}")));
    }
    let dev = x.device();
    let out = Tensor::uninit(dev, &s[..2], "global_avg_pool output")?;
    // One window covering the whole plane.
    let params = PoolParams { planes: (s[0] * s[1]) as u32, h: s[2] as u32, w: s[3] as u32, oh: 1, ow: 1, kernel: 0, stride: 1, _pad: 0 };
    dev.dispatch(&GLOBAL_AVG_FORWARD, &[], &params, &[x.buffer(), out.buffer()], params.groups(params.planes))?;
    Ok((out, GlobalAvgPoolBackward { x_shape: s.to_vec(), params }))
}

pub struct GlobalAvgPoolBackward {
    x_shape: Vec<usize>,
    params: PoolParams,
}

impl Backward for GlobalAvgPoolBackward {
    fn name(&self) -> &'static str {
        "global_avg_pool"
    }
    // dx[n,c,y,x] = dout[n,c] / (h*w).
    fn backward(&self, dout: &Tensor) -> Result<Vec<Option<Tensor>>> {
        check_grad("global_avg_pool backward", dout, &self.x_shape[..2], &self.x_shape)?;
        let dev = dout.device();
        let dx = Tensor::uninit(dev, &self.x_shape, "global_avg_pool input gradient")?;
        let p = &self.params;
        dev.dispatch(&GLOBAL_AVG_BACKWARD, &[], p, &[dout.buffer(), dx.buffer()], p.groups(p.planes * p.h * p.w))?;
        Ok(vec![Some(dx)])
    }
}

/// f64 CPU reference. Shapes are NCHW; `out` positions are `(plane, oy, ox)`.
pub mod cpu {
    use super::Pool2dConfig;

    /// Calls `f(out index, input indices of its window in row-major order)`.
    fn windows(x: [usize; 4], cfg: Pool2dConfig, mut f: impl FnMut(usize, &[usize])) {
        let (h, w) = (x[2], x[3]);
        let (oh, ow) = ((h - cfg.kernel) / cfg.stride + 1, (w - cfg.kernel) / cfg.stride + 1);
        let mut idx = Vec::with_capacity(cfg.kernel * cfg.kernel);
        for plane in 0..x[0] * x[1] {
            for oy in 0..oh {
                for ox in 0..ow {
                    idx.clear();
                    for i in 0..cfg.kernel {
                        for j in 0..cfg.kernel {
                            idx.push((plane * h + oy * cfg.stride + i) * w + ox * cfg.stride + j);
                        }
                    }
                    f((plane * oh + oy) * ow + ox, &idx);
                }
            }
        }
    }

    fn out_len(x: [usize; 4], cfg: Pool2dConfig) -> usize {
        x[0] * x[1] * ((x[2] - cfg.kernel) / cfg.stride + 1) * ((x[3] - cfg.kernel) / cfg.stride + 1)
    }

    /// Returns (output, index of the first maximum of each window in the flat input).
    pub fn max_pool2d(x: &[f64], shape: [usize; 4], cfg: Pool2dConfig) -> (Vec<f64>, Vec<usize>) {
        let mut out = vec![0.0; out_len(shape, cfg)];
        let mut arg = vec![0; out.len()];
        windows(shape, cfg, |o, idx| {
            let best = idx.iter().copied().fold(idx[0], |b, i| if x[i] > x[b] { i } else { b });
            out[o] = x[best];
            arg[o] = best;
        });
        (out, arg)
    }

    // dx[i] = sum of dout over the windows whose maximum is x[i].
    pub fn max_pool2d_backward(x: &[f64], shape: [usize; 4], cfg: Pool2dConfig, dout: &[f64]) -> Vec<f64> {
        let (_, arg) = max_pool2d(x, shape, cfg);
        let mut dx = vec![0.0; x.len()];
        for (o, &i) in arg.iter().enumerate() {
            dx[i] += dout[o];
        }
        dx
    }

    pub fn avg_pool2d(x: &[f64], shape: [usize; 4], cfg: Pool2dConfig) -> Vec<f64> {
        let mut out = vec![0.0; out_len(shape, cfg)];
        windows(shape, cfg, |o, idx| out[o] = idx.iter().map(|&i| x[i]).sum::<f64>() / idx.len() as f64);
        out
    }

    // dx[i] = sum of dout / k^2 over the windows covering i.
    pub fn avg_pool2d_backward(shape: [usize; 4], cfg: Pool2dConfig, dout: &[f64]) -> Vec<f64> {
        let mut dx = vec![0.0; shape.iter().product()];
        windows(shape, cfg, |o, idx| idx.iter().for_each(|&i| dx[i] += dout[o] / idx.len() as f64));
        dx
    }

    pub fn global_avg_pool(x: &[f64], shape: [usize; 4]) -> Vec<f64> {
        let len = shape[2] * shape[3];
        x.chunks(len).map(|plane| plane.iter().sum::<f64>() / len as f64).collect()
    }

    // dx[n,c,y,x] = dout[n,c] / (h*w).
    pub fn global_avg_pool_backward(shape: [usize; 4], dout: &[f64]) -> Vec<f64> {
        let len = shape[2] * shape[3];
        dout.iter().flat_map(|&d| std::iter::repeat_n(d / len as f64, len)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// Random input shape and window: batch 1, odd sizes, kernels 1..4, strides below, at and
    /// above the kernel (overlapping and gapped windows).
    fn random_case(rng: &mut TestRng, case: usize) -> ([usize; 4], Pool2dConfig) {
        let kernel = 1 + case % 4;
        let stride = [kernel, 1, 2, kernel + 1][(case / 4) % 4];
        let n = if case.is_multiple_of(3) { 1 } else { rand_dim(rng, 1, 3) };
        let c = rand_dim(rng, 1, 7);
        let h = rand_dim(rng, kernel, kernel + 11);
        let w = rand_dim(rng, kernel, kernel + 11);
        ([n, c, h, w], Pool2dConfig { kernel, stride })
    }

    /// Distinct values, so the maximum of every window is unique and finite differences are exact.
    fn distinct_vec(rng: &mut TestRng, n: usize) -> Vec<f64> {
        use rand::seq::SliceRandom;
        let mut v: Vec<f64> = (0..n).map(|i| (i as f64 - n as f64 / 2.0) * 0.01).collect();
        v.shuffle(rng);
        v
    }

    #[test]
    fn forward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(31);
        for case in 0..24 {
            let (xs, cfg) = random_case(&mut rng, case);
            let x = distinct_vec(&mut rng, xs.iter().product());
            let gx = tensor(&dev, &x, &xs);
            let what = format!("x{xs:?} {cfg:?}");
            let (want_max, want_arg) = cpu::max_pool2d(&x, xs, cfg);
            let (out, bw) = max_pool2d(&gx, cfg).unwrap();
            assert_eq!(out.shape(), pool2d_shape(&xs, cfg).unwrap());
            assert_close(&out.to_vec().unwrap(), &want_max, 1e-6, &format!("max_pool2d {what}"));
            // The GPU stores the index within the plane; the reference the flat index.
            let plane = xs[2] * xs[3];
            let want_in_plane: Vec<u32> = want_arg.iter().map(|&i| (i % plane) as u32).collect();
            assert_eq!(bw.argmax().to_u32_vec().unwrap(), want_in_plane, "argmax {what}");
            let (out, _) = avg_pool2d(&gx, cfg).unwrap();
            assert_close(&out.to_vec().unwrap(), &cpu::avg_pool2d(&x, xs, cfg), 1e-4, &format!("avg_pool2d {what}"));
            let (out, _) = global_avg_pool(&gx).unwrap();
            assert_eq!(out.shape(), &xs[..2]);
            assert_close(&out.to_vec().unwrap(), &cpu::global_avg_pool(&x, xs), 1e-4, &format!("global_avg_pool {what}"));
        }
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let mut rng = rng(32);
        for case in 0..12 {
            let (mut xs, cfg) = random_case(&mut rng, case);
            xs[0] = xs[0].min(2);
            xs[1] = xs[1].min(2);
            let x = distinct_vec(&mut rng, xs.iter().product());
            let what = format!("x{xs:?} {cfg:?}");
            let r = rand_vec(&mut rng, pool2d_shape(&xs, cfg).unwrap().iter().product()); // L = sum(r * out)
            let num = numeric_grad(&x, |x| dot(&cpu::max_pool2d(x, xs, cfg).0, &r));
            assert_close_f64(&cpu::max_pool2d_backward(&x, xs, cfg, &r), &num, 1e-5, &format!("max_pool2d dx {what}"));
            let num = numeric_grad(&x, |x| dot(&cpu::avg_pool2d(x, xs, cfg), &r));
            assert_close_f64(&cpu::avg_pool2d_backward(xs, cfg, &r), &num, 1e-5, &format!("avg_pool2d dx {what}"));
            let r = rand_vec(&mut rng, xs[0] * xs[1]);
            let num = numeric_grad(&x, |x| dot(&cpu::global_avg_pool(x, xs), &r));
            assert_close_f64(&cpu::global_avg_pool_backward(xs, &r), &num, 1e-5, &format!("global_avg_pool dx {what}"));
        }
    }

    #[test]
    fn gpu_backward_matches_reference_on_random_shapes() {
        let dev = device();
        let mut rng = rng(33);
        for case in 0..24 {
            let (xs, cfg) = random_case(&mut rng, case);
            let x = distinct_vec(&mut rng, xs.iter().product());
            let gx = tensor(&dev, &x, &xs);
            let what = format!("x{xs:?} {cfg:?}");
            let out_shape = pool2d_shape(&xs, cfg).unwrap();
            let r = rand_vec(&mut rng, out_shape.iter().product());
            let gr = tensor(&dev, &r, &out_shape);

            let (_, bw) = max_pool2d(&gx, cfg).unwrap();
            let dx = bw.backward(&gr).unwrap()[0].as_ref().unwrap().to_vec().unwrap();
            assert_close(&dx, &cpu::max_pool2d_backward(&x, xs, cfg, &r), 1e-5, &format!("max_pool2d dx {what}"));

            let (_, bw) = avg_pool2d(&gx, cfg).unwrap();
            let dx = bw.backward(&gr).unwrap()[0].as_ref().unwrap().to_vec().unwrap();
            assert_close(&dx, &cpu::avg_pool2d_backward(xs, cfg, &r), 1e-4, &format!("avg_pool2d dx {what}"));

            let r = rand_vec(&mut rng, xs[0] * xs[1]);
            let (_, bw) = global_avg_pool(&gx).unwrap();
            let dx = bw.backward(&tensor(&dev, &r, &xs[..2])).unwrap()[0].as_ref().unwrap().to_vec().unwrap();
            assert_close(&dx, &cpu::global_avg_pool_backward(xs, &r), 1e-4, &format!("global_avg_pool dx {what}"));
        }
    }

    #[test]
    fn max_pool_ties_and_overlaps_route_each_gradient_once() {
        // All equal: every window picks its first element; with stride 1 and kernel 2 the
        // top-left pixel of each window gets exactly the gradients of the windows that chose it.
        let dev = device();
        let x = Tensor::full(&dev, &[1, 1, 3, 3], 1.0).unwrap();
        let (_, bw) = max_pool2d(&x, Pool2dConfig { kernel: 2, stride: 1 }).unwrap();
        assert_eq!(bw.argmax().to_u32_vec().unwrap(), vec![0, 1, 3, 4]);
        let dx = bw.backward(&Tensor::from_slice(&dev, &[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap()).unwrap();
        assert_eq!(dx[0].as_ref().unwrap().to_vec().unwrap(), vec![1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn disjoint_windows_zero_the_pixels_no_window_covers() {
        // Kernel 2, stride 3 on 5x6: rows/columns 2 and 5 lie in no window. A dirty pooled
        // buffer of the gradient's size is released first, so stale values would show.
        let dev = device();
        let xs = [1, 2, 5, 6];
        let cfg = Pool2dConfig { kernel: 2, stride: 3 };
        let x: Vec<f64> = (0..60).map(|i| ((i * 37) % 60) as f64).collect();
        let r = [1.0, -2.0, 3.0, 0.5, 4.0, -1.0, 2.0, 5.0];
        let gx = tensor(&dev, &x, &xs);
        let gr = tensor(&dev, &r, &[1, 2, 2, 2]);
        let (_, max_bw) = max_pool2d(&gx, cfg).unwrap();
        let (_, avg_bw) = avg_pool2d(&gx, cfg).unwrap();
        drop(Tensor::full(&dev, &xs, 7.0).unwrap());
        let dx = max_bw.backward(&gr).unwrap()[0].as_ref().unwrap().to_vec().unwrap();
        assert_close(&dx, &cpu::max_pool2d_backward(&x, xs, cfg, &r), 1e-6, "max_pool2d dx with gaps");
        drop(Tensor::full(&dev, &xs, 7.0).unwrap());
        let dx = avg_bw.backward(&gr).unwrap()[0].as_ref().unwrap().to_vec().unwrap();
        assert_close(&dx, &cpu::avg_pool2d_backward(xs, cfg, &r), 1e-6, "avg_pool2d dx with gaps");
    }

    #[test]
    fn shaders_validate() {
        validate_wgsl("pool", include_str!("../../shaders/pool.wgsl"));
        validate_wgsl("pool_max", include_str!("../../shaders/pool_max.wgsl"));
        validate_wgsl("pool_max_backward", include_str!("../../shaders/pool_max_backward.wgsl"));
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let dev = device();
        let e = pool2d_shape(&[2, 3, 4, 5], Pool2dConfig::square(6)).unwrap_err().to_string();
        assert!(e.contains("[2, 3, 4, 5]") && e.contains("kernel 6"), "{e}");
        let e = pool2d_shape(&[2, 3, 4], Pool2dConfig::square(2)).unwrap_err().to_string();
        assert!(e.contains("[2, 3, 4]"), "{e}");
        assert!(pool2d_shape(&[2, 3, 4, 4], Pool2dConfig { kernel: 2, stride: 0 }).is_err());
        assert!(max_pool2d(&Tensor::zeros(&dev, &[1, 1, 1, 3]).unwrap(), Pool2dConfig::square(2)).is_err());
        let e = global_avg_pool(&Tensor::zeros(&dev, &[4, 5]).unwrap()).err().unwrap().to_string();
        assert!(e.contains("[4, 5]"), "{e}");
        let (_, bw) = avg_pool2d(&Tensor::zeros(&dev, &[1, 2, 4, 4]).unwrap(), Pool2dConfig::square(2)).unwrap();
        let e = bw.backward(&Tensor::zeros(&dev, &[1, 2, 3, 3]).unwrap()).err().unwrap().to_string();
        assert!(e.contains("[1, 2, 3, 3]") && e.contains("[1, 2, 2, 2]"), "{e}");
    }
}
