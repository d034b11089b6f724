//! The one integration-test binary of vismae-workflow: a fine-tuning run's logged best validation
//! score against `predict --data SET --cases val` + `evaluate` of its weights (`agreement`), on
//! 2-D sets and on 2-channel nnU-Net volumes; a small `study` end to end.

mod agreement;
mod study;

use std::path::{Path, PathBuf};

use vismae_train::phantom::phantom;

/// The training backend of the tests.
pub type Train = burn::backend::Autodiff<burn::backend::Flex>;
/// The inference backend of the tests.
pub type Infer = burn::backend::Flex;

/// A fresh folder in this run's scratch space.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vismae-workflow-it-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// A `w x h` grey PNG.
pub fn png(path: &Path, w: usize, h: usize, v: &[u8]) {
    image::GrayImage::from_raw(w as u32, h as u32, v.to_vec())
        .unwrap_or_else(|| panic!("size"))
        .save(path)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Phantom `i` of `seed` cropped to `w x h` (w, h <= side): image values 0-255 and labels.
pub fn cropped(seed: u64, i: u64, side: usize, w: usize, h: usize) -> (Vec<u8>, Vec<u8>) {
    let p = phantom(seed, i, side);
    let mut img = Vec::with_capacity(w * h);
    let mut lab = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            img.push((p.image[y * side + x] * 255.0).round() as u8);
            lab.push(p.labels[y * side + x]);
        }
    }
    (img, lab)
}
