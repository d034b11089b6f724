//! The one integration-test binary of vismae-train: resolution of requests into run configs,
//! with every setting that cannot work refused before any folder exists (`resolve`), and the
//! engines called as a library: pre-training and fine-tuning started, interrupted and resumed,
//! their run folders read back as the typed schema (`engines`); learning-rate groups (`groups`).

mod engines;
mod groups;
mod resolve;
mod simclr;

use std::path::{Path, PathBuf};

use vismae_train::phantom::phantom;

/// The training backend of the tests.
pub type Train = burn::backend::Autodiff<burn::backend::Flex>;

/// Holds the lock that runs training one test at a time: burn seeds one generator per backend
/// for the whole process, so runs in parallel test threads would draw each other's numbers.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh folder in this run's scratch space.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vismae-train-it-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// `n` labelled 48 px phantoms as the reference's CSV layout in `dir`; returns the CSV.
pub fn seg_csv(dir: &Path, n: u64) -> PathBuf {
    std::fs::create_dir_all(dir.join("img")).unwrap_or_default();
    let mut csv = String::from("image,mask\n");
    for i in 0..n {
        let p = phantom(5, i, 48);
        let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
        let save = |name: String, v: Vec<u8>| {
            image::GrayImage::from_raw(48, 48, v)
                .unwrap_or_else(|| panic!("size"))
                .save(dir.join(&name))
                .unwrap_or_else(|e| panic!("{e}"));
        };
        save(format!("img/c{i}.png"), img);
        save(format!("img/c{i}_mask.png"), p.labels);
        csv.push_str(&format!("img/c{i}.png,img/c{i}_mask.png\n"));
    }
    std::fs::write(dir.join("set.csv"), csv).unwrap_or_default();
    dir.join("set.csv")
}
