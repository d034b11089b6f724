//! vismae-report: from finished runs to what a paper or a lab meeting needs. Tables in the
//! paper's shape (rows = initialisations, columns = datasets x metrics, mean ± sd over folds, one
//! table per label fraction) as Markdown and CSV; label-efficiency figures and training curves as
//! PNG and SVG; and `report.md` plus a self-contained `report.html` (figures inlined) linking
//! them all. No burn: it reads `config.json`, `metrics.jsonl` and summaries.

mod build;
mod error;
pub mod html;
pub mod plot;
pub mod runs;
mod tables;

use std::path::PathBuf;

pub use build::build;
pub use error::ReportError;
pub use runs::{Run, RunKind, mean_sd, read_run};

/// An image to show in the report besides the figures (reconstructions, overlays).
#[derive(Clone, Debug)]
pub struct Extra {
    /// Section it goes in.
    pub section: String,
    /// Caption.
    pub caption: String,
    /// The PNG file (copied into the report folder).
    pub path: PathBuf,
}

/// What `build` wrote.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// Figures (SVG and PNG).
    pub figures: Vec<PathBuf>,
    /// The tables in Markdown, one per label fraction.
    pub tables: Vec<String>,
}
