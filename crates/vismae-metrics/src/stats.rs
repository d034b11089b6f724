//! Paired statistics for comparing two initialisations on the same test cases:
//! - [`wilcoxon`]: the Wilcoxon signed-rank test of paired differences, with SciPy's semantics
//!   (`scipy.stats.wilcoxon(d, zero_method='wilcox', correction=False)`, method `'auto'` as in
//!   SciPy >= 1.15: zeros dropped; with no ties and no zeros and at most 50 values, the exact
//!   distribution of W+; with ties or zeros and at most 13 values, the exhaustive sign-flip
//!   permutation test; otherwise the normal approximation with the tie correction);
//! - [`delong`]: DeLong's test for two correlated ROC AUCs on the same cases (the fast algorithm of
//!   Sun & Xu 2014, midranks, structural components);
//! - [`bootstrap`]: seeded paired bootstrap resamples and percentile intervals with NumPy's
//!   default (`'linear'`) quantile, as `scipy.stats.bootstrap(method='percentile')` reports them.
//!
//! Tested against literal values computed with SciPy 1.17.1 and an independent DeLong
//! implementation (cross-checked with exact rational arithmetic and PyPI `MLstatkit`).

/// Standard normal upper tail `P(Z > z)`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// Average (mid) ranks, 1-based, and the sizes of the groups of tied values.
pub fn midranks(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = r;
        }
        ties.push(j - i + 1);
        i = j + 1;
    }
    (ranks, ties)
}

/// How a Wilcoxon p-value was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WilcoxonMethod {
    /// The exact null distribution of W+ (no ties, no zeros, n <= 50).
    Exact,
    /// The exhaustive sign-flip permutation test (ties or zeros, at most 13 values).
    Permutation,
    /// The normal approximation with the tie correction, no continuity correction.
    Normal,
}

impl WilcoxonMethod {
    /// A name for tables.
    pub fn name(self) -> &'static str {
        match self {
            WilcoxonMethod::Exact => "wilcoxon-exact",
            WilcoxonMethod::Permutation => "wilcoxon-permutation",
            WilcoxonMethod::Normal => "wilcoxon-normal",
        }
    }
}

/// A Wilcoxon signed-rank test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wilcoxon {
    /// Non-zero differences used.
    pub n: usize,
    /// Sum of the ranks of the positive differences.
    pub w_plus: f64,
    /// Sum of the ranks of the negative differences.
    pub w_minus: f64,
    /// `(W+ - n(n+1)/4) / sd` (the normal approximation's statistic).
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// How `p` was computed.
    pub method: WilcoxonMethod,
}

/// The Wilcoxon signed-rank test of paired differences `d`, SciPy's `'auto'` method; `None`
/// when no difference is non-zero.
pub fn wilcoxon(d: &[f64]) -> Option<Wilcoxon> {
    let zeros = d.iter().filter(|&&x| x == 0.0).count();
    let nz: Vec<f64> = d.iter().copied().filter(|&x| x != 0.0 && x.is_finite()).collect();
    let (ranks, ties) = midranks(&nz.iter().map(|x| x.abs()).collect::<Vec<_>>());
    let has_ties = ties.iter().any(|&t| t > 1);
    let method = if d.len() > 50 {
        WilcoxonMethod::Normal
    } else if !has_ties && zeros == 0 {
        WilcoxonMethod::Exact
    } else if d.len() <= 13 {
        WilcoxonMethod::Permutation
    } else {
        WilcoxonMethod::Normal
    };
    wilcoxon_with(&nz, &ranks, &ties, method)
}

/// [`wilcoxon`] with a chosen method (`Exact` on tied data rounds W+ as SciPy does).
pub fn wilcoxon_method(d: &[f64], method: WilcoxonMethod) -> Option<Wilcoxon> {
    let nz: Vec<f64> = d.iter().copied().filter(|&x| x != 0.0 && x.is_finite()).collect();
    let (ranks, ties) = midranks(&nz.iter().map(|x| x.abs()).collect::<Vec<_>>());
    wilcoxon_with(&nz, &ranks, &ties, method)
}

fn wilcoxon_with(nz: &[f64], ranks: &[f64], ties: &[usize], method: WilcoxonMethod) -> Option<Wilcoxon> {
    let n = nz.len();
    if n == 0 {
        return None;
    }
    let w_plus: f64 = nz.iter().zip(ranks).filter(|(d, _)| **d > 0.0).map(|(_, r)| r).sum();
    let w_minus: f64 = nz.iter().zip(ranks).filter(|(d, _)| **d < 0.0).map(|(_, r)| r).sum();
    let nf = n as f64;
    let mean = nf * (nf + 1.0) * 0.25;
    let tie_correct: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum();
    let se = ((nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie_correct / 2.0) / 24.0).sqrt();
    let z = (w_plus - mean) / se;
    let p = match method {
        WilcoxonMethod::Normal => 2.0 * normal_sf(z.abs()),
        WilcoxonMethod::Exact => {
            // the null distribution of W+ over the 2^n sign assignments of ranks 1..n
            let max = n * (n + 1) / 2;
            let mut c = vec![0f64; max + 1];
            c[0] = 1.0;
            for k in 1..=n {
                for w in (k..=max).rev() {
                    c[w] += c[w - k];
                }
            }
            let total = 2f64.powi(n as i32);
            let sf = |k: usize| c[k.min(max + 1)..].iter().sum::<f64>() / total;
            let cdf = |k: usize| c[..=k.min(max)].iter().sum::<f64>() / total;
            (2.0 * sf(w_plus.floor() as usize).min(cdf(w_plus.ceil() as usize))).min(1.0)
        }
        WilcoxonMethod::Permutation => {
            // every sign flip of the differences, the midranks fixed (flipping a zero changes nothing)
            let gamma = 100.0 * f64::EPSILON * w_plus.abs();
            let (mut le, mut ge) = (0u64, 0u64);
            for signs in 0u64..(1u64 << n) {
                let w: f64 = (0..n).filter(|&i| signs >> i & 1 == 1).map(|i| ranks[i]).sum();
                le += u64::from(w <= w_plus + gamma);
                ge += u64::from(w >= w_plus - gamma);
            }
            (2.0 * le.min(ge) as f64 / (1u64 << n) as f64).min(1.0)
        }
    };
    Some(Wilcoxon { n, w_plus, w_minus, z, p, method })
}

/// DeLong's comparison of two ROC AUCs on the same cases.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeLong {
    /// AUC of the first scores.
    pub auc1: f64,
    /// AUC of the second scores.
    pub auc2: f64,
    /// Variance of the first AUC.
    pub var1: f64,
    /// Variance of the second AUC.
    pub var2: f64,
    /// Their covariance.
    pub cov: f64,
    /// `(auc1 - auc2) / sd(auc1 - auc2)`; 0 when the difference has no variance and the AUCs are
    /// equal (pROC's rule), infinite when they differ.
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// DeLong's test (fast DeLong, Sun & Xu 2014) of scores `s1` and `s2` of the same cases with
/// binary `labels`; `None` unless both classes are present.
pub fn delong(labels: &[bool], s1: &[f64], s2: &[f64]) -> Option<DeLong> {
    let m = labels.iter().filter(|&&l| l).count();
    let n = labels.len() - m;
    if m < 2 || n < 2 || s1.len() != labels.len() || s2.len() != labels.len() {
        return None;
    }
    let components = |s: &[f64]| -> (f64, Vec<f64>, Vec<f64>) {
        let pos: Vec<f64> = s.iter().zip(labels).filter(|(_, l)| **l).map(|(v, _)| *v).collect();
        let neg: Vec<f64> = s.iter().zip(labels).filter(|(_, l)| !**l).map(|(v, _)| *v).collect();
        let (tx, _) = midranks(&pos);
        let (ty, _) = midranks(&neg);
        let all: Vec<f64> = pos.iter().chain(&neg).copied().collect();
        let (tz, _) = midranks(&all);
        let auc = tz[..m].iter().sum::<f64>() / (m * n) as f64 - (m as f64 + 1.0) / (2.0 * n as f64);
        let v10: Vec<f64> = (0..m).map(|i| (tz[i] - tx[i]) / n as f64).collect();
        let v01: Vec<f64> = (0..n).map(|j| 1.0 - (tz[m + j] - ty[j]) / m as f64).collect();
        (auc, v10, v01)
    };
    let (a1, p1, q1) = components(s1);
    let (a2, p2, q2) = components(s2);
    let cov = |a: &[f64], b: &[f64]| -> f64 {
        let k = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / k, b.iter().sum::<f64>() / k);
        a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / (k - 1.0)
    };
    let (m, n) = (m as f64, n as f64);
    let var1 = cov(&p1, &p1) / m + cov(&q1, &q1) / n;
    let var2 = cov(&p2, &p2) / m + cov(&q2, &q2) / n;
    let c12 = cov(&p1, &p2) / m + cov(&q1, &q2) / n;
    let var = var1 + var2 - 2.0 * c12;
    let z = if var > 0.0 {
        (a1 - a2) / var.sqrt()
    } else if a1 == a2 {
        0.0
    } else {
        f64::INFINITY.copysign(a1 - a2)
    };
    Some(DeLong { auc1: a1, auc2: a2, var1, var2, cov: c12, z, p: 2.0 * normal_sf(z.abs()) })
}

/// The `q` quantile of sorted values by NumPy's default (`'linear'`, Hyndman & Fan type 7).
pub fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = q * (sorted.len() - 1) as f64;
    let j = h.floor() as usize;
    let g = h - j as f64;
    match sorted.get(j + 1) {
        Some(next) => sorted[j] + g * (next - sorted[j]),
        None => sorted[j],
    }
}

/// Seeded resampling: a SplitMix64 stream of indices, so a study's intervals are reproducible.
#[derive(Clone, Debug)]
pub struct Resampler {
    state: u64,
}

impl Resampler {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed ^ 0x6a09_e667_f3bc_c908 }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n`.
    pub fn index(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }

    /// `n` indices in `0..n`, with replacement.
    pub fn resample(&mut self, n: usize) -> Vec<usize> {
        (0..n).map(|_| self.index(n)).collect()
    }
}

/// A bootstrap estimate: the observed statistic, a percentile interval and a two-sided p-value
/// for "the statistic is 0".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bootstrap {
    /// The statistic on the data.
    pub estimate: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
    /// `min(1, 2 (1 + min(#{t* <= 0}, #{t* >= 0})) / (B + 1))`.
    pub p: f64,
    /// Resamples whose statistic was defined.
    pub resamples: usize,
}

/// The percentile interval at `level` (e.g. 0.95) and the bootstrap p-value of resampled
/// statistics `stats` (non-finite ones left out), with the `estimate` on the data.
pub fn percentile_interval(estimate: f64, stats: &[f64], level: f64) -> Bootstrap {
    let mut s: Vec<f64> = stats.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    let (le, ge) = (s.iter().filter(|&&v| v <= 0.0).count(), s.iter().filter(|&&v| v >= 0.0).count());
    let b = s.len();
    let p = if b == 0 { f64::NAN } else { (2.0 * (1 + le.min(ge)) as f64 / (b + 1) as f64).min(1.0) };
    Bootstrap { estimate, low: quantile_linear(&s, alpha), high: quantile_linear(&s, 1.0 - alpha), p, resamples: b }
}

/// The paired bootstrap of the mean of differences `d`: `resamples` resamples of the cases drawn
/// from `seed`, the percentile interval at `level`.
pub fn bootstrap_mean(d: &[f64], resamples: usize, seed: u64, level: f64) -> Bootstrap {
    let d: Vec<f64> = d.iter().copied().filter(|v| v.is_finite()).collect();
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (s, k) = v.fold((0.0, 0usize), |(s, k), x| (s + x, k + 1));
        if k == 0 { f64::NAN } else { s / k as f64 }
    };
    let estimate = mean(&mut d.iter().copied());
    let mut rng = Resampler::new(seed);
    let stats: Vec<f64> = (0..resamples).map(|_| mean(&mut rng.resample(d.len()).into_iter().map(|i| d[i]))).collect();
    percentile_interval(estimate, &stats, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300) || (a - b).abs() < 1e-15
    }

    fn diffs(x: &[f64], y: &[f64]) -> Vec<f64> {
        x.iter().zip(y).map(|(a, b)| a - b).collect()
    }

    /// scipy.stats.wilcoxon(x, y, zero_method='wilcox', correction=False), scipy 1.17.1.
    #[test]
    fn wilcoxon_matches_scipy() {
        // (a) n = 8, no ties, no zeros: 'auto' is exact
        let x = [0.82, 0.41, 0.93, 0.66, 0.78, 0.52, 0.88, 0.7];
        let y = [0.51, 0.53, 0.48, 0.58, 0.51, 0.57, 0.49, 0.53];
        let d = diffs(&x, &y);
        let w = wilcoxon(&d).unwrap();
        assert_eq!((w.w_plus, w.w_minus, w.method), (32.0, 4.0, WilcoxonMethod::Exact));
        assert!(close(w.p, 0.0546875, 1e-12), "{w:?}");
        assert!(close(w.z, 1.9603921176392136, 1e-12));
        let a = wilcoxon_method(&d, WilcoxonMethod::Normal).unwrap();
        assert!(close(a.p, 0.0499499764547464, 1e-12), "{a:?}");
        // (b) n = 12 with two zeros and ties: 'auto' is the permutation test (scipy >= 1.15)
        let x = [2.5, 1.75, 3.0, 2.0, 2.25, 3.5, 1.5, 2.75, 1.25, 3.25, 2.5, 1.875];
        let y = [2.0, 2.0, 2.25, 2.0, 1.75, 2.5, 2.0, 2.5, 1.25, 2.0, 1.75, 2.0];
        let d = diffs(&x, &y);
        let w = wilcoxon(&d).unwrap();
        assert_eq!((w.n, w.w_plus, w.w_minus, w.method), (10, 46.5, 8.5, WilcoxonMethod::Permutation));
        assert!(close(w.p, 0.05859375, 1e-12), "{w:?}");
        let a = wilcoxon_method(&d, WilcoxonMethod::Normal).unwrap();
        assert!(close(a.z, 1.944249138367273, 1e-12) && close(a.p, 0.05186541479146726, 1e-12), "{a:?}");
        let e = wilcoxon_method(&d, WilcoxonMethod::Exact).unwrap();
        assert!(close(e.p, 0.064453125, 1e-12), "{e:?}");
        // (c) n = 60: 'auto' is the normal approximation
        let x = [
            0.6789, 0.6482, 0.715, 0.521, 0.7284, 0.6678, 0.6274, 0.7099, 0.5049, 0.6842, 0.6269, 0.741, 0.7442,
            0.6072, 0.6067, 0.553, 0.6212, 0.7319, 0.7857, 0.7229, 0.7035, 0.6133, 0.7196, 0.6184, 0.724, 0.6797,
            0.7856, 0.7202, 0.8369, 0.6592, 0.7756, 0.7225, 0.8697, 0.5038, 0.7874, 0.5976, 0.6131, 0.6982, 0.5489,
            0.5805, 0.6494, 0.6678, 0.5096, 0.6126, 0.6854, 0.6868, 0.6338, 0.6996, 0.6487, 0.8173, 0.6191, 0.7059,
            0.651, 0.7855, 0.6028, 0.7877, 0.5805, 0.5633, 0.6452, 0.7092,
        ];
        let y = [
            0.6228, 0.643, 0.7348, 0.5392, 0.7922, 0.727, 0.664, 0.7756, 0.5719, 0.6487, 0.7562, 0.7586, 0.7339,
            0.6572, 0.6023, 0.6044, 0.5811, 0.7882, 0.7425, 0.7617, 0.7128, 0.6082, 0.7473, 0.6096, 0.7054, 0.7194,
            0.9022, 0.6903, 0.9147, 0.7333, 0.7396, 0.752, 0.9159, 0.4783, 0.8614, 0.6615, 0.718, 0.7377, 0.6162,
            0.6911, 0.6795, 0.6628, 0.4571, 0.6469, 0.642, 0.7617, 0.6612, 0.7602, 0.6768, 0.8992, 0.6163, 0.7284,
            0.741, 0.7426, 0.6324, 0.8565, 0.5473, 0.5483, 0.6027, 0.7882,
        ];
        let w = wilcoxon(&diffs(&x, &y)).unwrap();
        assert_eq!((w.w_plus, w.w_minus, w.method), (404.0, 1426.0, WilcoxonMethod::Normal));
        assert!(close(w.z, -3.7617791338311464, 1e-12) && close(w.p, 0.00016870899841559241, 1e-11), "{w:?}");
        let e = wilcoxon_method(&diffs(&x, &y), WilcoxonMethod::Exact).unwrap();
        assert!(close(e.p, 0.0001051577376059553, 1e-10), "{e:?}");
        assert!(wilcoxon(&[0.0, 0.0]).is_none());
    }

    /// Fast DeLong against an independent implementation (exact rationals, MLstatkit).
    #[test]
    fn delong_matches_the_reference() {
        let labels = [1, 0, 1, 0, 0, 1, 0, 1, 0, 0].map(|l| l == 1);
        let s1 = [0.9, 0.8, 0.7, 0.7, 0.3, 0.6, 0.4, 0.55, 0.2, 0.5];
        let s2 = [0.85, 0.6, 0.65, 0.75, 0.2, 0.45, 0.5, 0.9, 0.3, 0.45];
        let d = delong(&labels, &s1, &s2).unwrap();
        assert!(close(d.auc1, 37.0 / 48.0, 1e-14) && close(d.auc2, 13.0 / 16.0, 1e-14), "{d:?}");
        assert!(close(d.var1, 95.0 / 3456.0, 1e-12) && close(d.var2, 431.0 / 17280.0, 1e-12), "{d:?}");
        assert!(close(d.cov, 29.0 / 2160.0, 1e-12), "{d:?}");
        assert!(close(d.z, -0.26052505285945354, 1e-12) && close(d.p, 0.7944587929467527, 1e-12), "{d:?}");
        let labels = [
            1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 1,
            0, 0, 0, 1,
        ]
        .map(|l| l == 1);
        let s1 = [
            0.211, 0.66, 0.488, 0.528, 0.178, 0.673, 0.555, 0.308, 0.743, 0.597, 0.763, 0.708, 0.358, 0.472, 0.788,
            0.516, 0.227, 0.519, 0.928, 0.175, 0.703, 0.53, 0.345, 0.881, 0.877, 0.5, 0.782, 0.64, 0.733, 0.664, 0.756,
            0.661, 0.808, 0.337, 0.803, 0.676, 0.532, 0.234, 0.359, 0.732,
        ];
        let s2 = [
            0.37, 0.736, 0.277, 0.383, 0.35, 0.244, 0.399, 0.347, 0.835, 0.627, 0.586, 0.589, 0.358, 0.729, 0.593,
            0.458, 0.352, 0.492, 0.804, 0.134, 0.644, 0.444, 0.591, 0.865, 0.753, 0.557, 0.602, 0.758, 0.614, 0.708,
            0.413, 0.67, 0.456, 0.13, 0.629, 0.412, 0.551, 0.677, 0.271, 0.506,
        ];
        let d = delong(&labels, &s1, &s2).unwrap();
        assert!(close(d.auc1, 299.0 / 384.0, 1e-14) && close(d.auc2, 37.0 / 64.0, 1e-14), "{d:?}");
        assert!(close(d.var1, 52307.0 / 8478720.0, 1e-12) && close(d.cov, 8557.0 / 2543616.0, 1e-12), "{d:?}");
        assert!(close(d.z, 2.241408011036889, 1e-12) && close(d.p, 0.024999658075214495, 1e-11), "{d:?}");
        // identical scores: no difference, no variance
        let same = delong(&labels, &s1, &s1).unwrap();
        assert_eq!((same.z, same.p), (0.0, 1.0));
    }

    /// NumPy's default percentile on the worked example of five resamples (scipy.stats.bootstrap
    /// reports the same interval to the last ulp).
    #[test]
    fn percentile_interval_is_numpys() {
        let d = [0.1, -0.05, 0.2, 0.0, 0.15];
        let sets = [[0, 0, 2, 3, 4], [1, 3, 3, 0, 2], [4, 4, 1, 0, 2], [2, 2, 4, 0, 1], [3, 1, 1, 4, 0]];
        let stats: Vec<f64> = sets.iter().map(|s| s.iter().map(|&i| d[i]).sum::<f64>() / 5.0).collect();
        let b = percentile_interval(0.08, &stats, 0.95);
        assert!(close(b.low, 0.032, 1e-12) && close(b.high, 0.119, 1e-12), "{b:?}");
        // all five resamples above 0: p = 2 (1 + 0) / 6
        assert!(close(b.p, 2.0 / 6.0, 1e-15), "{b:?}");
        // seeded: the same seed, the same interval; the interval holds the estimate
        let d: Vec<f64> = (0..40).map(|i| ((i * 37 % 11) as f64 - 4.0) / 100.0).collect();
        let a = bootstrap_mean(&d, 2000, 9, 0.95);
        assert_eq!(a, bootstrap_mean(&d, 2000, 9, 0.95));
        assert!(a.low <= a.estimate && a.estimate <= a.high && a.resamples == 2000, "{a:?}");
    }
}
