//! What the `pth` fuzz target does with its input, shared with the test that replays the
//! findings (`crates/vismae-weights/src/lib.rs` includes this file): the bytes are written to a
//! scratch file and read as a weight file (format by content: a zip-format PyTorch checkpoint
//! and its pickle, or safetensors). A panic, an abort, an allocation past libFuzzer's limit or a
//! hang is a finding; any result is fine.

use std::path::{Path, PathBuf};

/// A scratch file of this process and thread (in `/dev/shm` when it exists).
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    dir.join(format!("vismae-fuzz-{}-{thread}-weights.pth", std::process::id()))
}

/// Reads `bytes` as a weight file.
pub fn read_weights(bytes: &[u8]) {
    let path = scratch();
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let _ = vismae_weights::read_state_dict(&path);
    let _ = std::fs::remove_file(&path);
}
