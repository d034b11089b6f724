//! Generated phantom images for runs that must work without any data: a bright elliptical "body"
//! on a smooth background, with bright "organ" ellipses (class 1) and dark "lesions" (class 2)
//! inside, plus noise. Deterministic for a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of classes of a phantom label map (background, organ, lesion).
pub const PHANTOM_CLASSES: usize = 3;

/// One grey image in `[0, 1]` and its label map, both `side x side`, row-major.
#[derive(Clone, Debug)]
pub struct Phantom {
    /// Pixel values.
    pub image: Vec<f32>,
    /// Class per pixel.
    pub labels: Vec<u8>,
}

struct Ellipse {
    cy: f32,
    cx: f32,
    ry: f32,
    rx: f32,
    angle: f32,
}

impl Ellipse {
    fn random(rng: &mut ChaCha8Rng, cy: f32, cx: f32, r: (f32, f32)) -> Self {
        Ellipse {
            cy,
            cx,
            ry: rng.random_range(r.0..r.1),
            rx: rng.random_range(r.0..r.1),
            angle: rng.random_range(0.0..std::f32::consts::PI),
        }
    }

    fn contains(&self, y: f32, x: f32) -> bool {
        let (s, c) = self.angle.sin_cos();
        let (dy, dx) = (y - self.cy, x - self.cx);
        let u = (dx * c + dy * s) / self.rx;
        let v = (-dx * s + dy * c) / self.ry;
        u * u + v * v <= 1.0
    }
}

/// Generates phantom number `index` of the stream `seed`, `side` pixels square.
pub fn phantom(seed: u64, index: u64, side: usize) -> Phantom {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (by, bx) = (rng_f(&mut rng, 0.45, 0.55), rng_f(&mut rng, 0.45, 0.55));
    let body = Ellipse::random(&mut rng, by, bx, (0.32, 0.44));
    let organs: Vec<Ellipse> = (0..rng.random_range(1..=3))
        .map(|_| {
            let (cy, cx) = (rng_f(&mut rng, 0.3, 0.7), rng_f(&mut rng, 0.3, 0.7));
            Ellipse::random(&mut rng, cy, cx, (0.06, 0.14))
        })
        .collect();
    let lesions: Vec<Ellipse> = (0..rng.random_range(0..=2))
        .map(|_| {
            let (cy, cx) = (rng_f(&mut rng, 0.3, 0.7), rng_f(&mut rng, 0.3, 0.7));
            Ellipse::random(&mut rng, cy, cx, (0.03, 0.06))
        })
        .collect();
    let (organ_v, body_v, lesion_v) =
        (rng_f(&mut rng, 0.75, 0.95), rng_f(&mut rng, 0.35, 0.5), rng_f(&mut rng, 0.05, 0.15));
    let (gy, gx) = (rng_f(&mut rng, -0.1, 0.1), rng_f(&mut rng, -0.1, 0.1));
    let mut image = vec![0f32; side * side];
    let mut labels = vec![0u8; side * side];
    for r in 0..side {
        for c in 0..side {
            let (y, x) = ((r as f32 + 0.5) / side as f32, (c as f32 + 0.5) / side as f32);
            let mut v = 0.1 + gy * y + gx * x;
            let mut label = 0;
            if body.contains(y, x) {
                v = body_v;
                if organs.iter().any(|e| e.contains(y, x)) {
                    v = organ_v;
                    label = 1;
                }
                if lesions.iter().any(|e| e.contains(y, x)) {
                    v = lesion_v;
                    label = 2;
                }
            }
            v += rng_f(&mut rng, -0.05, 0.05);
            image[r * side + c] = v.clamp(0.0, 1.0);
            labels[r * side + c] = label;
        }
    }
    Phantom { image, labels }
}

fn rng_f(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    rng.random_range(lo..hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_labelled() {
        let a = phantom(1, 5, 64);
        let b = phantom(1, 5, 64);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.image, b.image);
        assert_ne!(phantom(1, 6, 64).labels, a.labels);
        assert!(a.labels.contains(&1));
        assert!(a.image.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
