//! The five labelled layouts: nnU-Net raw folders, datalist JSON, the reference CSVs (and
//! ChestX-ray14's multi-label CSV), and class-per-folder trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{LabelledSet, Layout, Sample, Target, bad, is_image_file, read_json};
use crate::error::{DataError, Reason};

pub(crate) fn nnunet(root: &Path) -> Result<LabelledSet, DataError> {
    let meta_path = root.join("dataset.json");
    let meta = read_json(&meta_path)?;
    let ending = meta["file_ending"].as_str().unwrap_or(".nii.gz").to_string();
    let mut channel_names: Vec<(usize, String)> = meta["channel_names"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.parse().unwrap_or(usize::MAX), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    channel_names.sort();
    let channel_names: Vec<String> =
        if channel_names.is_empty() { vec![String::new()] } else { channel_names.into_iter().map(|c| c.1).collect() };
    let channels = channel_names.len();
    let mut classes: Vec<(i64, String)> = match meta["labels"].as_object() {
        Some(m) => m.iter().filter_map(|(name, v)| v.as_i64().map(|i| (i, name.clone()))).collect(),
        None => return Err(bad(&meta_path, "dataset.json has no \"labels\" mapping")),
    };
    classes.sort();
    if classes.iter().enumerate().any(|(i, (v, _))| *v != i as i64) {
        return Err(bad(
            &meta_path,
            format!("labels must be 0..{} without gaps (region-based labels are not supported)", classes.len()),
        ));
    }
    let images = root.join("imagesTr");
    let labels = root.join("labelsTr");
    let mut cases: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&images).map_err(|e| DataError::new(&images, Reason::Io, e.to_string()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(&ending) else { continue };
        let Some((case, ch)) = stem.rsplit_once('_') else { continue };
        if ch.len() == 4 && ch.chars().all(|c| c.is_ascii_digit()) {
            cases.entry(case.to_string()).or_default().push(entry.path());
        }
    }
    let mut samples = Vec::new();
    for (case, mut files) in cases {
        files.sort();
        if files.len() != channels {
            return Err(bad(
                &images,
                format!("case {case} has {} channel file(s), dataset.json names {channels}", files.len()),
            ));
        }
        let label = labels.join(format!("{case}{ending}"));
        if !label.is_file() {
            return Err(bad(&label, format!("case {case} has no label file")));
        }
        samples.push(Sample { id: case.clone(), group: case, images: files, target: Target::Mask(label) });
    }
    if samples.is_empty() {
        return Err(bad(&images, format!("no CASE_0000{ending} files found")));
    }
    Ok(LabelledSet {
        layout: Layout::NnUnet,
        classes: classes.into_iter().map(|c| c.1).collect(),
        segmentation: true,
        multi_label: false,
        channel_names,
        samples,
    })
}

fn case_id(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for ext in [".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff", ".mha", ".nrrd"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s.to_string();
        }
    }
    name
}

pub(crate) fn datalist(path: &Path) -> Result<LabelledSet, DataError> {
    let v = read_json(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let list = v["training"].as_array().ok_or_else(|| bad(path, "datalist has no \"training\" list"))?;
    let mut samples = Vec::new();
    let mut max_class = 0usize;
    let mut seg = None;
    for (i, item) in list.iter().enumerate() {
        let image = item["image"].as_str().ok_or_else(|| bad(path, format!("training[{i}] has no \"image\"")))?;
        let image = base.join(image);
        let id = item["id"].as_str().map(str::to_string).unwrap_or_else(|| case_id(&image));
        let group = ["patient_id", "patient", "group"]
            .iter()
            .find_map(|k| item[*k].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| id.clone());
        let target = match &item["label"] {
            serde_json::Value::String(s) => Target::Mask(base.join(s)),
            serde_json::Value::Number(n) => {
                let c = n.as_u64().ok_or_else(|| bad(path, format!("training[{i}]: label {n} is not a class index")))?
                    as usize;
                max_class = max_class.max(c);
                Target::Class(c)
            }
            serde_json::Value::Array(a) => {
                // a one-hot / multi-hot vector
                let on: Vec<usize> =
                    a.iter().enumerate().filter(|(_, x)| x.as_f64().unwrap_or(0.0) > 0.5).map(|(k, _)| k).collect();
                max_class = max_class.max(a.len().saturating_sub(1));
                Target::Labels(on)
            }
            _ => return Err(bad(path, format!("training[{i}] has no usable \"label\""))),
        };
        let is_seg = matches!(target, Target::Mask(_));
        if *seg.get_or_insert(is_seg) != is_seg {
            return Err(bad(path, format!("training[{i}] mixes label maps and class labels")));
        }
        samples.push(Sample { id, group, images: vec![image], target });
    }
    let segmentation = seg.unwrap_or(true);
    let multi_label = samples.iter().any(|s| matches!(s.target, Target::Labels(_)));
    let classes = match v["labels"].as_object() {
        Some(m) => {
            let mut c: Vec<(usize, String)> =
                m.iter().filter_map(|(k, name)| Some((k.parse().ok()?, name.as_str()?.to_string()))).collect();
            c.sort();
            c.into_iter().map(|x| x.1).collect()
        }
        None => (0..=max_class).map(|c| c.to_string()).collect(),
    };
    Ok(LabelledSet {
        layout: Layout::Datalist,
        classes,
        segmentation,
        multi_label,
        channel_names: vec![String::new()],
        samples,
    })
}

/// Minimal CSV: comma-separated, double quotes around fields that contain commas.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = Vec::new();
            let mut cur = String::new();
            let mut quoted = false;
            for ch in line.chars() {
                match ch {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                    _ => cur.push(ch),
                }
            }
            fields.push(cur);
            fields.into_iter().map(|f| f.trim().to_string()).collect()
        })
        .collect()
}

/// The reference code's label conversion: `positive`/`yes`/`malignant` -> 1, other words -> 0,
/// numbers as they are.
pub fn reference_label(s: &str) -> Option<usize> {
    if let Ok(n) = s.parse::<f64>() {
        return (n >= 0.0 && n.fract() == 0.0).then_some(n as usize);
    }
    Some(usize::from(matches!(s.to_ascii_lowercase().as_str(), "positive" | "yes" | "malignant")))
}

pub(crate) fn csv(path: &Path) -> Result<LabelledSet, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
    let rows = parse_csv(&text);
    let Some((header, rows)) = rows.split_first() else { return Err(bad(path, "the CSV is empty")) };
    let col = |names: &[&str]| header.iter().position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)));
    let base = path.parent().unwrap_or(Path::new("."));
    let group_col = col(&["patient_id", "patient id", "patient", "case_id", "group"]);
    if let (Some(ic), Some(fc)) = (col(&["image index"]), col(&["finding labels"])) {
        // ChestX-ray14: images beside the CSV or in images/
        let dir = if base.join("images").is_dir() { base.join("images") } else { base.to_path_buf() };
        let mut names: Vec<String> = Vec::new();
        let mut samples = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            let (Some(img), Some(findings)) = (row.get(ic), row.get(fc)) else {
                return Err(bad(path, format!("row {} has too few columns", r + 2)));
            };
            let mut on = Vec::new();
            for f in
                findings.split('|').map(str::trim).filter(|f| !f.is_empty() && !f.eq_ignore_ascii_case("No Finding"))
            {
                let k = match names.iter().position(|n| n == f) {
                    Some(k) => k,
                    None => {
                        names.push(f.to_string());
                        names.len() - 1
                    }
                };
                on.push(k);
            }
            let id = case_id(Path::new(img));
            let group = group_col.and_then(|g| row.get(g)).cloned().unwrap_or_else(|| id.clone());
            samples.push(Sample { id, group, images: vec![dir.join(img)], target: Target::Labels(on) });
        }
        // class indices in name order, so they do not depend on row order
        let mut sorted = names.clone();
        sorted.sort();
        let remap: Vec<usize> = names.iter().map(|n| sorted.iter().position(|s| s == n).unwrap_or(0)).collect();
        for s in &mut samples {
            if let Target::Labels(on) = &mut s.target {
                on.iter_mut().for_each(|k| *k = remap[*k]);
                on.sort();
            }
        }
        return Ok(LabelledSet {
            layout: Layout::MultiLabelCsv,
            classes: sorted,
            segmentation: false,
            multi_label: true,
            channel_names: vec![String::new()],
            samples,
        });
    }
    let ic = col(&["image"]).ok_or_else(|| {
        bad(path, "the CSV needs an `image` column (with `mask` or `label`), or `Image Index` and `Finding Labels`")
    })?;
    let (target_col, segmentation) = match (col(&["mask"]), col(&["label"])) {
        (Some(m), _) => (m, true),
        (None, Some(l)) => (l, false),
        _ => return Err(bad(path, "the CSV needs a `mask` or a `label` column")),
    };
    let mut samples = Vec::new();
    let mut max_class = 0;
    for (r, row) in rows.iter().enumerate() {
        let (Some(img), Some(t)) = (row.get(ic), row.get(target_col)) else {
            return Err(bad(path, format!("row {} has too few columns", r + 2)));
        };
        let image = base.join(img);
        let id = case_id(&image);
        let target = if segmentation {
            Target::Mask(base.join(t))
        } else {
            let c =
                reference_label(t).ok_or_else(|| bad(path, format!("row {}: label {t:?} is not a class", r + 2)))?;
            max_class = max_class.max(c);
            Target::Class(c)
        };
        let group = group_col.and_then(|g| row.get(g)).cloned().unwrap_or_else(|| id.clone());
        samples.push(Sample { id, group, images: vec![image], target });
    }
    let classes = if segmentation { Vec::new() } else { (0..=max_class.max(1)).map(|c| c.to_string()).collect() };
    Ok(LabelledSet {
        layout: Layout::Csv,
        classes,
        segmentation,
        multi_label: false,
        channel_names: vec![String::new()],
        samples,
    })
}

pub(crate) fn class_folders(root: &Path) -> Result<LabelledSet, DataError> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| DataError::new(root, Reason::Io, e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    classes.sort();
    if classes.len() < 2 {
        return Err(bad(
            root,
            "not a labelled set: a folder of class folders needs at least two sub-folders (or use an nnU-Net folder, a datalist .json or a .csv)",
        ));
    }
    let mut samples = Vec::new();
    for (k, dir) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DataError::new(dir, Reason::Io, e.to_string()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        files.sort();
        for f in files {
            let id = format!(
                "{}/{}",
                dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                case_id(&f)
            );
            samples.push(Sample { id: id.clone(), group: id, images: vec![f], target: Target::Class(k) });
        }
    }
    let names =
        classes.iter().map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    Ok(LabelledSet {
        layout: Layout::ClassFolders,
        classes: names,
        segmentation: false,
        multi_label: false,
        channel_names: vec![String::new()],
        samples,
    })
}
