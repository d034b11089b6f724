//! Training-time augmentation of square 2-D images (and their masks), drawn as the official code
//! draws it (SPEC §7). Segmentation (`JointTransform`): with p = 0.5 a quarter-turn rotation by
//! k ∈ {0..3} and a flip along a random axis, else with p = 0.5 a rotation by an integer angle in
//! [−20, 19]°; then, independently with p = 0.5, a random affine (rotation U(−20, 20)°, translation
//! up to 10 % of the side rounded to pixels, scale U(0.9, 1.1), shear U(−10, 10)° along x). All
//! resampling is nearest neighbour about the image centre with fill 0, for image and mask alike.
//! Classification: horizontal flip (p = 0.5), rotation U(−20, 20)°, affine with translation up to
//! 10 % and shear U(−0.1, 0.1)°, resize to ⌊1.1·S⌋ and a random S×S crop.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use vismae_data::raster::Raster;

pub use vismae_run::Augment;

/// `v` (`n x n`) turned by `k` quarter turns, then flipped along `flip` (0: rows, 1: columns).
pub fn rot90_flip<T: Copy>(v: &[T], n: usize, k: usize, flip: Option<usize>) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for y in 0..n {
        for x in 0..n {
            let (y, x) = match flip {
                Some(0) => (n - 1 - y, x),
                Some(_) => (y, n - 1 - x),
                None => (y, x),
            };
            let (sy, sx) = match k % 4 {
                0 => (y, x),
                1 => (x, n - 1 - y),
                2 => (n - 1 - y, n - 1 - x),
                _ => (n - 1 - x, y),
            };
            out.push(v[sy * n + sx]);
        }
    }
    out
}

/// A forward 2-D affine map about the image centre: `p_out = c + A (p_in - c) + t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// Row-major 2x2 matrix.
    pub a: [f64; 4],
    /// Translation in pixels (x, y).
    pub t: [f64; 2],
}

impl Affine {
    /// Rotation by `deg` degrees, translation `t`, isotropic `scale` and a shear of `shear` degrees
    /// along x, composed as torchvision's `affine` composes them (rotation · shear · scale).
    pub fn new(deg: f64, t: [f64; 2], scale: f64, shear: f64) -> Self {
        let (s, c) = deg.to_radians().sin_cos();
        let k = shear.to_radians().tan();
        // R · [[1, -k], [0, 1]] · scale
        Self { a: [c * scale, (-c * k - s) * scale, s * scale, (-s * k + c) * scale], t }
    }

    /// Resamples `v` (`n x n`) with nearest neighbour; points from outside get `fill`.
    pub fn warp<T: Copy>(&self, v: &[T], n: usize, fill: T) -> Vec<T> {
        let [a, b, c, d] = self.a;
        let det = a * d - b * c;
        let (ia, ib, ic, id) = (d / det, -b / det, -c / det, a / det);
        let centre = (n as f64 - 1.0) / 2.0;
        let mut out = Vec::with_capacity(n * n);
        for y in 0..n {
            for x in 0..n {
                let (px, py) = (x as f64 - centre - self.t[0], y as f64 - centre - self.t[1]);
                let sx = (ia * px + ib * py + centre).round();
                let sy = (ic * px + id * py + centre).round();
                let inside = sx >= 0.0 && sy >= 0.0 && sx < n as f64 && sy < n as f64;
                out.push(if inside { v[sy as usize * n + sx as usize] } else { fill });
            }
        }
        out
    }
}

/// `f` applied to each `n x n` plane of `v`, the results concatenated.
fn per_plane(v: &[f32], n: usize, f: impl Fn(&[f32]) -> Vec<f32>) -> Vec<f32> {
    v.chunks(n * n).flat_map(f).collect()
}

/// Draws and applies the official segmentation augmentation to an image and its mask (`n x n`).
pub fn segmentation(image: &[f32], mask: &[u8], n: usize, how: Augment, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<u8>) {
    segmentation_planes(image, mask, n, how, rng)
}

/// [`segmentation`] for an image of several planar `n x n` planes: one draw, applied to every
/// plane and to the mask.
pub fn segmentation_planes(
    image: &[f32],
    mask: &[u8],
    n: usize,
    how: Augment,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<u8>) {
    let (mut image, mut mask) = (image.to_vec(), mask.to_vec());
    match how {
        Augment::None => {}
        Augment::Flip => {
            if rng.random::<bool>() {
                let (k, axis) = (rng.random_range(0..4usize), rng.random_range(0..2usize));
                image = per_plane(&image, n, |p| rot90_flip(p, n, k, Some(axis)));
                mask = rot90_flip(&mask, n, k, Some(axis));
            }
        }
        Augment::Reference => {
            if rng.random::<f64>() < 0.5 {
                let (k, axis) = (rng.random_range(0..4usize), rng.random_range(0..2usize));
                image = per_plane(&image, n, |p| rot90_flip(p, n, k, Some(axis)));
                mask = rot90_flip(&mask, n, k, Some(axis));
            } else if rng.random::<f64>() < 0.5 {
                let r = Affine::new(rng.random_range(-20..20i32) as f64, [0.0, 0.0], 1.0, 0.0);
                image = per_plane(&image, n, |p| r.warp(p, n, 0.0));
                mask = r.warp(&mask, n, 0);
            }
            if rng.random::<f64>() < 0.5 {
                let max_t = 0.1 * n as f64;
                let deg = rng.random_range(-20.0..20.0);
                let t = [rng.random_range(-max_t..max_t).round(), rng.random_range(-max_t..max_t).round()];
                let a = Affine::new(deg, t, rng.random_range(0.9..1.1), rng.random_range(-10.0..10.0));
                image = per_plane(&image, n, |p| a.warp(p, n, 0.0));
                mask = a.warp(&mask, n, 0);
            }
        }
    }
    (image, mask)
}

/// Draws and applies the official classification augmentation to an image (`n x n`).
pub fn classification(image: &[f32], n: usize, how: Augment, rng: &mut ChaCha8Rng) -> Vec<f32> {
    classification_planes(image, n, how, rng)
}

/// [`classification`] for an image of several planar `n x n` planes: one draw for every plane.
pub fn classification_planes(image: &[f32], n: usize, how: Augment, rng: &mut ChaCha8Rng) -> Vec<f32> {
    if how == Augment::None {
        return image.to_vec();
    }
    let mut v =
        if rng.random::<bool>() { per_plane(image, n, |p| rot90_flip(p, n, 0, Some(1))) } else { image.to_vec() };
    if how == Augment::Flip {
        return v;
    }
    let r = Affine::new(rng.random_range(-20.0..20.0), [0.0, 0.0], 1.0, 0.0);
    v = per_plane(&v, n, |p| r.warp(p, n, 0.0));
    let max_t = 0.1 * n as f64;
    let t = [rng.random_range(-max_t..max_t).round(), rng.random_range(-max_t..max_t).round()];
    let a = Affine::new(0.0, t, 1.0, rng.random_range(-0.1..0.1));
    v = per_plane(&v, n, |p| a.warp(p, n, 0.0));
    let big = (1.1 * n as f64) as usize;
    let (x0, y0) = (rng.random_range(0..=big - n), rng.random_range(0..=big - n));
    per_plane(&v, n, |p| {
        let r = Raster::new(n, n, 1, p.to_vec()).resize_bilinear(big, big);
        (0..n).flat_map(|y| r.data[(y0 + y) * big + x0..(y0 + y) * big + x0 + n].to_vec()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn quarter_turns_and_flips() {
        let v: Vec<u8> = (0..9).collect(); // 0 1 2 / 3 4 5 / 6 7 8
        assert_eq!(rot90_flip(&v, 3, 0, None), v);
        assert_eq!(rot90_flip(&v, 3, 0, Some(1)), vec![2, 1, 0, 5, 4, 3, 8, 7, 6]);
        assert_eq!(rot90_flip(&v, 3, 0, Some(0)), vec![6, 7, 8, 3, 4, 5, 0, 1, 2]);
        assert_eq!(rot90_flip(&v, 3, 1, None), vec![2, 5, 8, 1, 4, 7, 0, 3, 6]);
        let mut r = v.clone();
        for _ in 0..4 {
            r = rot90_flip(&r, 3, 1, None);
        }
        assert_eq!(r, v);
    }

    #[test]
    fn affine_identity_translation_and_quarter_turn() {
        let v: Vec<u8> = (1..=16).collect(); // 4x4
        assert_eq!(Affine::new(0.0, [0.0, 0.0], 1.0, 0.0).warp(&v, 4, 0), v);
        // one pixel to the right: the first column is filled
        let t = Affine::new(0.0, [1.0, 0.0], 1.0, 0.0).warp(&v, 4, 0);
        assert_eq!(&t[..4], &[0, 1, 2, 3]);
        // a 90° rotation equals a quarter turn (one direction or the other)
        let r = Affine::new(90.0, [0.0, 0.0], 1.0, 0.0).warp(&v, 4, 0);
        assert!(r == rot90_flip(&v, 4, 1, None) || r == rot90_flip(&v, 4, 3, None), "{r:?}");
    }

    #[test]
    fn segmentation_moves_image_and_mask_together() {
        let n = 32;
        // the mask marks exactly the bright pixels
        let image: Vec<f32> = (0..n * n).map(|i| if (i / n) % 7 < 3 && i % n > 5 { 1.0 } else { 0.25 }).collect();
        let mask: Vec<u8> = image.iter().map(|&v| u8::from(v == 1.0)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut changed = 0;
        for _ in 0..40 {
            let (i, m) = segmentation(&image, &mask, n, Augment::Reference, &mut rng);
            assert_eq!((i.len(), m.len()), (n * n, n * n));
            for (a, b) in i.iter().zip(&m) {
                assert_eq!(*b == 1, *a == 1.0, "image and mask disagree");
            }
            changed += usize::from(i != image);
        }
        assert!(changed > 20, "the reference augmentation changes most draws ({changed}/40)");
        let (i, m) = segmentation(&image, &mask, n, Augment::None, &mut rng);
        assert_eq!((i, m), (image, mask));
    }

    #[test]
    fn classification_keeps_the_size() {
        let n = 20;
        let image: Vec<f32> = (0..n * n).map(|i| i as f32 / 400.0).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let out = classification(&image, n, Augment::Reference, &mut rng);
        assert_eq!(out.len(), n * n);
        assert_ne!(out, image);
    }
}
