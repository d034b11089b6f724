//! `vismae split`: grouped (by patient, where the layout knows it), class-stratified k-fold
//! splits of a labelled set with nested label fractions, written as nnU-Net's
//! `splits_final.json` plus `fractions`.

use std::path::Path;

use vismae_data::labelled::{LabelledSet, Target};
use vismae_data::splits::{Fold, Item, grouped_kfold};
use vismae_run::GroupBy;

use crate::error::{Result, WorkflowError};

/// The items a labelled set splits into: grouped as asked (near-duplicate grouping reads every
/// case's image), with the class of classification cases.
pub fn items(set: &LabelledSet, group_by: GroupBy) -> Result<Vec<Item>> {
    let similar = match group_by {
        GroupBy::Similar => Some(vismae_data::labelled::similar_groups(set)?.groups),
        _ => None,
    };
    Ok(set
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| Item {
            id: s.id.clone(),
            group: match (group_by, &similar) {
                (GroupBy::Similar, Some(g)) => g[i].clone(),
                (GroupBy::Case, _) => s.id.clone(),
                _ => s.group.clone(),
            },
            class: match &s.target {
                Target::Class(c) => Some(*c),
                _ => None,
            },
        })
        .collect())
}

/// What a split made.
#[derive(Clone, Debug)]
pub struct SplitSummary {
    /// Cases split.
    pub cases: usize,
    /// Groups they formed.
    pub groups: usize,
    /// The folds.
    pub folds: Vec<Fold>,
}

/// Splits the labelled set at `data` into `folds` folds with nested `fractions` and writes them to
/// `out`, which must not exist.
pub fn split(
    data: &Path,
    folds: usize,
    seed: u64,
    group_by: GroupBy,
    fractions: &[f64],
    out: &Path,
) -> Result<SplitSummary> {
    if out.exists() {
        return Err(WorkflowError::invalid(format!("{} already exists (vismae never overwrites)", out.display())));
    }
    let set = vismae_data::labelled::open(data)?;
    let items = items(&set, group_by)?;
    let result = grouped_kfold(&items, folds, seed, fractions)?;
    let text = serde_json::to_string_pretty(&result).map_err(|e| WorkflowError::invalid(e.to_string()))?;
    vismae_run::run_dir::write_atomic(out, text.as_bytes())?;
    let groups: std::collections::HashSet<&String> = items.iter().map(|i| &i.group).collect();
    Ok(SplitSummary { cases: items.len(), groups: groups.len(), folds: result })
}
