//! Weight files without a tensor library: a plain state dict (official key -> tensor, with the
//! file's text metadata), readers for safetensors and zip-format PyTorch checkpoints (`.pth`,
//! through a pickle machine that never executes what a file says), writers of both, and whole-file
//! writes. Kept apart from the networks (`vismae-model`) so that tools which only read or check
//! weight files, and the fuzzer that feeds them hostile files, need no tensor backend.

// the fuzz harness this crate's test includes names the crate
#[cfg(test)]
extern crate self as vismae_weights;

pub mod pth;
pub mod pth_write;
pub mod safetensors_io;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Element values of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Floating point (f16, bf16 and f64 files are converted on reading).
    F32(Vec<f32>),
    /// Integers (int64 buffers such as `relative_position_index`).
    I64(Vec<i64>),
}

impl Values {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Short dtype name as PyTorch prints it.
    pub fn dtype(&self) -> &'static str {
        match self {
            Values::F32(_) => "float32",
            Values::I64(_) => "int64",
        }
    }
}

/// One named tensor of a state dict, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub values: Values,
}

/// An official-layout state dict: key -> tensor, sorted by key, and the file's text metadata
/// (safetensors `__metadata__`; vismae keeps its model card there).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    /// The tensors.
    pub tensors: BTreeMap<String, TensorEntry>,
    /// Text metadata.
    pub metadata: BTreeMap<String, String>,
}

impl StateDict {
    /// The model card the file carries, if any.
    pub fn card(&self) -> Option<vismae_run::ModelCard> {
        vismae_run::ModelCard::from_metadata(&self.metadata)
    }

    /// Attaches a model card.
    pub fn set_card(&mut self, card: &vismae_run::ModelCard) {
        self.metadata.insert(vismae_run::ModelCard::METADATA_KEY.into(), card.to_json());
    }
}

/// A file tensor whose shape differs from the model's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Official key.
    pub key: String,
    /// Shape in the file.
    pub file: Vec<usize>,
    /// Shape the model needs.
    pub model: Vec<usize>,
}

impl fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: file has {:?}, model needs {:?}", self.key, self.file, self.model)
    }
}

/// Why a weight file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not in the format it claims, or is damaged.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Tensors whose shapes disagree with the model.
    #[error("{} tensor(s) have the wrong shape: {}", .0.len(), .0.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; "))]
    Shape(Vec<ShapeMismatch>),
}

/// The weight file formats vismae reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.safetensors` with the official key names.
    Safetensors,
    /// A zip-format PyTorch checkpoint (`torch.save`).
    Pth,
    /// burn's own named-MessagePack record (`.mpk`).
    BurnRecord,
}

impl Format {
    /// Detects the format from the first bytes of a file (not its extension).
    pub fn sniff(path: &Path) -> Result<Format, WeightError> {
        use std::io::Read;
        let mut head = [0u8; 16];
        let mut f = std::fs::File::open(path).map_err(|source| WeightError::Io { path: path.into(), source })?;
        let n = f.read(&mut head).map_err(|source| WeightError::Io { path: path.into(), source })?;
        if n >= 4 && &head[..4] == b"PK\x03\x04" {
            return Ok(Format::Pth);
        }
        if n >= 9 {
            let len = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
            if head[8] == b'{' && len > 1 && len < 1 << 30 {
                return Ok(Format::Safetensors);
            }
        }
        if path.extension().is_some_and(|e| e == "mpk") {
            return Ok(Format::BurnRecord);
        }
        Err(WeightError::Format {
            path: path.into(),
            reason: "not a safetensors file or a zip-format PyTorch checkpoint (legacy non-zip .pth files are not supported; re-save with a current torch.save)".into(),
        })
    }
}

/// Reads a state dict from a safetensors file or an official `.pth` checkpoint (format by content).
pub fn read_state_dict(path: &Path) -> Result<StateDict, WeightError> {
    match Format::sniff(path)? {
        Format::Safetensors => safetensors_io::read(path),
        Format::Pth => pth::read(path),
        Format::BurnRecord => Err(WeightError::Format {
            path: path.into(),
            reason: "a burn record holds no key names; load it with the matching model instead".into(),
        }),
    }
}

/// Writes the model card `sd` carries, if any, beside the weight file `path` (`STEM.card.json`
/// and `STEM.card.md`; see [`vismae_run::ModelCard::write_beside`]).
pub fn write_card_beside(sd: &StateDict, path: &Path) -> Result<(), WeightError> {
    match sd.card() {
        Some(card) => card.write_beside(path).map_err(|e| match e {
            vismae_run::RunError::Io { path, source } => WeightError::Io { path, source },
            other => WeightError::Format { path: path.into(), reason: other.to_string() },
        }),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a crash or
/// a full disk never leaves a torn file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WeightError> {
    vismae_run::run_dir::write_atomic(path, bytes).map_err(|e| match e {
        vismae_run::RunError::Io { path, source } => WeightError::Io { path, source },
        other => WeightError::Format { path: path.into(), reason: other.to_string() },
    })
}

/// The `pth` fuzz target's harness (`fuzz/src/harness_weights.rs`), for the test that replays
/// its findings.
#[cfg(test)]
#[path = "../../../fuzz/src/harness_weights.rs"]
mod fuzz_harness;

#[cfg(test)]
mod tests {
    use super::fuzz_harness as harness;

    #[test]
    fn fuzz_regressions_and_seeds_do_not_panic() {
        // the pth findings in testdata/fuzz-regressions (TARGET-what.ext) and the fuzzer's seeds,
        // through exactly what the fuzzer ran; the seeds must read
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut seen = 0;
        for dir in ["testdata/fuzz-regressions", "fuzz/seeds/pth"] {
            for entry in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
                let p = entry.path();
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if dir.ends_with("regressions") && !name.starts_with("pth-") {
                    continue;
                }
                let started = std::time::Instant::now();
                harness::read_weights(&std::fs::read(&p).unwrap_or_default());
                assert!(started.elapsed().as_secs_f64() < 5.0, "{name} took {:?}", started.elapsed());
                if dir.ends_with("pth") {
                    let sd = crate::read_state_dict(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
                    let w = &sd.tensors["patch_embed.proj.weight_t"];
                    assert_eq!(
                        (w.shape.as_slice(), &w.values),
                        (&[3, 2][..], &crate::Values::F32(vec![0.5, 3., -1., 4., 2., 5.]))
                    );
                }
                seen += 1;
            }
        }
        assert!(seen >= 3, "{seen}");
    }
}
