//! The two augmented views of an image that SimCLR contrasts (Chen et al. 2020, §3 and Appendix
//! A), drawn from a seeded generator so that a step's views depend only on (seed, step, image):
//! - random resized crop: area U(crop_min, 1) of the image (`crop_min` 0.2 by default; SimCLR's
//!   0.08 makes small crops of medical images mostly background), aspect ratio log-U(3/4, 4/3),
//!   resized back with the antialiased bilinear filter (torchvision's algorithm: 10 tries, then
//!   the whole image);
//! - horizontal flip with p = 0.5;
//! - with p = 0.8 brightness and contrast jitter, factors U(0.6, 1.4) (SimCLR's colour jitter at
//!   strength 1 without its saturation and hue, which grey images do not have; no random greyscale);
//! - with p = 0.5 a Gaussian blur, sigma U(0.1, 2.0) relative to a 224-px image (SimCLR's kernel of
//!   10 % of the image side), i.e. scaled with the side.
//!
//! Images are planar `[planes, S, S]` values in `[0, 1]`, every plane drawn alike.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vismae_data::raster::Raster;

/// One augmented view of `img` (`planes` planes of `n x n`), crops of at least `crop_min` of the
/// area.
pub fn view(img: &[f32], planes: usize, n: usize, crop_min: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let (y0, x0, h, w) = crop_box(n, crop_min, rng);
    let flip = rng.random::<bool>();
    let jitter = rng.random::<f64>() < 0.8;
    let (brightness, contrast) = (rng.random_range(0.6..1.4), rng.random_range(0.6..1.4));
    let blur = rng.random::<f64>() < 0.5;
    let sigma = rng.random_range(0.1..2.0) * n as f64 / 224.0;
    let mut out = Vec::with_capacity(planes * n * n);
    for p in 0..planes.max(1) {
        let plane = &img[p * n * n..(p + 1) * n * n];
        let crop: Vec<f32> = (0..h).flat_map(|y| plane[(y0 + y) * n + x0..(y0 + y) * n + x0 + w].to_vec()).collect();
        let mut v = Raster::new(w, h, 1, crop).resize_bilinear(n, n).data;
        if flip {
            for row in v.chunks_mut(n) {
                row.reverse();
            }
        }
        if jitter {
            v.iter_mut().for_each(|x| *x = (*x * brightness as f32).clamp(0.0, 1.0));
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            v.iter_mut().for_each(|x| *x = (mean + (*x - mean) * contrast as f32).clamp(0.0, 1.0));
        }
        if blur {
            v = gaussian_blur(&v, n, sigma);
        }
        out.extend(v);
    }
    out
}

/// The two views of image `index` at `step` (their own generators, from the run's seed).
pub fn pair(img: &[f32], planes: usize, n: usize, crop_min: f64, seed: u64, index: u64) -> (Vec<f32>, Vec<f32>) {
    let mut a = ChaCha8Rng::seed_from_u64(crate::seeds::mix(seed ^ 0x7669_6577, 0, 2 * index));
    let mut b = ChaCha8Rng::seed_from_u64(crate::seeds::mix(seed ^ 0x7669_6577, 0, 2 * index + 1));
    (view(img, planes, n, crop_min, &mut a), view(img, planes, n, crop_min, &mut b))
}

/// torchvision's `RandomResizedCrop.get_params`: `(top, left, height, width)`.
fn crop_box(n: usize, crop_min: f64, rng: &mut ChaCha8Rng) -> (usize, usize, usize, usize) {
    let area = (n * n) as f64;
    let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(crop_min.min(1.0)..=1.0);
        let ratio = rng.random_range(lr0..lr1).exp();
        let w = (target * ratio).sqrt().round() as usize;
        let h = (target / ratio).sqrt().round() as usize;
        if 0 < w && w <= n && 0 < h && h <= n {
            let y = rng.random_range(0..=n - h);
            let x = rng.random_range(0..=n - w);
            return (y, x, h, w);
        }
    }
    (0, 0, n, n)
}

/// A separable Gaussian blur with edges clamped.
fn gaussian_blur(v: &[f32], n: usize, sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
    let total: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|x| x / total).collect();
    let at = |i: isize| i.clamp(0, n as isize - 1) as usize;
    let mut tmp = vec![0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            tmp[y * n + x] = k.iter().enumerate().map(|(j, w)| w * v[y * n + at(x as isize + j as isize - r)]).sum();
        }
    }
    let mut out = vec![0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            out[y * n + x] = k.iter().enumerate().map(|(j, w)| w * tmp[at(y as isize + j as isize - r) * n + x]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_seeded_different_and_in_range() {
        let n = 32;
        let img: Vec<f32> = (0..2 * n * n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        let (a, b) = pair(&img, 2, n, 0.2, 5, 7);
        assert_eq!((a.len(), b.len()), (2 * n * n, 2 * n * n));
        assert_ne!(a, b, "the two views differ");
        assert_eq!(pair(&img, 2, n, 0.2, 5, 7), (a.clone(), b), "seeded");
        assert_ne!(pair(&img, 2, n, 0.2, 6, 7).0, a, "another seed, another view");
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        // a constant image stays constant under crops, flips and blur (jitter moves it uniformly)
        let flat = vec![0.5f32; n * n];
        let v = pair(&flat, 1, n, 0.2, 1, 1).0;
        assert!(v.iter().all(|x| (x - v[0]).abs() < 1e-5), "{:?}", &v[..4]);
        let blurred = gaussian_blur(&flat, n, 1.3);
        assert!(blurred.iter().all(|x| (x - 0.5).abs() < 1e-6));
    }
}
