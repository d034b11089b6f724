//! Window masking planned on the host (SPEC §2.2, `swin_mae.py::window_masking`): one noise value
//! per `r x r`-token unit, the units with the smallest noise are kept, every other token is masked.
//! Planning here, not on the device, makes masks seedable and testable.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ModelError;

/// A batch of window masks on a `grid_h x grid_w` token grid.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskPlan {
    /// Images in the batch.
    pub batch: usize,
    /// Token rows.
    pub grid_h: usize,
    /// Token columns.
    pub grid_w: usize,
    /// `batch * grid_h * grid_w` values, row-major per image, 1.0 = masked, 0.0 = visible.
    pub mask: Vec<f32>,
    /// Units kept visible per image.
    pub units_kept: usize,
}

/// Geometry of the unit grid that a mask plan needs.
#[derive(Clone, Copy, Debug)]
pub struct MaskGeometry {
    /// Token rows (56 for a 224 input with patch 4).
    pub grid_h: usize,
    /// Token columns.
    pub grid_w: usize,
    /// Side of a unit in tokens (4).
    pub unit: usize,
    /// Fraction of units masked (0.75).
    pub ratio: f64,
}

impl MaskGeometry {
    /// Unit rows and columns.
    pub fn units(&self) -> (usize, usize) {
        (self.grid_h / self.unit, self.grid_w / self.unit)
    }

    /// Units per image.
    pub fn num_units(&self) -> usize {
        let (a, b) = self.units();
        a * b
    }

    /// Units kept visible per image: `int(units * (1 - ratio))`, as Python truncates it.
    pub fn units_kept(&self) -> usize {
        (self.num_units() as f64 * (1.0 - self.ratio)) as usize
    }

    /// Checks that the token grid splits into whole units.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.unit == 0 || !self.grid_h.is_multiple_of(self.unit) || !self.grid_w.is_multiple_of(self.unit) {
            return Err(ModelError::Mask(format!(
                "token grid {}x{} is not a whole number of {}x{}-token mask units; use an input side that is a multiple of {}",
                self.grid_h,
                self.grid_w,
                self.unit,
                self.unit,
                self.unit * 4
            )));
        }
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(ModelError::Mask(format!("mask ratio {} must be in [0, 1)", self.ratio)));
        }
        Ok(())
    }
}

/// Uniform `[0, 1)` noise, one value per unit, from a seeded ChaCha8 stream.
pub fn noise_from_seed(seed: u64, batch: usize, units: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..batch * units).map(|_| rng.random::<f32>()).collect()
}

/// Builds the mask from per-unit noise (`batch * units` values), exactly as the reference does:
/// `keep = argsort(noise)[:, :units_kept]`, and every token of a kept unit is visible.
pub fn plan_from_noise(geom: MaskGeometry, batch: usize, noise: &[f32]) -> Result<MaskPlan, ModelError> {
    geom.validate()?;
    let units = geom.num_units();
    if noise.len() != batch * units {
        return Err(ModelError::Mask(format!(
            "noise has {} values, expected {batch} images x {units} units",
            noise.len()
        )));
    }
    let (_, units_w) = geom.units();
    let keep = geom.units_kept();
    let tokens = geom.grid_h * geom.grid_w;
    let mut mask = vec![1.0f32; batch * tokens];
    for b in 0..batch {
        let row = &noise[b * units..(b + 1) * units];
        let mut order: Vec<usize> = (0..units).collect();
        order.sort_by(|&i, &j| row[i].total_cmp(&row[j]));
        let out = &mut mask[b * tokens..(b + 1) * tokens];
        for &u in &order[..keep] {
            let (uy, ux) = (u / units_w, u % units_w);
            for i in 0..geom.unit {
                for j in 0..geom.unit {
                    out[(uy * geom.unit + i) * geom.grid_w + ux * geom.unit + j] = 0.0;
                }
            }
        }
    }
    Ok(MaskPlan { batch, grid_h: geom.grid_h, grid_w: geom.grid_w, mask, units_kept: keep })
}

/// Plans a mask from a seed.
pub fn plan_from_seed(geom: MaskGeometry, batch: usize, seed: u64) -> Result<MaskPlan, ModelError> {
    let noise = noise_from_seed(seed, batch, geom.num_units());
    plan_from_noise(geom, batch, &noise)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom() -> MaskGeometry {
        MaskGeometry { grid_h: 56, grid_w: 56, unit: 4, ratio: 0.75 }
    }

    #[test]
    fn keeps_49_of_196_units_at_075() {
        let g = geom();
        assert_eq!(g.num_units(), 196);
        assert_eq!(g.units_kept(), 49);
        let plan = plan_from_seed(g, 3, 7).unwrap();
        for b in 0..3 {
            let visible = plan.mask[b * 3136..(b + 1) * 3136].iter().filter(|&&m| m == 0.0).count();
            assert_eq!(visible, 49 * 16);
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        let a = plan_from_seed(geom(), 2, 42).unwrap();
        let b = plan_from_seed(geom(), 2, 42).unwrap();
        let c = plan_from_seed(geom(), 2, 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.mask, c.mask);
    }

    #[test]
    fn unit_15_maps_to_tokens_from_228() {
        // noise smallest at unit 15, ratio such that only one unit is kept
        let g = MaskGeometry { ratio: 1.0 - 1.5 / 196.0, ..geom() };
        assert_eq!(g.units_kept(), 1);
        let mut noise = vec![0.5f32; 196];
        noise[15] = 0.1;
        let plan = plan_from_noise(g, 1, &noise).unwrap();
        let visible: Vec<usize> = (0..3136).filter(|&t| plan.mask[t] == 0.0).collect();
        let expect: Vec<usize> = (0..4).flat_map(|i| (0..4).map(move |j| 228 + 56 * i + j)).collect();
        assert_eq!(visible, expect);
    }

    #[test]
    fn rejects_bad_geometry_and_noise() {
        let g = MaskGeometry { grid_h: 54, ..geom() };
        assert!(plan_from_seed(g, 1, 0).is_err());
        assert!(plan_from_noise(geom(), 2, &[0.0; 10]).is_err());
    }
}
