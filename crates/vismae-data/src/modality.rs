//! Which objects are images for pre-training, and what modality each image is.
//!
//! - DICOM objects are classed by SOP Class UID (PS3.4 Annex B, "Storage Service Class", lists the
//!   storage SOP classes; PS3.6 Annex A registers their UIDs). Dose grids, structure sets, plans and
//!   treatment records, segmentations, registrations, structured reports, key object selections,
//!   presentation states, encapsulated documents, raw data, waveforms and spectroscopy are not
//!   images of a patient for this purpose, even those that carry pixel data (RT Dose, SEG). Objects
//!   without a SOP Class UID are classed by their Modality value instead.
//! - DICOM Modality values (PS3.3 C.7.3.1.1.1, a Code String: upper-case letters, digits, space
//!   and underscore, at most 16 characters) are normalised to the groups VIS-MAE pre-trains on: CT,
//!   MR, PET (PT), NM, XR (CR, DX, DR, MG, RG, PX, IO, XA, RF), US, OT; other valid values are kept;
//!   an invalid value (such as `67\84`) is `unknown`, with a warning naming the file.
//! - Files without a Modality tag get one from what they say or where they are: a BIDS-style name
//!   (`sub-01_T1w.nii.gz` -> MR, `_pet` -> PET, `_ct` -> CT), a JSON sidecar with a `Modality`
//!   field (as dcm2niix writes), an nnU-Net `dataset.json` naming the file's channel ("CT", "T1",
//!   "FLAIR", "ADC", ...), a MetaImage `Modality = MET_MOD_CT` or NRRD `modality:=` header field;
//!   or the user's `--modality MR=FOLDER`, or `--modality MR` for a whole run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How an image's modality was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModalitySource {
    /// `--modality NAME` for the whole run.
    Given,
    /// `--modality NAME=FOLDER` for the files under a folder.
    GivenForFolder,
    /// The DICOM Modality tag.
    DicomTag,
    /// The DICOM SOP class (a file without a Modality tag).
    DicomSopClass,
    /// A BIDS-style file name suffix.
    BidsName,
    /// A JSON sidecar's `Modality` field.
    JsonSidecar,
    /// An nnU-Net `dataset.json` channel name.
    NnunetChannel,
    /// A MetaImage or NRRD header field.
    HeaderField,
    /// Nothing said.
    Unknown,
}

impl std::fmt::Display for ModalitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModalitySource::Given => "--modality",
            ModalitySource::GivenForFolder => "--modality NAME=FOLDER",
            ModalitySource::DicomTag => "DICOM Modality tag",
            ModalitySource::DicomSopClass => "DICOM SOP class",
            ModalitySource::BidsName => "BIDS file name",
            ModalitySource::JsonSidecar => "JSON sidecar",
            ModalitySource::NnunetChannel => "nnU-Net channel name",
            ModalitySource::HeaderField => "MetaImage/NRRD header",
            ModalitySource::Unknown => "not stated",
        })
    }
}

/// Storage SOP classes that are not images of a patient for pre-training, by UID prefix (a prefix
/// ending in `.` covers a family), with their names (PS3.6 Annex A).
const NON_IMAGE_SOP_CLASSES: &[(&str, &str)] = &[
    ("1.2.840.10008.5.1.4.1.1.481.2", "RT Dose Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.4", "RT Beams Treatment Record Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.5", "RT Plan Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.6", "RT Brachy Treatment Record Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.7", "RT Treatment Summary Record Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.8", "RT Ion Plan Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.9", "RT Ion Beams Treatment Record Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.10", "RT Physician Intent Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.11", "RT Segment Annotation Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.12", "RT Radiation Set Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.13", "C-Arm Photon-Electron Radiation Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.14", "Tomotherapeutic Radiation Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.15", "Robotic-Arm Radiation Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.16", "RT Radiation Record Set Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.17", "RT Radiation Salvage Record Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.18", "Tomotherapeutic Radiation Record Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.19", "C-Arm Photon-Electron Radiation Record Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.20", "Robotic Radiation Record Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.21", "RT Radiation Set Delivery Instruction Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.22", "RT Treatment Preparation Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.23", "Enhanced RT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.24", "Enhanced Continuous RT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.25", "RT Patient Position Acquisition Instruction Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.1", "Spatial Registration Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.2", "Spatial Fiducials Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.3", "Deformable Spatial Registration Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.5", "Surface Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.6", "Tractography Results Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.7", "Label Map Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.8", "Height Map Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.67", "Real World Value Mapping Storage"),
    ("1.2.840.10008.5.1.4.1.1.68.", "Surface Scan Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.", "Structured Report / Key Object Selection Storage"),
    ("1.2.840.10008.5.1.4.1.1.11.", "Presentation State Storage"),
    ("1.2.840.10008.5.1.4.1.1.104.", "Encapsulated Document Storage"),
    ("1.2.840.10008.5.1.4.1.1.9.", "Waveform Storage"),
    ("1.2.840.10008.5.1.4.1.1.4.2", "MR Spectroscopy Storage"),
    ("1.2.840.10008.5.1.4.1.1.78.", "Ophthalmic Measurements Storage"),
    ("1.2.840.10008.5.1.4.1.1.79.1", "Macular Grid Thickness and Volume Report Storage"),
    ("1.2.840.10008.5.1.4.1.1.82.1", "Corneal Topography Map Storage"),
    ("1.2.840.10008.5.1.4.1.1.90.1", "Content Assessment Results Storage"),
    ("1.2.840.10008.5.1.4.1.1.91.1", "Microscopy Bulk Simple Annotations Storage"),
    ("1.2.840.10008.5.1.4.1.1.131", "Basic Structured Display Storage"),
    ("1.2.840.10008.5.1.4.1.1.200.", "CT Defined Procedure Protocol / Protocol Approval Storage"),
    ("1.2.840.10008.5.1.4.38.", "Hanging Protocol Storage"),
    ("1.2.840.10008.5.1.4.39.", "Color Palette Storage"),
    ("1.2.840.10008.5.1.4.43.", "Generic Implant Template Storage"),
    ("1.2.840.10008.5.1.4.44.", "Implant Assembly Template Storage"),
    ("1.2.840.10008.5.1.4.45.", "Implant Template Group Storage"),
];

/// The exact raw-data class (a prefix match would take the `66.x` classes too).
const RAW_DATA: &str = "1.2.840.10008.5.1.4.1.1.66";

/// Modality values of non-image objects, for objects without a SOP Class UID.
const NON_IMAGE_MODALITIES: &[&str] = &[
    "RTDOSE",
    "RTSTRUCT",
    "RTPLAN",
    "RTRECORD",
    "RTINTENT",
    "RTRAD",
    "RTSEGANN",
    "SEG",
    "SR",
    "KO",
    "PR",
    "DOC",
    "REG",
    "FID",
    "RWV",
    "PLAN",
    "ECG",
    "HD",
    "RESP",
    "AU",
    "EPS",
    "CTPROTOCOL",
    "ASMT",
    "TEXTUREMAP",
];

/// The name of a non-image storage SOP class, or `None` for image classes (and unknown UIDs).
pub fn non_image_sop_class(uid: &str) -> Option<&'static str> {
    let uid = uid.trim().trim_end_matches('\0');
    if uid == RAW_DATA {
        return Some("Raw Data Storage");
    }
    NON_IMAGE_SOP_CLASSES.iter().find_map(|(prefix, name)| {
        let hit = if prefix.ends_with('.') {
            uid.starts_with(prefix)
        } else {
            // a whole UID, or a family whose members extend it by `.N`
            uid == *prefix || (uid.starts_with(prefix) && uid[prefix.len()..].starts_with('.'))
        };
        hit.then_some(*name)
    })
}

/// The modality of the common image storage SOP classes (PS3.6 Annex A), for DICOM files without
/// a Modality tag.
pub fn from_sop_class(uid: &str) -> Option<&'static str> {
    let uid = uid.trim().trim_end_matches('\0');
    let tail = uid.strip_prefix("1.2.840.10008.5.1.4.1.1.")?;
    Some(match tail {
        "2" | "2.1" | "2.2" => "CT",
        "4" | "4.1" | "4.3" | "4.4" => "MR",
        "128" | "128.1" | "130" => "PET",
        "20" => "NM",
        "6.1" | "6.2" | "3.1" => "US",
        "1" | "1.1" | "1.1.1" | "1.2" | "1.2.1" | "1.3" | "1.3.1" | "12.1" | "12.1.1" | "12.2" | "12.2.1" => "XR",
        t if t == "7" || t.starts_with("7.") => "OT",
        _ => return None,
    })
}

/// Why a DICOM object is not an image for pre-training (SOP class first, then Modality), or
/// `None` when it is one.
pub fn non_image_reason(sop_class: Option<&str>, modality: Option<&str>) -> Option<String> {
    if let Some(uid) = sop_class.filter(|u| !u.trim().is_empty()) {
        return non_image_sop_class(uid).map(|name| format!("{name} ({}): not an image (PS3.4 Annex B)", uid.trim()));
    }
    let m = modality?.trim().to_ascii_uppercase();
    NON_IMAGE_MODALITIES
        .contains(&m.as_str())
        .then(|| format!("Modality {m} without a SOP Class UID: not an image (PS3.3 C.7.3.1.1.1)"))
}

/// Whether `s` is a valid DICOM Code String value of one item (PS3.5 6.2: upper-case letters,
/// digits, space and underscore, at most 16 characters).
fn is_code_string(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 16
        && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ' || c == '_')
}

/// Normalises a DICOM Modality value to the dataset's modality groups; `Err` with the reason when
/// the value is not a valid Modality.
pub fn normalise_dicom(value: &str) -> Result<String, String> {
    let v = value.trim().trim_end_matches('\0').trim();
    if !is_code_string(v) {
        return Err(format!("Modality {value:?} is not a valid DICOM code string"));
    }
    Ok(group(v).unwrap_or(v).to_string())
}

/// The group of a modality name (DICOM values and the common words people use).
fn group(v: &str) -> Option<&'static str> {
    Some(match v.to_ascii_uppercase().as_str() {
        "CT" | "CBCT" => "CT",
        "MR" | "MRI" => "MR",
        "PT" | "PET" => "PET",
        "NM" | "SPECT" => "NM",
        "CR" | "DX" | "DR" | "MG" | "RG" | "PX" | "IO" | "XA" | "RF" | "XR" | "X-RAY" | "XRAY" => "XR",
        "US" | "IVUS" => "US",
        "OT" => "OT",
        _ => return None,
    })
}

/// Normalises a modality name given by a user (`--modality`): the groups, else the value upper-cased.
pub fn normalise_given(value: &str) -> String {
    let v = value.trim();
    group(v).map(str::to_string).unwrap_or_else(|| v.to_ascii_uppercase())
}

/// The modality a BIDS-style file name states (`sub-01_ses-1_T1w.nii.gz` -> MR).
pub fn from_bids_name(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let stem = name.split('.').next()?;
    let suffix = stem.rsplit('_').next()?;
    if !stem.contains('_') {
        return None;
    }
    const MR: &[&str] = &[
        "t1w",
        "t2w",
        "pdw",
        "t2starw",
        "flair",
        "inplanet1",
        "inplanet2",
        "pdt2",
        "angio",
        "t1map",
        "t2map",
        "t2starmap",
        "r1map",
        "r2map",
        "r2starmap",
        "pdmap",
        "mtrmap",
        "mtsat",
        "uniti",
        "unit1",
        "t1rho",
        "mwfmap",
        "mtvmap",
        "pdt2map",
        "chimap",
        "s0map",
        "m0map",
        "bold",
        "cbv",
        "phase",
        "dwi",
        "sbref",
        "epi",
        "fieldmap",
        "magnitude",
        "magnitude1",
        "magnitude2",
        "phasediff",
        "phase1",
        "phase2",
        "asl",
        "m0scan",
        "mese",
        "megre",
        "irt1",
        "mp2rage",
        "vfa",
        "mpm",
        "mts",
        "mtr",
        "tb1tfl",
        "tb1rfm",
        "rb1cor",
        "tb1dam",
        "tb1epi",
        "tb1srge",
        "t2starw",
        "swi",
        "minip",
    ];
    if MR.contains(&suffix) {
        return Some("MR");
    }
    match suffix {
        "pet" => Some("PET"),
        "ct" => Some("CT"),
        _ => None,
    }
}

/// The JSON sidecar of an image file: the same name with `.json` (BIDS, dcm2niix).
fn sidecar(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    for ext in [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png", ".jpg", ".jpeg", ".tif", ".tiff"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return Some(path.with_file_name(format!("{stem}.json")));
        }
    }
    None
}

/// The `Modality` field of an image's JSON sidecar, if it has one.
pub fn from_sidecar(path: &Path) -> Option<String> {
    let side = sidecar(path).filter(|p| p.is_file())?;
    let text = std::fs::read_to_string(side).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let m = v.get("Modality").or_else(|| v.get("modality"))?.as_str()?;
    Some(group(m).map(str::to_string).unwrap_or_else(|| m.trim().to_ascii_uppercase()))
}

/// The modality an nnU-Net raw folder's `dataset.json` gives a `CASE_XXXX.ext` file in
/// `imagesTr/` or `imagesTs/` (channel XXXX's name: "CT" -> CT; T1, T2, FLAIR, ADC, DWI, PD, ...
/// -> MR; PET -> PET).
pub fn from_nnunet(path: &Path) -> Option<&'static str> {
    let dir = path.parent()?;
    let folder = dir.file_name()?.to_string_lossy();
    if !(folder == "imagesTr" || folder == "imagesTs") {
        return None;
    }
    let meta = dir.parent()?.join("dataset.json");
    let text = std::fs::read_to_string(meta).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stem = name.split('.').next()?;
    let channel: usize = stem.rsplit_once('_')?.1.parse().ok()?;
    let names = v.get("channel_names").or_else(|| v.get("modality"))?;
    let ch = names.get(channel.to_string())?.as_str()?.trim().to_ascii_uppercase();
    let ch = ch.replace(['-', ' '], "");
    Some(match ch.as_str() {
        "CT" | "CTA" | "NCCT" | "CECT" => "CT",
        "PET" | "PT" | "SUV" => "PET",
        "US" | "ULTRASOUND" => "US",
        "XR" | "XRAY" | "CR" | "DX" => "XR",
        c if [
            "T1", "T2", "FLAIR", "ADC", "DWI", "PD", "SWI", "MR", "MRI", "T1C", "T1CE", "T1GD", "T2W", "T1W", "CINE",
            "LGE", "BOLD", "HBV", "DCE", "T2STAR",
        ]
        .iter()
        .any(|p| c == *p || c.starts_with(p)) =>
        {
            "MR"
        }
        _ => return None,
    })
}

/// The modality a MetaImage (`Modality = MET_MOD_CT`) or NRRD (`modality:=CT`) header states.
pub fn from_header(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path).ok()?.take(4096).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() && text.starts_with("NRRD") {
            break; // end of an NRRD header
        }
        let (k, v) = if let Some((k, v)) = l.split_once(":=") {
            (k, v)
        } else if let Some((k, v)) = l.split_once('=') {
            (k, v)
        } else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("modality") {
            let v = v.trim();
            let v = v.strip_prefix("MET_MOD_").unwrap_or(v);
            if v.eq_ignore_ascii_case("OTHER") || v.eq_ignore_ascii_case("UNKNOWN") || v.is_empty() {
                return None;
            }
            return Some(group(v).map(str::to_string).unwrap_or_else(|| v.to_ascii_uppercase()));
        }
        if k.trim().eq_ignore_ascii_case("ElementDataFile") {
            break; // end of a MetaImage header
        }
    }
    None
}

/// What the user said about modalities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModalityRules {
    /// `--modality NAME`: every image of the run.
    pub all: Option<String>,
    /// `--modality NAME=PATH`: files at or under PATH (the longest matching path wins).
    pub folders: Vec<(PathBuf, String)>,
}

impl ModalityRules {
    /// Parses `--modality` values: `auto`, `NAME`, or `NAME=PATH` (paths made absolute).
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut rules = ModalityRules::default();
        for v in values {
            match v.split_once('=') {
                Some((name, path)) => {
                    let p = std::path::absolute(path.trim()).map_err(|e| format!("--modality {v}: {e}"))?;
                    let p = std::fs::canonicalize(&p).unwrap_or(p);
                    rules.folders.push((p, normalise_given(name)));
                }
                None if v.eq_ignore_ascii_case("auto") => {}
                None => {
                    if rules.all.is_some() {
                        return Err(format!("--modality {v}: one modality for the whole run was given already"));
                    }
                    rules.all = Some(normalise_given(v));
                }
            }
        }
        Ok(rules)
    }

    /// The modality the user gave `path`, if any.
    pub fn given(&self, path: &Path) -> Option<(String, ModalitySource)> {
        let folder = self
            .folders
            .iter()
            .filter(|(p, _)| path.starts_with(p))
            .max_by_key(|(p, _)| p.components().count())
            .map(|(_, m)| (m.clone(), ModalitySource::GivenForFolder));
        folder.or_else(|| self.all.clone().map(|m| (m, ModalitySource::Given)))
    }
}

/// The decided modality of one file's images, how, and a warning when the file said something
/// that is not a modality.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The modality group, or `unknown`.
    pub modality: String,
    /// How it was decided.
    pub source: ModalitySource,
    /// A warning naming the file (an invalid DICOM Modality value).
    pub warning: Option<String>,
}

/// What a DICOM file says about its modality.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DicomFacts<'a> {
    /// The Modality value.
    pub modality: Option<&'a str>,
    /// The SOP Class UID.
    pub sop_class: Option<&'a str>,
}

/// Decides the modality of the images of `path`: the user's rules first, then what the file says
/// (a DICOM file's Modality tag, else its SOP class), then its header, sidecar, nnU-Net folder or
/// BIDS name.
pub fn decide(path: &Path, dicom: Option<DicomFacts>, rules: &ModalityRules) -> Decision {
    if let Some((modality, source)) = rules.given(path) {
        return Decision { modality, source, warning: None };
    }
    let dicom_modality = dicom.and_then(|d| d.modality);
    if dicom_modality.is_none()
        && let Some(m) = dicom.and_then(|d| d.sop_class).and_then(from_sop_class)
    {
        return Decision { modality: m.into(), source: ModalitySource::DicomSopClass, warning: None };
    }
    if let Some(v) = dicom_modality {
        return match normalise_dicom(v) {
            Ok(m) => Decision { modality: m, source: ModalitySource::DicomTag, warning: None },
            Err(why) => Decision {
                modality: "unknown".into(),
                source: ModalitySource::Unknown,
                warning: Some(format!("{}: {why}; recorded as unknown", path.display())),
            },
        };
    }
    let found = from_header(path)
        .map(|m| (m, ModalitySource::HeaderField))
        .or_else(|| from_sidecar(path).map(|m| (m, ModalitySource::JsonSidecar)))
        .or_else(|| from_nnunet(path).map(|m| (m.to_string(), ModalitySource::NnunetChannel)))
        .or_else(|| from_bids_name(path).map(|m| (m.to_string(), ModalitySource::BidsName)));
    match found {
        Some((modality, source)) => Decision { modality, source, warning: None },
        None => Decision { modality: "unknown".into(), source: ModalitySource::Unknown, warning: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sop_classes_decide_what_is_an_image() {
        assert_eq!(non_image_sop_class("1.2.840.10008.5.1.4.1.1.481.2"), Some("RT Dose Storage"));
        assert_eq!(non_image_sop_class("1.2.840.10008.5.1.4.1.1.66.4\0"), Some("Segmentation Storage"));
        assert_eq!(
            non_image_sop_class("1.2.840.10008.5.1.4.1.1.88.22"),
            Some("Structured Report / Key Object Selection Storage")
        );
        assert_eq!(non_image_sop_class("1.2.840.10008.5.1.4.1.1.66"), Some("Raw Data Storage"));
        // images: CT, MR, Enhanced CT, RT Image, Secondary Capture, US, digital X-ray, PET
        for uid in [
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.840.10008.5.1.4.1.1.4",
            "1.2.840.10008.5.1.4.1.1.2.1",
            "1.2.840.10008.5.1.4.1.1.481.1",
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.840.10008.5.1.4.1.1.6.1",
            "1.2.840.10008.5.1.4.1.1.1.1",
            "1.2.840.10008.5.1.4.1.1.128",
        ] {
            assert_eq!(non_image_sop_class(uid), None, "{uid}");
        }
        // 481.20 is a record, but 481.2 must not take it for a dose (nor 481.1 for 481.10)
        assert_eq!(non_image_sop_class("1.2.840.10008.5.1.4.1.1.481.20"), Some("Robotic Radiation Record Storage"));
        assert!(non_image_reason(None, Some("RTSTRUCT")).is_some_and(|r| r.contains("RTSTRUCT")));
        assert!(non_image_reason(Some("1.2.840.10008.5.1.4.1.1.2"), Some("RTDOSE")).is_none());
    }

    #[test]
    fn modality_values_normalise_and_invalid_ones_are_unknown() {
        assert_eq!(normalise_dicom("PT").as_deref(), Ok("PET"));
        assert_eq!(normalise_dicom("NM").as_deref(), Ok("NM"));
        for xr in ["CR", "DX", "MG", "XA"] {
            assert_eq!(normalise_dicom(xr).as_deref(), Ok("XR"));
        }
        assert_eq!(normalise_dicom("SM").as_deref(), Ok("SM"));
        assert!(normalise_dicom("67\\84").is_err());
        assert!(normalise_dicom("mr").is_err());
        let facts = DicomFacts { modality: Some("67\\84"), sop_class: None };
        let d = decide(Path::new("/x/bad.dcm"), Some(facts), &ModalityRules::default());
        assert_eq!((d.modality.as_str(), d.source), ("unknown", ModalitySource::Unknown));
        assert!(d.warning.is_some_and(|w| w.contains("bad.dcm") && w.contains("67")));
        let sc = DicomFacts { modality: None, sop_class: Some("1.2.840.10008.5.1.4.1.1.7") };
        assert_eq!(decide(Path::new("/x/sc.dcm"), Some(sc), &ModalityRules::default()).modality, "OT");
        let ct = DicomFacts { modality: None, sop_class: Some("1.2.840.10008.5.1.4.1.1.2") };
        assert_eq!(
            decide(Path::new("/x/ct.dcm"), Some(ct), &ModalityRules::default()).source,
            ModalitySource::DicomSopClass
        );
    }

    #[test]
    fn names_sidecars_nnunet_and_headers_say_the_modality() {
        assert_eq!(from_bids_name(Path::new("sub-01_ses-2_T1w.nii.gz")), Some("MR"));
        assert_eq!(from_bids_name(Path::new("sub-01_task-rest_bold.nii")), Some("MR"));
        assert_eq!(from_bids_name(Path::new("sub-01_pet.nii.gz")), Some("PET"));
        assert_eq!(from_bids_name(Path::new("anatomical.nii")), None);
        let dir = std::env::temp_dir().join(format!("vismae-modality-{}", std::process::id()));
        let images = dir.join("Dataset001_X/imagesTr");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::write(dir.join("Dataset001_X/dataset.json"), r#"{"channel_names": {"0": "CT", "1": "T2"}}"#).unwrap();
        assert_eq!(from_nnunet(&images.join("case_007_0000.nii.gz")), Some("CT"));
        assert_eq!(from_nnunet(&images.join("case_007_0001.nii.gz")), Some("MR"));
        std::fs::write(dir.join("scan.json"), r#"{"Modality": "MR", "EchoTime": 0.03}"#).unwrap();
        assert_eq!(from_sidecar(&dir.join("scan.nii.gz")).as_deref(), Some("MR"));
        std::fs::write(
            dir.join("a.mha"),
            "ObjectType = Image\nNDims = 2\nModality = MET_MOD_CT\nElementDataFile = LOCAL\n",
        )
        .unwrap();
        assert_eq!(from_header(&dir.join("a.mha")).as_deref(), Some("CT"));
        std::fs::write(dir.join("b.nrrd"), "NRRD0004\ntype: short\nmodality:=MR\n\n").unwrap();
        assert_eq!(from_header(&dir.join("b.nrrd")).as_deref(), Some("MR"));
        let rules = ModalityRules::parse(&[format!("US={}", dir.display())]).unwrap();
        let d = decide(&dir.join("a.mha"), None, &rules);
        assert_eq!((d.modality.as_str(), d.source), ("US", ModalitySource::GivenForFolder));
        let d = decide(&dir.join("a.mha"), None, &ModalityRules::default());
        assert_eq!((d.modality.as_str(), d.source), ("CT", ModalitySource::HeaderField));
        let _ = std::fs::remove_dir_all(dir);
    }
}
