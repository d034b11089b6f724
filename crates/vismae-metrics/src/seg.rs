//! Per-class segmentation scores of one case: Dice `2TP / (2TP + FP + FN)`, precision
//! `TP / (TP + FP)`, recall `TP / (TP + FN)`. A class absent from the ground truth gets NaN Dice
//! and recall (MONAI `DiceMetric(ignore_empty=True)`, nnU-Net), a zero denominator gives NaN, and
//! means leave NaNs out. Background (class 0) is excluded by callers that ask for foreground only.

/// True positives, false positives and false negatives of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Predicted and true.
    pub tp: u64,
    /// Predicted, not true.
    pub fp: u64,
    /// True, not predicted.
    pub fn_: u64,
}

/// Counts per class `0..num_classes` of a predicted and a true label map of the same length.
/// Labels outside `0..num_classes` count for no class.
pub fn confusion(pred: &[u8], truth: &[u8], num_classes: usize) -> Vec<Confusion> {
    assert_eq!(pred.len(), truth.len(), "label maps differ in size");
    let mut out = vec![Confusion::default(); num_classes];
    for (&p, &t) in pred.iter().zip(truth) {
        let (p, t) = (p as usize, t as usize);
        if p == t {
            if let Some(c) = out.get_mut(p) {
                c.tp += 1;
            }
        } else {
            if let Some(c) = out.get_mut(p) {
                c.fp += 1;
            }
            if let Some(c) = out.get_mut(t) {
                c.fn_ += 1;
            }
        }
    }
    out
}

/// Dice, precision and recall of one class in one case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassScores {
    /// `2TP / (2TP + FP + FN)`; NaN when the class is absent from the ground truth.
    pub dice: f64,
    /// `TP / (TP + FP)`; NaN when nothing was predicted.
    pub precision: f64,
    /// `TP / (TP + FN)`; NaN when the class is absent from the ground truth.
    pub recall: f64,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 { f64::NAN } else { num as f64 / den as f64 }
}

impl From<Confusion> for ClassScores {
    fn from(c: Confusion) -> Self {
        let present = c.tp + c.fn_ > 0;
        ClassScores {
            dice: if present { ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn_) } else { f64::NAN },
            precision: ratio(c.tp, c.tp + c.fp),
            recall: ratio(c.tp, c.tp + c.fn_),
        }
    }
}

/// Scores for every class `0..num_classes` of one case.
pub fn seg_scores(pred: &[u8], truth: &[u8], num_classes: usize) -> Vec<ClassScores> {
    confusion(pred, truth, num_classes).into_iter().map(ClassScores::from).collect()
}

/// Mean of the finite values; NaN when there are none.
pub fn nan_mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values.into_iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Accumulates per-case scores and averages them per class, leaving NaNs out.
#[derive(Clone, Debug, Default)]
pub struct SegAccumulator {
    cases: Vec<Vec<ClassScores>>,
}

impl SegAccumulator {
    /// Adds one case.
    pub fn update(&mut self, pred: &[u8], truth: &[u8], num_classes: usize) {
        self.cases.push(seg_scores(pred, truth, num_classes));
    }

    /// Per-case scores so far.
    pub fn cases(&self) -> &[Vec<ClassScores>] {
        &self.cases
    }

    /// Per-class means over cases (NaNs left out).
    pub fn aggregate(&self) -> Vec<ClassScores> {
        let n = self.cases.first().map_or(0, Vec::len);
        (0..n)
            .map(|c| ClassScores {
                dice: nan_mean(self.cases.iter().map(|s| s[c].dice)),
                precision: nan_mean(self.cases.iter().map(|s| s[c].precision)),
                recall: nan_mean(self.cases.iter().map(|s| s[c].recall)),
            })
            .collect()
    }

    /// Mean Dice over foreground classes (1..) of the per-class means.
    pub fn foreground_dice(&self) -> f64 {
        nan_mean(self.aggregate().iter().skip(1).map(|s| s.dice))
    }

    /// Forgets every case.
    pub fn reset(&mut self) {
        self.cases.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12
    }

    #[test]
    fn literal_cases() {
        // (pred, truth, class 1 dice, precision, recall)
        let nan = f64::NAN;
        type Case<'a> = (&'a [u8], &'a [u8], f64, f64, f64);
        let table: [Case; 5] = [
            (&[1, 1, 0, 0], &[1, 0, 1, 0], 0.5, 0.5, 0.5),
            (&[1, 1, 1, 0], &[1, 1, 1, 0], 1.0, 1.0, 1.0),
            (&[0, 0, 0, 0], &[1, 0, 0, 0], 0.0, nan, 0.0),
            (&[0, 0, 0, 0], &[0, 0, 0, 0], nan, nan, nan),
            (&[1, 0, 0, 0], &[0, 0, 0, 0], nan, 0.0, nan),
        ];
        for (pred, truth, d, p, r) in table {
            let s = seg_scores(pred, truth, 2)[1];
            assert!(close(s.dice, d) && close(s.precision, p) && close(s.recall, r), "{pred:?} {truth:?}: {s:?}");
        }
    }

    #[test]
    fn means_leave_nan_out() {
        let mut acc = SegAccumulator::default();
        acc.update(&[1, 1, 0, 0], &[1, 0, 1, 0], 3);
        acc.update(&[0, 0, 0, 0], &[0, 0, 0, 0], 3);
        acc.update(&[1, 1, 2, 0], &[1, 1, 2, 2], 3);
        let agg = acc.aggregate();
        assert!(close(agg[1].dice, 0.75));
        assert!(close(agg[2].dice, 2.0 / 3.0));
        assert!(close(acc.foreground_dice(), (0.75 + 2.0 / 3.0) / 2.0));
        assert!(nan_mean([f64::NAN]).is_nan());
    }
}
