//! Classification metrics with scikit-learn's semantics:
//! - ROC AUC: area under the ROC curve, ties between scores counting half (equal to sklearn's
//!   trapezoidal `roc_auc_score`); NaN when only one class is present.
//! - Average precision: `sum_n (R_n - R_{n-1}) P_n` over distinct thresholds, as sklearn's
//!   `average_precision_score` (0 when there is no positive, as sklearn returns with a warning).
//! - PR AUC (trapezoid): sklearn's `auc(recall, precision)` over `precision_recall_curve`, whose
//!   curve stops at full recall and starts at (recall 0, precision 1). Reported under its own name.
//!
//! Multi-class and multi-label use one-vs-rest per class; macro averages the finite per-class values,
//! weighted weighs them by positives, micro pools every (label, score) pair.

/// Points of the precision-recall curve at distinct thresholds, highest first, up to full recall:
/// `(recall, precision)`.
fn pr_points(labels: &[bool], scores: &[f64]) -> Vec<(f64, f64)> {
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        let recall = if positives > 0.0 { tp / positives } else { 1.0 };
        points.push((recall, tp / (tp + fp)));
        if tp == positives && positives > 0.0 {
            break;
        }
    }
    points
}

/// ROC AUC of scores for a binary label; NaN when only one class is present.
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> f64 {
    assert_eq!(labels.len(), scores.len());
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    // Mann-Whitney U with average ranks for ties
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_pos += avg_rank * order[i..j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j;
    }
    let (p, n) = (pos as f64, neg as f64);
    (rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n)
}

/// Average precision (sklearn's step-wise PR AUC).
pub fn average_precision(labels: &[bool], scores: &[f64]) -> f64 {
    assert_eq!(labels.len(), scores.len());
    if !labels.iter().any(|&l| l) {
        return 0.0;
    }
    let mut prev = 0.0;
    let mut ap = 0.0;
    for (r, p) in pr_points(labels, scores) {
        ap += (r - prev) * p;
        prev = r;
    }
    ap
}

/// Trapezoidal area under the precision-recall curve (sklearn `auc(recall, precision)`).
pub fn pr_auc_trapezoid(labels: &[bool], scores: &[f64]) -> f64 {
    assert_eq!(labels.len(), scores.len());
    if !labels.iter().any(|&l| l) {
        return f64::NAN;
    }
    let mut area = 0.0;
    let (mut x0, mut y0) = (0.0, 1.0);
    for (x, y) in pr_points(labels, scores) {
        area += (x - x0) * (y + y0) / 2.0;
        (x0, y0) = (x, y);
    }
    area
}

/// A metric per class with its macro, weighted and micro averages.
#[derive(Clone, Debug, PartialEq)]
pub struct Averaged {
    /// One value per class (binary: only the positive class, index 1).
    pub per_class: Vec<f64>,
    /// Mean of the finite per-class values.
    pub macro_avg: f64,
    /// Mean weighted by each class's positives (finite values only).
    pub weighted: f64,
    /// The metric over every (label, score) pair pooled.
    pub micro: f64,
}

/// Which metric to average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// [`roc_auc`]
    RocAuc,
    /// [`average_precision`]
    AveragePrecision,
    /// [`pr_auc_trapezoid`]
    PrAucTrapezoid,
}

impl Metric {
    fn apply(self, labels: &[bool], scores: &[f64]) -> f64 {
        match self {
            Metric::RocAuc => roc_auc(labels, scores),
            Metric::AveragePrecision => average_precision(labels, scores),
            Metric::PrAucTrapezoid => pr_auc_trapezoid(labels, scores),
        }
    }
}

/// One-vs-rest evaluation: `targets[i][c]` says whether sample `i` has class `c`, `scores[i][c]` is
/// its probability. With two classes and single labels, only class 1 is reported (sklearn's binary case).
pub fn one_vs_rest(metric: Metric, targets: &[Vec<bool>], scores: &[Vec<f64>], binary: bool) -> Averaged {
    let classes = scores.first().map_or(0, Vec::len);
    let reported: Vec<usize> = if binary && classes == 2 { vec![1] } else { (0..classes).collect() };
    let column = |c: usize| -> (Vec<bool>, Vec<f64>) {
        (targets.iter().map(|t| t[c]).collect(), scores.iter().map(|s| s[c]).collect())
    };
    let mut per_class = Vec::new();
    let (mut wsum, mut wtot, mut msum, mut mcount) = (0.0, 0.0, 0.0, 0usize);
    for &c in &reported {
        let (l, s) = column(c);
        let v = metric.apply(&l, &s);
        per_class.push(v);
        if v.is_finite() {
            let w = l.iter().filter(|&&x| x).count() as f64;
            wsum += w * v;
            wtot += w;
            msum += v;
            mcount += 1;
        }
    }
    let (mut all_l, mut all_s) = (Vec::new(), Vec::new());
    for &c in &reported {
        let (l, s) = column(c);
        all_l.extend(l);
        all_s.extend(s);
    }
    Averaged {
        macro_avg: if mcount > 0 { msum / mcount as f64 } else { f64::NAN },
        weighted: if wtot > 0.0 { wsum / wtot } else { f64::NAN },
        micro: metric.apply(&all_l, &all_s),
        per_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12
    }

    fn bools(v: &[u8]) -> Vec<bool> {
        v.iter().map(|&x| x == 1).collect()
    }

    #[test]
    fn binary_cases_match_sklearn() {
        // (labels, scores, roc_auc_score, average_precision_score, auc(recall, precision)) from sklearn
        type Case = (&'static [u8], &'static [f64], f64, f64, f64);
        let table: [Case; 5] = [
            (
                &[0, 0, 1, 1, 0, 1, 1, 0],
                &[0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9, 0.2],
                0.8125,
                0.8166666666666667,
                0.8583333333333334,
            ),
            (&[0, 0, 1, 1], &[0.1, 0.2, 0.8, 0.9], 1.0, 1.0, 1.0),
            (&[1, 1, 0, 0], &[0.1, 0.2, 0.8, 0.9], 0.0, 0.41666666666666663, 0.29166666666666663),
            (&[0, 1, 0, 1, 1], &[0.5, 0.5, 0.5, 0.5, 0.5], 0.5, 0.6, 0.8),
            (
                &[0, 0, 0, 0, 0, 0, 1, 0, 1, 0],
                &[0.3, 0.2, 0.9, 0.1, 0.5, 0.55, 0.6, 0.05, 0.95, 0.4],
                0.9375,
                0.8333333333333333,
                0.7916666666666666,
            ),
        ];
        for (l, s, auc, ap, trap) in table {
            let l = bools(l);
            assert!(close(roc_auc(&l, s), auc), "auc {l:?}");
            assert!(close(average_precision(&l, s), ap), "ap {l:?}: {}", average_precision(&l, s));
            assert!(close(pr_auc_trapezoid(&l, s), trap), "trapezoid {l:?}: {}", pr_auc_trapezoid(&l, s));
        }
        assert!(roc_auc(&bools(&[1, 1]), &[0.2, 0.3]).is_nan());
        assert_eq!(average_precision(&bools(&[0, 0, 0]), &[0.1, 0.5, 0.9]), 0.0);
    }

    #[test]
    fn multiclass_one_vs_rest_matches_sklearn() {
        let y = [0usize, 1, 2, 2, 1, 0, 2, 1, 0, 2];
        let p: Vec<Vec<f64>> = [
            [0.5, 0.3, 0.2],
            [0.4, 0.4, 0.2],
            [0.3, 0.3, 0.4],
            [0.2, 0.5, 0.3],
            [0.3, 0.4, 0.3],
            [0.2, 0.3, 0.5],
            [0.3, 0.3, 0.4],
            [0.5, 0.3, 0.2],
            [0.6, 0.2, 0.2],
            [0.1, 0.2, 0.7],
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        let t: Vec<Vec<bool>> = y.iter().map(|&c| (0..3).map(|k| k == c).collect()).collect();
        let auc = one_vs_rest(Metric::RocAuc, &t, &p, false);
        for (a, b) in auc.per_class.iter().zip([0.7142857142857142, 0.7619047619047619, 0.8541666666666667]) {
            assert!(close(*a, b), "{auc:?}");
        }
        assert!(
            close(auc.macro_avg, 0.7767857142857143)
                && close(auc.weighted, 0.7845238095238095)
                && close(auc.micro, 0.765),
            "{auc:?}"
        );
        let ap = one_vs_rest(Metric::AveragePrecision, &t, &p, false);
        for (a, b) in ap.per_class.iter().zip([0.6666666666666666, 0.5694444444444444, 0.7916666666666666]) {
            assert!(close(*a, b), "{ap:?}");
        }
        assert!(
            close(ap.macro_avg, 0.6759259259259259)
                && close(ap.weighted, 0.6875)
                && close(ap.micro, 0.6247424988804299),
            "{ap:?}"
        );
        let trap = one_vs_rest(Metric::PrAucTrapezoid, &t, &p, false);
        for (a, b) in trap.per_class.iter().zip([0.7142857142857142, 0.3958333333333333, 0.7395833333333333]) {
            assert!(close(*a, b), "{trap:?}");
        }
    }

    #[test]
    fn binary_reports_class_one_and_nan_is_left_out_of_macro() {
        let t = vec![vec![true, false], vec![false, true], vec![false, true]];
        let s = vec![vec![0.8, 0.2], vec![0.3, 0.7], vec![0.6, 0.4]];
        let auc = one_vs_rest(Metric::RocAuc, &t, &s, true);
        assert_eq!(auc.per_class.len(), 1);
        assert!(close(auc.per_class[0], 1.0));
        // a class with no positive gives NaN and is left out of macro
        let t = vec![vec![true, false, false], vec![false, true, false]];
        let s = vec![vec![0.8, 0.1, 0.1], vec![0.3, 0.6, 0.1]];
        let auc = one_vs_rest(Metric::RocAuc, &t, &s, false);
        assert!(auc.per_class[2].is_nan() && close(auc.macro_avg, 1.0));
    }
}
