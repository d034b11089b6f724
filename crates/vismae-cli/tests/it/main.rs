//! The CLI's integration-test binary: runs the built `vismae` binary as a user would. One module
//! per command family; the helpers they share are here.

mod demo;
mod evaluate;
mod finetune;
mod ingest;
mod nodes;
mod pretrain;
mod settings;
mod study;
mod untrusted;
mod weights;

use std::path::PathBuf;
use std::process::Command;

/// The built `vismae` binary.
pub fn vismae() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vismae"))
}

/// A file of `testdata/reference`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/reference").join(name)
}

/// A path in this run's scratch folder.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vismae-cli-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}

/// Runs `cmd`, which must succeed; returns its stdout and stderr.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Runs `cmd`, which must fail; returns its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `cmd` and kills it (SIGKILL) as soon as `path` exists (a checkpoint the run wrote), so
/// that the kill lands mid-run however fast or loaded the machine is. Panics if the run ends first.
pub fn kill_when(cmd: &mut Command, path: &std::path::Path) {
    kill_once(cmd, &path.display().to_string(), || path.exists());
}

/// Every file named `name` under `dir`.
pub fn files_named(dir: &std::path::Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_named(&p, name));
        } else if p.file_name().is_some_and(|n| n == name) {
            found.push(p);
        }
    }
    found
}

/// Starts `cmd` and kills it (SIGKILL) as soon as `ready()` (what it waits for: `what`).
pub fn kill_once(cmd: &mut Command, what: &str, ready: impl Fn() -> bool) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The decompressed bytes of a `.gz` file.
pub fn gunzip(p: &std::path::Path) -> Vec<u8> {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))),
        &mut raw,
    )
    .unwrap_or_default();
    raw
}

/// Every line of a JSON-lines file.
pub fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect()
}

/// The "left at initialisation" part of a transfer report.
pub fn left_at_init(report: &str) -> &str {
    report.split("left at initialisation:").nth(1).unwrap_or_default().split("unused").next().unwrap_or_default()
}

/// `(step, loss, lr)` of every line of a run's metrics.jsonl.
pub fn metrics(run: &std::path::Path) -> Vec<(u64, f64, f64)> {
    jsonl(&run.join("metrics.jsonl"))
        .iter()
        .map(|v| {
            (
                v["step"].as_u64().unwrap_or(0),
                v["loss"].as_f64().unwrap_or(f64::NAN),
                v["lr"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// Class folders of 8 + 8 phantoms in `dir`: `lesion` when the phantom has class-2 pixels, `clean` otherwise.
pub fn phantom_class_folders(dir: &std::path::Path) {
    let (mut n_lesion, mut n_clean, mut i) = (0, 0, 0u64);
    while n_lesion < 8 || n_clean < 8 {
        let p = vismae_train::phantom::phantom(11, i, 64);
        i += 1;
        let class = if p.labels.contains(&2) { "lesion" } else { "clean" };
        let n = if class == "lesion" { &mut n_lesion } else { &mut n_clean };
        if *n >= 8 {
            continue;
        }
        *n += 1;
        std::fs::create_dir_all(dir.join(class)).unwrap_or_default();
        let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
        image::GrayImage::from_raw(64, 64, img).map(|g| g.save(dir.join(format!("{class}/{i}.png"))));
    }
}

/// 10 labelled phantoms (classes 0, 1, 2) as PNG image/mask pairs in the reference's CSV layout,
/// `dir/train.csv` naming `dir/img/case{i}.png` and its mask.
pub fn phantom_seg_csv(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("img")).unwrap_or_default();
    let mut csv = String::from("image,mask\n");
    for i in 0..10u64 {
        let p = vismae_train::phantom::phantom(5, i, 64);
        let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
        image::GrayImage::from_raw(64, 64, img).map(|g| g.save(dir.join(format!("img/case{i}.png"))));
        image::GrayImage::from_raw(64, 64, p.labels.clone()).map(|g| g.save(dir.join(format!("img/case{i}_mask.png"))));
        csv.push_str(&format!("img/case{i}.png,img/case{i}_mask.png\n"));
    }
    std::fs::write(dir.join("train.csv"), csv).unwrap_or_default();
}
