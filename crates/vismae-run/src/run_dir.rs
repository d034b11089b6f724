//! Run folders: created fresh (an existing non-empty folder is never reused or overwritten),
//! files written whole through a temporary file and a rename, an append-only `metrics.jsonl`,
//! and the progress bar every long run shows.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::RunError;

/// A run folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates `root` (and parents); fails if it exists with any content.
    pub fn create(root: &Path) -> Result<Self, RunError> {
        if root.exists() {
            let mut entries = std::fs::read_dir(root).map_err(RunError::io(root))?;
            if entries.next().is_some() {
                return Err(RunError::Occupied(root.into()));
            }
        }
        std::fs::create_dir_all(root).map_err(RunError::io(root))?;
        Ok(Self { root: root.into() })
    }

    /// Opens a folder that already holds a run (to resume it, or add to it).
    pub fn open_existing(root: &Path) -> Result<Self, RunError> {
        if !root.join("config.json").is_file() {
            return Err(RunError::Io {
                path: root.join("config.json"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no config.json: not a vismae run folder"),
            });
        }
        Ok(Self { root: root.into() })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Appends one JSON object as a line to `name` (e.g. `metrics.jsonl`).
    pub fn append_json(&self, name: &str, value: &serde_json::Value) -> Result<(), RunError> {
        let path = self.join(name);
        let mut f: File = OpenOptions::new().create(true).append(true).open(&path).map_err(RunError::io(&path))?;
        writeln!(f, "{value}").map_err(RunError::io(&path))
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

/// Writes `path` whole: a temporary file beside it, then a rename, so a crash or a full disk
/// never leaves a torn file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(RunError::io(path))
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
        let err = RunDir::create(&root).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
