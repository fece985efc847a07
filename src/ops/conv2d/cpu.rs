//! f64 CPU reference, direct loops over NCHW.

use super::ConvGeometry;

/// Calls `f(x index, w index, out index)` for every multiply-add of the convolution.
fn for_each_tap(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize)) {
    for n in 0..g.n {
        for co in 0..g.c_out {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let o = ((n * g.c_out + co) * g.oh + oy) * g.ow + ox;
                    for ci in 0..g.c_in {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let y = (oy * g.stride + i) as isize - g.pad_top as isize;
                                let x = (ox * g.stride + j) as isize - g.pad_left as isize;
                                if y < 0 || x < 0 || y >= g.h as isize || x >= g.w as isize {
                                    continue;
                                }
                                let xi = ((n * g.c_in + ci) * g.h + y as usize) * g.w + x as usize;
                                let wi = ((co * g.c_in + ci) * g.kh + i) * g.kw + j;
                                f(xi, wi, o);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn conv2d(x: &[f64], w: &[f64], b: Option<&[f64]>, g: &ConvGeometry) -> Vec<f64> {
    let mut out = vec![0.0; g.n * g.c_out * g.p()];
    if let Some(b) = b {
        for (o, v) in out.iter_mut().enumerate() {
            *v = b[(o / g.p()) % g.c_out];
        }
    }
    for_each_tap(g, |xi, wi, o| out[o] += x[xi] * w[wi]);
    out
}

/// Returns (dx, dw, db).
// out = sum x*w + b:  dx += dout*w,  dw += dout*x,  db = sum dout.
pub fn conv2d_backward(x: &[f64], w: &[f64], dout: &[f64], g: &ConvGeometry) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    let mut db = vec![0.0; g.c_out];
    for_each_tap(g, |xi, wi, o| {
        dx[xi] += dout[o] * w[wi];
        dw[wi] += dout[o] * x[xi];
    });
    for (o, d) in dout.iter().enumerate() {
        db[(o / g.p()) % g.c_out] += d;
    }
    (dx, dw, db)
}
