//! Run folders: created fresh (an existing non-empty folder is never reused or overwritten),
//! with an append-only `metrics.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of run-folder handling, each naming the path.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// The folder already holds files.
    #[error("{0} already exists and is not empty: choose another --out (vismae never overwrites an earlier run)")]
    Occupied(PathBuf),
    /// Creating or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A run folder.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates `root` (and parents); fails if it exists with any content.
    pub fn create(root: &Path) -> Result<Self, RunDirError> {
        let io = |source| RunDirError::Io { path: root.into(), source };
        if root.exists() {
            let mut entries = std::fs::read_dir(root).map_err(io)?;
            if entries.next().is_some() {
                return Err(RunDirError::Occupied(root.into()));
            }
        }
        std::fs::create_dir_all(root).map_err(io)?;
        Ok(Self { root: root.into() })
    }

    /// Opens a folder that already holds a run (to resume it).
    pub fn open_existing(root: &Path) -> Result<Self, RunDirError> {
        if !root.join("config.json").is_file() {
            return Err(RunDirError::Io {
                path: root.join("config.json"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no config.json: not a run folder"),
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
    pub fn append_json(&self, name: &str, value: &serde_json::Value) -> Result<(), RunDirError> {
        let path = self.join(name);
        let io = |source| RunDirError::Io { path: path.clone(), source };
        let mut f: File = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        writeln!(f, "{value}").map_err(io)
    }

    /// Writes `value` as pretty JSON to `name`, through a temporary file and a rename.
    pub fn write_json(&self, name: &str, value: &impl serde::Serialize) -> Result<(), RunDirError> {
        let text = serde_json::to_string_pretty(value).map_err(|e| RunDirError::Io {
            path: self.join(name),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        self.write_atomic(name, text.as_bytes())
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

    /// Writes `name` whole, through a temporary file and a rename.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), RunDirError> {
        let path = self.join(name);
        let tmp = self.join(&format!(".{name}.tmp"));
        let io = |source| RunDirError::Io { path: path.clone(), source };
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
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
