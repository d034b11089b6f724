//! Run folders: created fresh (an existing non-empty folder is never reused or overwritten) and
//! held by one process at a time ([`DirLock`]); files written whole through a temporary file and
//! a rename, an append-only `metrics.jsonl` whose lines land whole, and the progress bar every
//! long run shows. [`write_atomic`], [`write_synced`] and [`append_whole`] are the writes every
//! vismae output goes through, so a failed write (a full disk, an I/O error) stops the command
//! naming the file and leaves nothing torn; a rerun continues once space is back.
//!
//! Testing hook: with `VISMAE_FAIL_WRITES_AFTER=N` in the environment, the writes after the
//! first `N` of the process fail as a full disk would (half the bytes written, then
//! `StorageFull`), so tests can check that nothing is torn and that a rerun resumes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::RunError;
use crate::lock::{DirLock, holds_files as occupied};

/// A run folder, held by this process while any clone of it lives.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
    /// `None`: opened to read only ([`RunDir::open_reader`]).
    _lock: Option<Arc<DirLock>>,
}

impl RunDir {
    /// Creates `root` (and parents) and takes its lock; fails if it exists with any content, or
    /// if another process holds it.
    pub fn create(root: &Path) -> Result<Self, RunError> {
        // checked before anything is written into a folder that is not ours, and again once held
        if occupied(root)? {
            return Err(RunError::Occupied(root.into()));
        }
        std::fs::create_dir_all(root).map_err(RunError::io(root))?;
        let lock = DirLock::acquire(root)?;
        if occupied(root)? {
            return Err(RunError::Occupied(root.into()));
        }
        Ok(Self { root: root.into(), _lock: Some(Arc::new(lock)) })
    }

    /// Opens a folder that already holds a run (to resume it, or add to it) and takes its lock;
    /// fails if another process holds it.
    pub fn open_existing(root: &Path) -> Result<Self, RunError> {
        if !root.join("config.json").is_file() {
            return Err(RunError::Io {
                path: root.join("config.json"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no config.json: not a vismae run folder"),
            });
        }
        let lock = DirLock::acquire(root)?;
        Ok(Self { root: root.into(), _lock: Some(Arc::new(lock)) })
    }

    /// Opens a folder that holds a run to read it, without its lock: another process (rank 0 of
    /// a multi-node run) holds the lock and alone writes to it.
    pub fn open_reader(root: &Path) -> Result<Self, RunError> {
        if !root.join("config.json").is_file() {
            return Err(RunError::Io {
                path: root.join("config.json"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no config.json: not a vismae run folder (a multi-node resume needs the run folder on a filesystem every node reads)",
                ),
            });
        }
        Ok(Self { root: root.into(), _lock: None })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Appends one JSON object as a line to `name` (e.g. `metrics.jsonl`), whole or not at all.
    pub fn append_json(&self, name: &str, value: &serde_json::Value) -> Result<(), RunError> {
        append_whole(&self.join(name), format!("{value}\n").as_bytes())
    }

    /// Writes `value` as pretty JSON to `name`, through a temporary file and a rename.
    pub fn write_json(&self, name: &str, value: &impl serde::Serialize) -> Result<(), RunError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| RunError::Corrupt { path: self.join(name), reason: e.to_string() })?;
        self.write_atomic(name, text.as_bytes())
    }

    /// Writes `name` whole, through a temporary file and a rename.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), RunError> {
        write_atomic(&self.join(name), bytes)
    }

    /// Progress bar of a run: `prefix [====>   ] pos/len unit msg (elapsed, eta)`, at `start`.
    pub fn bar(total: usize, start: usize, prefix: &'static str, unit: &str) -> indicatif::ProgressBar {
        let pb = indicatif::ProgressBar::new(total as u64);
        let template = format!("{{prefix:>9}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} ({{elapsed}}, eta {{eta}})");
        pb.set_style(
            indicatif::ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(prefix);
        pb.set_position(start as u64);
        pb
    }
}

/// Writes `path` whole: a temporary file beside it, synced, then a rename, so a crash or a full
/// disk never leaves a torn file under the final name (the temporary file is removed on failure).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(temp_name(&name));
    let result = write_synced(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else if let Ok(d) = File::open(dir) {
        // the rename itself reaches the disk with the folder (best effort: not every file system
        // syncs folders)
        let _ = d.sync_all();
    }
    result.map_err(RunError::io(path))
}

/// A temporary name beside `name`, unique to this process and write (threads of one process may
/// write the same file).
pub fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(".{name}.tmp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Creates (or truncates) `path`, writes `bytes` and syncs them to disk. Callers rename the file
/// into place afterwards, or use [`write_atomic`].
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    if let Some(e) = injected_fault() {
        f.write_all(&bytes[..bytes.len() / 2])?;
        return Err(e);
    }
    f.write_all(bytes)?;
    f.sync_all()
}

/// Appends `bytes` to `path` (created if missing) whole or not at all: after a failed write the
/// file is cut back to its old length, so a line-oriented log never holds half a line.
pub fn append_whole(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let mut f: File = OpenOptions::new().create(true).append(true).open(path).map_err(RunError::io(path))?;
    let before = f.metadata().map_err(RunError::io(path))?.len();
    let result = match injected_fault() {
        Some(e) => f.write_all(&bytes[..bytes.len() / 2]).and(Err(e)),
        None => f.write_all(bytes),
    };
    if result.is_err() {
        let _ = f.set_len(before);
    }
    result.map_err(RunError::io(path))
}

/// Writes that went through [`write_synced`] and [`append_whole`] in this process.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// The testing hook: `Some(StorageFull)` for every write after the first `VISMAE_FAIL_WRITES_AFTER`.
fn injected_fault() -> Option<std::io::Error> {
    static AFTER: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let after = (*AFTER.get_or_init(|| std::env::var("VISMAE_FAIL_WRITES_AFTER").ok()?.trim().parse().ok()))?;
    let n = WRITES.fetch_add(1, Ordering::SeqCst);
    (n >= after).then(|| {
        std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device (injected by VISMAE_FAIL_WRITES_AFTER)",
        )
    })
}

/// Reads a JSON file as `T`, naming the file when it is missing or malformed.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RunError> {
    let text = std::fs::read_to_string(path).map_err(RunError::io(path))?;
    serde_json::from_str(&text).map_err(|e| RunError::Corrupt { path: path.into(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_occupied_folders() {
        let root = std::env::temp_dir().join(format!("vismae-rundir-{}", std::process::id()));
        let run = RunDir::create(&root).unwrap_or_else(|e| panic!("{e}"));
        run.append_json("metrics.jsonl", &serde_json::json!({"step": 1})).unwrap_or_else(|e| panic!("{e}"));
        // held: a second writer is refused naming this process; released with the last clone
        let err = RunDir::open_existing(&root).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no config.json"), "{err}");
        run.write_atomic("config.json", b"{}").unwrap_or_else(|e| panic!("{e}"));
        let err = RunDir::open_existing(&root).unwrap_err().to_string();
        assert!(err.contains(&format!("in use by another vismae process (pid {})", std::process::id())), "{err}");
        let copy = run.clone();
        drop(run);
        assert!(RunDir::open_existing(&root).is_err(), "a clone still holds the folder");
        drop(copy);
        assert!(RunDir::open_existing(&root).is_ok());
        let err = RunDir::create(&root).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn appends_land_whole_and_atomic_writes_leave_no_temporaries() {
        let dir = std::env::temp_dir().join(format!("vismae-append-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let log = dir.join("log.jsonl");
        append_whole(&log, b"{\"a\":1}\n").unwrap_or_else(|e| panic!("{e}"));
        append_whole(&log, b"{\"a\":2}\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(&log).ok().as_deref(), Some("{\"a\":1}\n{\"a\":2}\n"));
        write_atomic(&dir.join("x.json"), b"[1]").unwrap_or_else(|e| panic!("{e}"));
        // a write into a missing folder fails naming the final path, and leaves nothing behind
        let e = write_atomic(&dir.join("missing/y.json"), b"[2]").unwrap_err().to_string();
        assert!(e.contains("missing/y.json"), "{e}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
