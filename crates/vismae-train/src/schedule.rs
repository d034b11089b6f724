//! Learning rate per iteration (SPEC §6.1, MAE `lr_sched.py`): linear warm-up, then a half-cycle
//! cosine down to `min_lr`. Positions are fractional epochs or steps; the unit is the caller's.

/// Warm-up + half-cycle cosine schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Length of the linear warm-up.
    pub warmup: f64,
    /// Total length.
    pub total: f64,
}

impl WarmupCosine {
    /// Learning rate at position `t`.
    pub fn at(&self, t: f64) -> f64 {
        if t < self.warmup {
            self.lr * t / self.warmup
        } else {
            let span = (self.total - self.warmup).max(f64::MIN_POSITIVE);
            let progress = ((t - self.warmup) / span).clamp(0.0, 1.0);
            self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = WarmupCosine { lr: 1e-3, min_lr: 0.0, warmup: 10.0, total: 110.0 };
        assert_eq!(s.at(0.0), 0.0);
        assert!((s.at(5.0) - 5e-4).abs() < 1e-12);
        assert!((s.at(10.0) - 1e-3).abs() < 1e-12);
        assert!((s.at(60.0) - 5e-4).abs() < 1e-12);
        assert!(s.at(110.0).abs() < 1e-12);
    }
}
