//! Grouped k-fold splits with nested label fractions (the paper's protocol: 5-fold cross-validation,
//! 5-100 % of the training labels). No group (patient) is in two folds; each fold's training part
//! is ordered once, and every fraction is a prefix of that order, so a smaller subset is always
//! contained in a larger one; with classes, both the folds and the prefixes keep the class mix.
//! Saved like nnU-Net's `splits_final.json`, with the fractions added.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The label fractions of the paper.
pub const PAPER_FRACTIONS: [f64; 6] = [0.05, 0.10, 0.25, 0.50, 0.80, 1.0];

/// One case to split.
#[derive(Clone, Debug)]
pub struct Item {
    /// Case id.
    pub id: String,
    /// Group (patient) id: groups never straddle folds.
    pub group: String,
    /// Class for stratification (classification), if any.
    pub class: Option<usize>,
}

/// One fold, as nnU-Net writes it plus the nested training subsets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// Training case ids.
    pub train: Vec<String>,
    /// Validation case ids.
    pub val: Vec<String>,
    /// Fraction (as written, e.g. "0.05") -> training case ids, each contained in the next.
    pub fractions: BTreeMap<String, Vec<String>>,
    /// Held-out test case ids (a study's outer fold), which neither training nor validation sees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
}

struct Group {
    name: String,
    cases: Vec<String>,
    class: Option<usize>,
}

/// Groups in an order whose every prefix keeps the class mix: the next group comes from the class
/// whose share so far is furthest below its share overall (classes shuffled within themselves).
fn stratified_order(mut groups: Vec<Group>, rng: &mut ChaCha8Rng) -> Vec<Group> {
    groups.shuffle(rng);
    let mut by_class: BTreeMap<Option<usize>, Vec<Group>> = BTreeMap::new();
    for g in groups {
        by_class.entry(g.class).or_default().push(g);
    }
    let total: usize = by_class.values().map(|v| v.iter().map(|g| g.cases.len()).sum::<usize>()).sum();
    let targets: BTreeMap<Option<usize>, f64> = by_class
        .iter()
        .map(|(k, v)| (*k, v.iter().map(|g| g.cases.len()).sum::<usize>() as f64 / total.max(1) as f64))
        .collect();
    let mut taken: BTreeMap<Option<usize>, usize> = BTreeMap::new();
    let mut queues: BTreeMap<Option<usize>, std::collections::VecDeque<Group>> =
        by_class.into_iter().map(|(k, v)| (k, v.into())).collect();
    let mut out = Vec::new();
    let mut so_far = 0usize;
    while queues.values().any(|q| !q.is_empty()) {
        let pick = queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| (*k, targets[k] * (so_far + 1) as f64 - *taken.get(k).unwrap_or(&0) as f64))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|x| x.0);
        let Some(k) = pick else { break };
        if let Some(g) = queues.get_mut(&k).and_then(|q| q.pop_front()) {
            *taken.entry(k).or_default() += g.cases.len();
            so_far += g.cases.len();
            out.push(g);
        }
    }
    out
}

/// Splits `items` into `folds` grouped (and, with classes, stratified) folds with nested training
/// subsets at `fractions` of each fold's training cases (whole groups, at least one group).
/// Splits that cannot be made as asked.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SplitError(pub String);

impl From<String> for SplitError {
    fn from(s: String) -> Self {
        SplitError(s)
    }
}

impl From<&str> for SplitError {
    fn from(s: &str) -> Self {
        SplitError(s.into())
    }
}

impl Fold {
    /// The training cases of `fraction` (as a number; the keys are written like `0.05`).
    pub fn train_at(&self, fraction: f64) -> Option<&[String]> {
        self.fractions
            .iter()
            .find(|(k, _)| k.parse::<f64>().is_ok_and(|v| (v - fraction).abs() < 1e-9))
            .map(|(_, v)| v.as_slice())
    }

    /// The fractions this fold has, as numbers.
    pub fn fraction_values(&self) -> Vec<f64> {
        self.fractions.keys().filter_map(|k| k.parse().ok()).collect()
    }
}

/// Reads a splits file written by `vismae split` (nnU-Net's `splits_final.json` with `fractions`).
pub fn read_splits(path: &std::path::Path) -> Result<Vec<Fold>, crate::DataError> {
    use crate::{DataError, Reason};
    let text = std::fs::read_to_string(path).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
    serde_json::from_str(&text)
        .map_err(|e| DataError::new(path, Reason::Corrupt, format!("not a vismae splits file: {e}")))
}

/// A study's folds: the outer `folds`-fold cross-validation of `items` (each outer fold is the
/// test set of fold `k`), and within the rest an inner validation split of about `inner` of its
/// cases (whole groups, class mix kept) for model selection; the training part that remains has
/// the nested subsets at `fractions`. Test, validation and training cases of a fold never share a
/// group.
pub fn study_folds(
    items: &[Item],
    folds: usize,
    seed: u64,
    inner: f64,
    fractions: &[f64],
) -> Result<Vec<Fold>, SplitError> {
    let outer = grouped_kfold(items, folds, seed, &[1.0])?;
    let mut out = Vec::with_capacity(folds);
    for (k, f) in outer.into_iter().enumerate() {
        let pool: Vec<Item> = items.iter().filter(|i| f.train.contains(&i.id)).cloned().collect();
        let groups: std::collections::HashSet<&str> = pool.iter().map(|i| i.group.as_str()).collect();
        let want = (1.0 / inner).round().max(2.0) as usize;
        let inner_folds = want.min(groups.len());
        if inner_folds < 2 {
            return Err(SplitError(format!(
                "fold {k}: its training part has {} group(s), too few for an inner validation split",
                groups.len()
            )));
        }
        let split = grouped_kfold(&pool, inner_folds, seed ^ 0x696e_6e65_7200 ^ k as u64, fractions)?;
        let first = split.into_iter().next().ok_or("no inner fold")?;
        out.push(Fold { train: first.train, val: first.val, fractions: first.fractions, test: f.val });
    }
    Ok(out)
}

/// Grouped (and, with classes, stratified) `folds`-fold splits of `items` with nested training
/// subsets at `fractions`.
pub fn grouped_kfold(items: &[Item], folds: usize, seed: u64, fractions: &[f64]) -> Result<Vec<Fold>, SplitError> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for it in items {
        let g = groups.entry(it.group.clone()).or_insert_with(|| Group {
            name: it.group.clone(),
            cases: Vec::new(),
            class: it.class,
        });
        g.cases.push(it.id.clone());
    }
    if folds < 2 || folds > groups.len() {
        return Err(SplitError(format!(
            "{folds} folds need at least {folds} groups and at least 2 folds; the data has {} group(s)",
            groups.len()
        )));
    }
    if let Some(f) = fractions.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
        return Err(SplitError(format!("fraction {f} must be in (0, 1]")));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // folds: groups in stratified order, each to the fold with the fewest cases of its class so
    // far (then the fewest cases, then the lowest index), so every fold keeps the class mix
    let ordered = stratified_order(groups.into_values().collect(), &mut rng);
    let mut fold_groups: Vec<Vec<usize>> = vec![Vec::new(); folds];
    let mut fold_size = vec![0usize; folds];
    let mut class_size: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
    for (gi, g) in ordered.iter().enumerate() {
        let of_class = class_size.entry(g.class).or_insert_with(|| vec![0; folds]);
        let k = (0..folds).min_by_key(|&k| (of_class[k], fold_size[k], k)).unwrap_or(0);
        of_class[k] += g.cases.len();
        fold_groups[k].push(gi);
        fold_size[k] += g.cases.len();
    }
    let mut out = Vec::with_capacity(folds);
    for k in 0..folds {
        let val: Vec<String> = fold_groups[k].iter().flat_map(|&g| ordered[g].cases.clone()).collect();
        let train_groups: Vec<Group> = (0..folds)
            .filter(|&j| j != k)
            .flat_map(|j| {
                fold_groups[j].iter().map(|&g| Group {
                    name: ordered[g].name.clone(),
                    cases: ordered[g].cases.clone(),
                    class: ordered[g].class,
                })
            })
            .collect();
        let mut fold_rng = ChaCha8Rng::seed_from_u64(seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let train_order = stratified_order(train_groups, &mut fold_rng);
        let train: Vec<String> = train_order.iter().flat_map(|g| g.cases.clone()).collect();
        let mut subsets = BTreeMap::new();
        for &f in fractions {
            let want = (f * train.len() as f64).ceil() as usize;
            let mut cases = Vec::new();
            for g in &train_order {
                if cases.len() >= want.max(1) {
                    break;
                }
                cases.extend(g.cases.iter().cloned());
            }
            subsets.insert(format!("{f}"), cases);
        }
        out.push(Fold { train, val, fractions: subsets, test: Vec::new() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_folds_keep_test_validation_and_training_apart() {
        // 30 cases of 15 patients (2 each), two classes
        let items: Vec<Item> = (0..30)
            .map(|i| Item { id: format!("c{i}"), group: format!("p{}", i / 2), class: Some((i / 2) % 2) })
            .collect();
        let folds = study_folds(&items, 3, 4, 0.2, &[0.25, 1.0]).unwrap();
        let group = |id: &String| items.iter().find(|i| &i.id == id).map(|i| i.group.clone()).unwrap();
        let mut tested = Vec::new();
        for f in &folds {
            let (t, v, r): (Vec<_>, Vec<_>, Vec<_>) = (
                f.test.iter().map(group).collect(),
                f.val.iter().map(group).collect(),
                f.train.iter().map(group).collect(),
            );
            assert!(t.iter().all(|g| !v.contains(g) && !r.contains(g)) && v.iter().all(|g| !r.contains(g)), "{f:?}");
            assert_eq!(f.test.len() + f.val.len() + f.train.len(), 30);
            let small = f.train_at(0.25).unwrap();
            assert!(small.iter().all(|c| f.train.contains(c)) && small.len() < f.train.len());
            assert_eq!(f.train_at(1.0).unwrap().len(), f.train.len());
            tested.extend(f.test.clone());
        }
        tested.sort();
        let mut all: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        all.sort();
        assert_eq!(tested, all, "every case is tested exactly once");
    }

    #[test]
    fn every_fold_keeps_the_class_mix() {
        // two balanced classes into an even number of folds: dealing the alternating order round
        // robin would give each fold one class
        let items: Vec<Item> =
            (0..20).map(|i| Item { id: format!("c{i}"), group: format!("c{i}"), class: Some(i % 2) }).collect();
        for folds in [2, 4, 5] {
            for f in grouped_kfold(&items, folds, 7, &[1.0]).unwrap() {
                let lesions = f.val.iter().filter(|id| id[1..].parse::<usize>().unwrap() % 2 == 1).count();
                let n = f.val.len();
                assert!(lesions * 2 >= n - 1 && lesions * 2 <= n + 1, "{folds} folds: {:?}", f.val);
            }
        }
    }
    use std::collections::HashSet;

    fn items(n: usize, per_group: usize, classes: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                id: format!("c{i}"),
                group: format!("p{}", i / per_group),
                class: (classes > 0).then(|| (i / per_group) % classes),
            })
            .collect()
    }

    #[test]
    fn folds_are_grouped_complete_and_nested() {
        let data = items(200, 3, 2);
        let folds = grouped_kfold(&data, 5, 7, &PAPER_FRACTIONS).unwrap();
        let group_of = |id: &str| data.iter().find(|i| i.id == id).map(|i| i.group.clone()).unwrap_or_default();
        let mut all_val: Vec<String> = Vec::new();
        for f in &folds {
            let train_groups: HashSet<String> = f.train.iter().map(|c| group_of(c)).collect();
            assert!(f.val.iter().all(|c| !train_groups.contains(&group_of(c))), "a patient in train and val");
            assert_eq!(f.train.len() + f.val.len(), 200);
            all_val.extend(f.val.clone());
            let mut prev: Vec<String> = Vec::new();
            for frac in PAPER_FRACTIONS {
                let s = &f.fractions[&format!("{frac}")];
                assert!(prev.iter().all(|c| s.contains(c)), "fraction {frac} does not contain the smaller one");
                assert!(
                    s.len() as f64 >= frac * f.train.len() as f64 - 1e-9
                        && s.len() < (frac * f.train.len() as f64).ceil() as usize + 3
                );
                prev = s.clone();
            }
            assert_eq!(f.fractions["1"], f.train);
            // stratified: each class near its 50 % share, in the fold and in the 10 % subset
            let share = |ids: &[String]| {
                ids.iter().filter(|c| data.iter().any(|i| &i.id == *c && i.class == Some(1))).count() as f64
                    / ids.len() as f64
            };
            assert!((share(&f.val) - 0.5).abs() < 0.1, "{}", share(&f.val));
            assert!((share(&f.fractions["0.1"]) - 0.5).abs() < 0.15, "{}", share(&f.fractions["0.1"]));
        }
        all_val.sort();
        let mut ids: Vec<String> = data.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        assert_eq!(all_val, ids, "every case is validated exactly once");
        assert_eq!(grouped_kfold(&data, 5, 7, &PAPER_FRACTIONS).unwrap(), folds);
        assert_ne!(grouped_kfold(&data, 5, 8, &PAPER_FRACTIONS).unwrap(), folds);
    }

    #[test]
    fn rejects_impossible_requests() {
        assert!(grouped_kfold(&items(4, 2, 0), 5, 0, &[0.5]).is_err());
        assert!(grouped_kfold(&items(20, 1, 0), 5, 0, &[1.5]).is_err());
    }
}
