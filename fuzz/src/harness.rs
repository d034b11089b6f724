//! What every fuzz target does with its input, shared with the test that replays the findings
//! (`crates/vismae-data/tests/it/bad_input.rs` includes this file): the bytes are written to a
//! scratch file and read the way `ingest` and `convert` read a file (format by content, the
//! size limits, every image decoded), or opened as a labelled set (CSV or JSON datalist). Any
//! result is fine; a panic, an abort, an allocation past libFuzzer's limit or a hang is a finding.

use std::path::{Path, PathBuf};

use vismae_data::volume::Plane;
use vismae_data::{Limits, SliceOptions, Source};

/// The limits the fuzzer reads under: the defaults, with images and files capped at 256 MiB so
/// that a reader that honours them stays within libFuzzer's 512 MiB malloc limit.
pub fn limits() -> Limits {
    Limits { max_image_bytes: 256 << 20, max_file_bytes: 256 << 20, ..Limits::default() }
}

/// A scratch file of this process and thread named `name` (in `/dev/shm` when it exists).
pub fn scratch(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    dir.join(format!("vismae-fuzz-{}-{thread}-{name}", std::process::id()))
}

/// Reads `bytes` as an image file: detection, header checks, and every image decoded (at most
/// 64 of them, as a volume's slices along two planes).
pub fn read_image(bytes: &[u8]) {
    let path = scratch("input");
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let slices = SliceOptions { planes: vec![Plane::Axial, Plane::Sagittal], stride: 1, skip_empty: false };
    if let Ok(source) = Source::open_with(&path, &slices, &limits()) {
        for k in 0..source.len().min(64) {
            let _ = source.image(k, &slices);
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Opens `bytes` as a labelled set: a `.json` datalist when the first byte is `{` or `[`, else a
/// `.csv`; the images it names are looked for beside it (and not found).
pub fn open_labelled(bytes: &[u8]) {
    let json = matches!(bytes.first(), Some(b'{' | b'['));
    let path = scratch(if json { "set.json" } else { "set.csv" });
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let _ = vismae_data::labelled::open(&path);
    let _ = std::fs::remove_file(&path);
}
