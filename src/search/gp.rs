//! A Gaussian process over architectures, as AutoKeras 0.3 used: only distances between
//! architectures are needed, through the kernel k(a, b) = exp(-(d(a, b) / length_scale)^2).
//!
//! Beyond AutoKeras: the targets are standardised (the prior mean is the mean observed value, not
//! zero, so an architecture far from every trained one is predicted average rather than zero
//! accuracy), and the length scale and observation noise are chosen by maximum marginal likelihood
//! on a small grid instead of being fixed. An edit distance does not always give a positive
//! definite kernel matrix, so the Cholesky factorisation adds jitter until it succeeds.

/// Gaussian-process regression fitted on a matrix of pairwise distances and observed values.
#[derive(Clone, Debug)]
pub struct GaussianProcess {
    length_scale: f64,
    noise: f64,
    /// Lower Cholesky factor of K + noise I, row-major n x n.
    chol: Vec<f64>,
    /// (K + noise I)^-1 (y - mean) / scale.
    alpha: Vec<f64>,
    y_mean: f64,
    y_scale: f64,
    n: usize,
}

/// Length scales tried, as multiples of the median distance between the observed architectures.
const LENGTH_SCALE_FACTORS: [f64; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];
/// Observation noise variances tried (targets are standardised to unit variance).
const NOISE_LEVELS: [f64; 4] = [1e-4, 1e-2, 0.1, 0.3];
/// Below this many observations the marginal likelihood says little; use the defaults.
const MIN_FOR_SELECTION: usize = 4;
const DEFAULT_NOISE: f64 = 1e-2;

impl GaussianProcess {
    /// Fits on `distances` (n x n, symmetric) and `y` (n values), choosing the length scale and the
    /// noise by marginal likelihood. Returns `None` when there is nothing to fit.
    pub fn fit(distances: &[Vec<f64>], y: &[f64]) -> Option<GaussianProcess> {
        let n = y.len();
        if n == 0 || distances.len() != n {
            return None;
        }
        let median = median_distance(distances);
        if n < MIN_FOR_SELECTION {
            return Self::fit_with(distances, y, median, DEFAULT_NOISE);
        }
        let mut best: Option<(f64, GaussianProcess)> = None;
        for factor in LENGTH_SCALE_FACTORS {
            for noise in NOISE_LEVELS {
                if let Some(gp) = Self::fit_with(distances, y, factor * median, noise) {
                    let lml = gp.log_marginal_likelihood();
                    if best.as_ref().is_none_or(|(b, _)| lml > *b) {
                        best = Some((lml, gp));
                    }
                }
            }
        }
        best.map(|(_, gp)| gp)
    }

    /// Fits with a given length scale and noise variance (in units of the standardised targets).
    pub fn fit_with(distances: &[Vec<f64>], y: &[f64], length_scale: f64, noise: f64) -> Option<GaussianProcess> {
        let n = y.len();
        let y_mean = y.iter().sum::<f64>() / n as f64;
        let var = y.iter().map(|v| (v - y_mean).powi(2)).sum::<f64>() / n as f64;
        // Equal values (or a single one) carry no scale; any scale gives the same ranking.
        let y_scale = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] = kernel(distances[i][j], length_scale);
            }
        }
        let chol = cholesky_with_jitter(&k, n, noise)?;
        let z: Vec<f64> = y.iter().map(|v| (v - y_mean) / y_scale).collect();
        let alpha = solve_upper_t(&chol, n, &solve_lower(&chol, n, &z));
        Some(GaussianProcess { length_scale, noise, chol, alpha, y_mean, y_scale, n })
    }

    pub fn length_scale(&self) -> f64 {
        self.length_scale
    }

    pub fn noise(&self) -> f64 {
        self.noise
    }

    /// log p(y | distances) of the standardised targets.
    pub fn log_marginal_likelihood(&self) -> f64 {
        let n = self.n;
        // z^T alpha with z = L L^T alpha.
        let mut lt_alpha = vec![0.0; n];
        for (i, v) in lt_alpha.iter_mut().enumerate() {
            *v = (i..n).map(|j| self.chol[j * n + i] * self.alpha[j]).sum();
        }
        let fit: f64 = lt_alpha.iter().map(|v| v * v).sum();
        let log_det: f64 = (0..n).map(|i| self.chol[i * n + i].ln()).sum();
        -0.5 * fit - log_det - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// Predictive mean and standard deviation (of the underlying function, in the targets' units)
    /// at a point whose distances to the n training points are `distances`.
    pub fn predict(&self, distances: &[f64]) -> (f64, f64) {
        let k: Vec<f64> = distances.iter().map(|&d| kernel(d, self.length_scale)).collect();
        let mean = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum::<f64>();
        let v = solve_lower(&self.chol, self.n, &k);
        let var = (1.0 - v.iter().map(|x| x * x).sum::<f64>()).max(0.0);
        (self.y_mean + self.y_scale * mean, self.y_scale * var.sqrt())
    }
}

fn kernel(distance: f64, length_scale: f64) -> f64 {
    let r = distance / length_scale.max(1e-12);
    (-r * r).exp()
}

fn median_distance(distances: &[Vec<f64>]) -> f64 {
    let mut off: Vec<f64> = Vec::new();
    for (i, row) in distances.iter().enumerate() {
        off.extend(row.iter().skip(i + 1).copied().filter(|d| *d > 0.0));
    }
    if off.is_empty() {
        return 1.0;
    }
    off.sort_by(f64::total_cmp);
    off[off.len() / 2]
}

/// Cholesky factor of `a + jitter I`, raising the jitter tenfold until the matrix is positive
/// definite (an edit-distance kernel need not be).
fn cholesky_with_jitter(a: &[f64], n: usize, noise: f64) -> Option<Vec<f64>> {
    let mut jitter = noise.max(1e-10);
    while jitter <= 10.0 {
        if let Some(l) = cholesky(a, n, jitter) {
            return Some(l);
        }
        jitter *= 10.0;
    }
    None
}

fn cholesky(a: &[f64], n: usize, jitter: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j] + if i == j { jitter } else { 0.0 };
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves L x = b for lower-triangular L.
fn solve_lower(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * x[k]).sum();
        x[i] = (b[i] - s) / l[i * n + i];
    }
    x
}

/// Solves L^T x = b for lower-triangular L.
fn solve_upper_t(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (b[i] - s) / l[i * n + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_distances(xs: &[f64]) -> Vec<Vec<f64>> {
        xs.iter().map(|a| xs.iter().map(|b| (a - b).abs()).collect()).collect()
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // A = [[4, 2], [2, 3]]: L = [[2, 0], [1, sqrt 2]].
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2, 0.0).unwrap();
        assert!((l[0] - 2.0).abs() < 1e-12 && (l[2] - 1.0).abs() < 1e-12 && (l[3] - 2f64.sqrt()).abs() < 1e-12);
        let b = [2.0, 1.0];
        let x = solve_upper_t(&l, 2, &solve_lower(&l, 2, &b));
        // A x = b.
        assert!((4.0 * x[0] + 2.0 * x[1] - 2.0).abs() < 1e-12 && (2.0 * x[0] + 3.0 * x[1] - 1.0).abs() < 1e-12);
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2, 0.0).is_none(), "indefinite matrix accepted");
    }

    #[test]
    fn interpolates_observations_and_reverts_to_the_mean_far_away() {
        let xs = [0.0, 1.0, 2.0, 3.0, 4.0];
        let ys = [0.1, 0.5, 0.9, 0.5, 0.1];
        let gp = GaussianProcess::fit_with(&line_distances(&xs), &ys, 1.0, 1e-6).unwrap();
        for (x, y) in xs.iter().zip(ys) {
            let d: Vec<f64> = xs.iter().map(|a| (a - x).abs()).collect();
            let (m, s) = gp.predict(&d);
            assert!((m - y).abs() < 1e-3, "at {x}: mean {m}, observed {y}");
            assert!(s < 1e-2, "at {x}: std {s} at an observation");
        }
        let far: Vec<f64> = xs.iter().map(|a| (a - 100.0f64).abs()).collect();
        let (m, s) = gp.predict(&far);
        let mean = ys.iter().sum::<f64>() / 5.0;
        assert!((m - mean).abs() < 1e-6, "far mean {m}");
        assert!(s > 0.25, "far std {s}");
    }

    #[test]
    fn uncertainty_grows_with_distance() {
        let xs = [0.0, 1.0, 2.0];
        let gp = GaussianProcess::fit(&line_distances(&xs), &[0.9, 0.8, 0.85]).unwrap();
        let stds: Vec<f64> =
            [2.5, 3.5, 5.0].iter().map(|x: &f64| gp.predict(&xs.iter().map(|a| (a - x).abs()).collect::<Vec<_>>()).1).collect();
        assert!(stds[0] < stds[1] && stds[1] < stds[2], "{stds:?}");
    }

    #[test]
    fn selection_prefers_a_smooth_fit_for_smooth_data() {
        let xs: Vec<f64> = (0..12).map(|i| i as f64 * 0.5).collect();
        let ys: Vec<f64> = xs.iter().map(|x| (x * 0.4).sin()).collect();
        let gp = GaussianProcess::fit(&line_distances(&xs), &ys).unwrap();
        let (m, _) = gp.predict(&xs.iter().map(|a| (a - 2.25f64).abs()).collect::<Vec<_>>());
        assert!((m - (2.25f64 * 0.4).sin()).abs() < 0.02, "mean {m} between observations");
        assert!(gp.length_scale() >= 1.0, "length scale {}", gp.length_scale());
    }

    #[test]
    fn an_indefinite_distance_kernel_still_fits() {
        // Distances that violate the triangle inequality make exp(-d^2) indefinite.
        let d = vec![vec![0.0, 0.1, 3.0], vec![0.1, 0.0, 0.1], vec![3.0, 0.1, 0.0]];
        let gp = GaussianProcess::fit_with(&d, &[1.0, 2.0, 3.0], 1.0, 1e-8).unwrap();
        let (m, s) = gp.predict(&[0.0, 0.1, 3.0]);
        assert!(m.is_finite() && s.is_finite());
    }
}
