//! `vismae predict` for fine-tuned runs, one case at a time. A case is its image files (one per
//! channel, as the run was trained: nnU-Net's `_0000`, `_0001`, ...) or a folder holding a DICOM
//! series. Every 2-D image (a volume's slices along the run's plane, a file's frames) is prepared
//! by the run's [`vismae_run::Preprocess`] exactly as in training and validation, predicted by
//! [`crate::infer`], and brought back to its own size.
//!
//! Segmentation writes, for 2-D files, PNG masks named like the case (pixel = class); for volumes a
//! NIfTI label map with the input's geometry: a NIfTI input's header, a DICOM series' patient-space
//! affine, MHA/NRRD spacing. `--overlay` adds colour overlays; `--probabilities` the softmax
//! probabilities (a 16-bit PNG per class, or a 4-D float NIfTI with one frame per class).
//! Classification gives one probability row per case.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use vismae_data::prep::{Planes, native_planes, planes, read_raw};
use vismae_data::raster::Raster;
use vismae_data::series::{Series, affine_from, group_series};
use vismae_data::source::{Format, SliceOptions, Source};
use vismae_data::volume::{Plane, Volume, write_nifti_affine, write_nifti_like};
use vismae_data::{DataError, Reason};
use vismae_run::{Channels, Preprocess, Tta};

use crate::error::{Result, TrainError};
use crate::infer::{
    ClsNet, SegNet, SlidingWindow, argmax_labels, labels_to_size, seg_probabilities_mean, sliding_probabilities,
};

/// What `predict` writes besides the masks, and how it predicts.
#[derive(Clone, Copy, Debug, Default)]
pub struct PredictOptions {
    /// Colour overlays.
    pub overlay: bool,
    /// Class probabilities.
    pub probabilities: bool,
    /// Test-time augmentation of segmentation; `None`: as the first run was trained
    /// ([`Tta::for_training`]). Validation and studies score with `Some(Tta::Off)`, so that a
    /// run's logged Dice is what `predict --tta off` + `evaluate` give.
    pub tta: Option<Tta>,
    /// Also write a DICOM SEG (`NAME.seg.dcm`) for each input that is a DICOM series.
    pub dicom_seg: bool,
    /// Patch-mode runs: the sliding window's overlap instead of the run's.
    pub overlap: Option<f64>,
    /// Patch-mode runs: Gaussian importance weighting or not, instead of the run's.
    pub gaussian: Option<bool>,
}

/// A file's name without its image extension (`case_0000.nii.gz` -> `case_0000`).
pub fn stem(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    for ext in [".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".mha", ".mhd", ".nrrd"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s.to_string();
        }
    }
    name
}

/// Groups input files into cases of `channels` files by nnU-Net's naming (`CASE_0000.ext`,
/// `CASE_0001.ext`, ...) when a network takes several files per case; otherwise one file (or
/// folder) per case. Returns `(case name, files)`; a case missing a channel is an error.
pub fn group_inputs(inputs: &[PathBuf], channels: usize) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if channels <= 1 {
        return Ok(inputs.iter().map(|p| (stem(p), vec![p.clone()])).collect());
    }
    let mut cases: std::collections::BTreeMap<String, Vec<(usize, PathBuf)>> = Default::default();
    for p in inputs {
        let s = stem(p);
        let parsed = s.rsplit_once('_').and_then(|(c, k)| Some((c.to_string(), k.parse::<usize>().ok()?)));
        let Some((case, k)) = parsed.filter(|(_, k)| *k < channels) else {
            return Err(TrainError::invalid(format!(
                "{}: the model takes {channels} image files per case, named CASE_0000, CASE_0001, ... (nnU-Net's layout)",
                p.display()
            )));
        };
        cases.entry(case).or_default().push((k, p.clone()));
    }
    cases
        .into_iter()
        .map(|(case, mut files)| {
            files.sort();
            if files.iter().map(|f| f.0).ne(0..channels) {
                return Err(TrainError::invalid(format!(
                    "case {case}: needs channels 0..{channels}, has {:?}",
                    files.iter().map(|f| f.0).collect::<Vec<_>>()
                )));
            }
            Ok((case, files.into_iter().map(|f| f.1).collect()))
        })
        .collect()
}

/// Where a volume's outputs take their geometry from.
enum Geometry {
    /// A NIfTI file whose header is copied.
    Template(PathBuf),
    /// An affine (DICOM series), or the spacing alone when `None`.
    Affine(Option<[[f64; 4]; 3]>),
}

/// What a DICOM SEG of a prediction says: segment names (labels 1, 2, ...) and the algorithm.
struct SegInfo {
    classes: Vec<String>,
    algorithm: vismae_data::annotations::seg::SegAlgorithm,
}

/// One case read for prediction: its 2-D images (each the rasters of its files) and how they sit.
struct CaseImages {
    images: Vec<Vec<Raster>>,
    layout: Layout,
    /// The DICOM series it was read from, if it was.
    series: Option<Series>,
}

enum Layout {
    /// Slices of a volume along a plane.
    Volume { dims: [usize; 3], spacing: [f64; 3], plane: Plane, geometry: Geometry },
    /// Frames of 2-D files.
    Frames,
}

fn read_volume_case(files: &[PathBuf], spec: &Preprocess, plane: Plane) -> Result<CaseImages> {
    let opts = SliceOptions { planes: vec![plane], stride: 1, skip_empty: false };
    let srcs = files.iter().map(|f| Source::open(f, &opts)).collect::<std::result::Result<Vec<_>, _>>()?;
    let (dims, spacing, format) = match &srcs[0] {
        Source::Volume { volume, format, .. } => (volume.dims, volume.spacing, *format),
        _ => unreachable!("checked by the caller"),
    };
    for (f, s) in files.iter().zip(&srcs) {
        if let Source::Volume { volume, .. } = s
            && volume.dims[..3] != dims[..3]
        {
            return Err(TrainError::invalid(format!(
                "{}: {:?} voxels, the case's first file {:?}",
                f.display(),
                &volume.dims[..3],
                &dims[..3]
            )));
        }
    }
    let n = match plane {
        Plane::Axial => dims[2],
        Plane::Coronal => dims[1],
        Plane::Sagittal => dims[0],
    };
    // the first time point of 4-D volumes
    let mut images = Vec::with_capacity(n);
    for k in 0..n {
        let mut per_file = Vec::with_capacity(srcs.len());
        for (f, s) in files.iter().zip(&srcs) {
            let raw =
                s.image(k, &opts)?.ok_or_else(|| DataError::new(f, Reason::Empty, format!("slice {k} is empty")))?;
            per_file.push(read_raw(&raw, spec));
        }
        images.push(per_file);
    }
    let geometry = if format == Format::Nifti { Geometry::Template(files[0].clone()) } else { Geometry::Affine(None) };
    Ok(CaseImages {
        images,
        layout: Layout::Volume { dims: [dims[0], dims[1], dims[2]], spacing, plane, geometry },
        series: None,
    })
}

fn read_series(series: &Series, spec: &Preprocess, plane: Plane) -> Result<CaseImages> {
    let opts = SliceOptions { skip_empty: false, ..Default::default() };
    let mut rasters = Vec::with_capacity(series.files.len());
    let mut metas = Vec::new();
    for f in &series.files {
        let src = Source::open(f, &opts)?;
        let raw = src.image(0, &opts)?.ok_or_else(|| DataError::new(f, Reason::Empty, "empty image"))?;
        if let Some(m) = &raw.dicom {
            metas.push(m.clone());
        }
        let r = read_raw(&raw, spec);
        if let Some(first) = rasters.first().map(|r: &Raster| (r.width, r.height))
            && first != (r.width, r.height)
        {
            return Err(TrainError::invalid(format!(
                "{}: series {} has slices of {}x{} and {}x{}",
                f.display(),
                series.uid,
                first.0,
                first.1,
                r.width,
                r.height
            )));
        }
        rasters.push(r);
    }
    let (w, h) = (rasters[0].width, rasters[0].height);
    let nz = rasters.len();
    let affine = match (metas.first(), metas.last()) {
        (Some(a), Some(b)) => affine_from(a, b, nz),
        _ => None,
    };
    let px = metas.first().and_then(|m| m.spacing).unwrap_or((1.0, 1.0));
    let locs: Vec<f64> = series.locations.iter().flatten().copied().collect();
    let dz = if locs.len() >= 2 { ((locs[locs.len() - 1] - locs[0]) / (locs.len() - 1) as f64).abs() } else { 1.0 };
    let spacing = [px.1, px.0, if dz > 0.0 { dz } else { 1.0 }];
    if plane == Plane::Axial {
        // the files are the axial slices, as the scanner shows them
        let images = rasters.into_iter().map(|r| vec![r]).collect();
        return Ok(CaseImages {
            images,
            layout: Layout::Volume { dims: [w, h, nz], spacing, plane, geometry: Geometry::Affine(affine) },
            series: Some(series.clone()),
        });
    }
    // another plane: the stack as a volume (rows stored bottom-up), sliced along it
    let c = rasters[0].channels;
    let mut vol = Volume { dims: [w, h, nz, 1], spacing, data: vec![0.0; w * h * nz] };
    for (k, r) in rasters.iter().enumerate() {
        let grey = if c == 1 { r.clone() } else { r.to_grey() };
        vol.put_slice(Plane::Axial, k, 0, &grey);
    }
    let images = (0..vol.num_slices(plane)).map(|k| vec![vol.slice(plane, k, 0)]).collect();
    Ok(CaseImages {
        images,
        layout: Layout::Volume { dims: [w, h, nz], spacing, plane, geometry: Geometry::Affine(affine) },
        series: Some(series.clone()),
    })
}

fn read_frames(files: &[PathBuf], spec: &Preprocess, plane: Plane) -> Result<CaseImages> {
    let per_file = files
        .iter()
        .map(|f| vismae_data::prep::file_images(f, spec, plane))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let n = per_file[0].len();
    if let Some((f, v)) = files.iter().zip(&per_file).find(|(_, v)| v.len() != n) {
        return Err(TrainError::invalid(format!("{}: {} images, the case's first file {n}", f.display(), v.len())));
    }
    let images = (0..n).map(|k| per_file.iter().map(|v| v[k].clone()).collect()).collect();
    Ok(CaseImages { images, layout: Layout::Frames, series: None })
}

fn is_volume(path: &Path) -> bool {
    matches!(vismae_data::source::detect(path), Ok(Format::Nifti | Format::MetaImage | Format::Nrrd))
}

/// Prepared inputs of a case's images (steps 2-3 of the preprocessing).
fn prepare(spec: &Preprocess, images: &[Vec<Raster>]) -> Result<Vec<Planes>> {
    images.iter().map(|files| planes(spec, files).map_err(TrainError::invalid)).collect()
}

/// One image's prediction at its own size: the class map, and the class probability planes when
/// asked for.
type ImagePrediction = (Vec<u8>, Vec<Vec<f32>>);

const COLOURS: [[u8; 3]; 6] =
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180], [70, 240, 240]];

fn save_overlay(path: &Path, image: &Raster, mask: &[u8]) -> Result<()> {
    let g = image.to_grey();
    let (lo, hi) = g
        .data
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let mut img = image::RgbImage::new(g.width as u32, g.height as u32);
    for (i, p) in img.pixels_mut().enumerate() {
        let v = if hi > lo { ((g.data[i] - lo) / (hi - lo) * 255.0).clamp(0.0, 255.0) } else { 0.0 };
        let c = mask[i] as usize;
        *p = if c == 0 {
            image::Rgb([v as u8; 3])
        } else {
            let col = COLOURS[(c - 1) % COLOURS.len()];
            image::Rgb(col.map(|k| (0.55 * v + 0.45 * k as f32) as u8))
        };
    }
    write_png(path, &img)
}

/// Encodes `img` as PNG and writes it whole (temporary file, sync, rename).
fn write_png<P>(path: &Path, img: &image::ImageBuffer<P, Vec<P::Subpixel>>) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).map_err(|e| TrainError::output(path, e))?;
    vismae_run::run_dir::write_atomic(path, png.get_ref()).map_err(|e| TrainError::output(path, e))
}

fn save_mask(path: &Path, w: usize, h: usize, mask: Vec<u8>) -> Result<()> {
    let img = image::GrayImage::from_raw(w as u32, h as u32, mask)
        .ok_or_else(|| TrainError::output(path, "mask size mismatch"))?;
    write_png(path, &img)
}

fn save_probability(path: &Path, w: usize, h: usize, p: &[f32]) -> Result<()> {
    let v: Vec<u16> = p.iter().map(|&x| (x.clamp(0.0, 1.0) * 65535.0).round() as u16).collect();
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(w as u32, h as u32, v)
        .ok_or_else(|| TrainError::output(path, "probability size mismatch"))?;
    write_png(path, &img)
}

fn fresh(p: PathBuf) -> Result<PathBuf> {
    if p.exists() { Err(TrainError::output(&p, "already exists (vismae never overwrites)")) } else { Ok(p) }
}

fn write_volume_outputs(
    case: &CaseImages,
    preds: &[ImagePrediction],
    classes: usize,
    name: &str,
    out: &Path,
    opts: PredictOptions,
    seg: &SegInfo,
) -> Result<Vec<PathBuf>> {
    let Layout::Volume { dims: [nx, ny, nz], spacing, plane, geometry } = &case.layout else { unreachable!() };
    let mut labels = Volume { dims: [*nx, *ny, *nz, 1], spacing: *spacing, data: vec![0.0; nx * ny * nz] };
    for (k, (mask, _)) in preds.iter().enumerate() {
        let (w, h) = (case.images[k][0].width, case.images[k][0].height);
        labels.put_slice(*plane, k, 0, &Raster::new(w, h, 1, mask.iter().map(|&v| f32::from(v)).collect()));
    }
    let write = |path: &Path, vol: &Volume, as_labels: bool| -> Result<()> {
        match geometry {
            Geometry::Template(t) => write_nifti_like(path, t, vol, as_labels)?,
            Geometry::Affine(a) => write_nifti_affine(path, vol, as_labels, *a)?,
        }
        Ok(())
    };
    let mut written = Vec::new();
    let path = fresh(out.join(format!("{name}.nii.gz")))?;
    write(&path, &labels, true)?;
    written.push(path);
    if let (true, Some(series)) = (opts.dicom_seg, &case.series) {
        let grid = vismae_data::annotations::SeriesGrid::from_series(series)?;
        let path = fresh(out.join(format!("{name}.seg.dcm")))?;
        vismae_data::annotations::seg::write_seg(&path, &labels, &grid, &seg.classes, &seg.algorithm)?;
        written.push(path);
    }
    if opts.probabilities {
        let mut probs =
            Volume { dims: [*nx, *ny, *nz, classes], spacing: *spacing, data: vec![0.0; nx * ny * nz * classes] };
        for (k, (_, planes)) in preds.iter().enumerate() {
            let (w, h) = (case.images[k][0].width, case.images[k][0].height);
            for (c, plane_p) in planes.iter().enumerate() {
                probs.put_slice(*plane, k, c, &Raster::new(w, h, 1, plane_p.clone()));
            }
        }
        let path = fresh(out.join(format!("{name}.probabilities.nii.gz")))?;
        write(&path, &probs, false)?;
        written.push(path);
    }
    if opts.overlay && !preds.is_empty() {
        let k = preds.len() / 2;
        let p = fresh(out.join(format!("{name}.overlay.png")))?;
        save_overlay(&p, &case.images[k][0], &preds[k].0)?;
        written.push(p);
    }
    Ok(written)
}

fn write_frame_outputs(
    case: &CaseImages,
    preds: Vec<ImagePrediction>,
    name: &str,
    out: &Path,
    opts: PredictOptions,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let many = preds.len() > 1;
    for (k, (mask, probs)) in preds.into_iter().enumerate() {
        let img = &case.images[k][0];
        let tag = if many { format!("{name}.f{k}") } else { name.to_string() };
        let p = fresh(out.join(format!("{tag}.png")))?;
        if opts.overlay {
            let o = fresh(out.join(format!("{tag}.overlay.png")))?;
            save_overlay(&o, img, &mask)?;
            written.push(o);
        }
        for (c, plane) in probs.iter().enumerate() {
            let q = fresh(out.join(format!("{tag}.prob-{c}.png")))?;
            save_probability(&q, img.width, img.height, plane)?;
            written.push(q);
        }
        save_mask(&p, img.width, img.height, mask)?;
        written.push(p);
    }
    Ok(written)
}

/// The 2-D images of one input case, read as the run was trained: a DICOM series folder may
/// hold several series, each its own output (`NAME.seriesK`).
fn read_case(spec: &Preprocess, plane: Plane, files: &[PathBuf], name: &str) -> Result<Vec<(String, CaseImages)>> {
    let first = files.first().ok_or_else(|| TrainError::invalid("a case without image files"))?;
    if first.is_dir() {
        if files.len() > 1 || (spec.channels == Channels::Stack && spec.in_chans > 1) {
            return Err(TrainError::invalid(format!(
                "{}: a DICOM series folder gives one channel; this model takes {} per case",
                first.display(),
                spec.in_chans
            )));
        }
        let found = vismae_data::dataset::ingest::walk(std::slice::from_ref(first))?;
        let (series, errors) = group_series(&found);
        if series.is_empty() {
            let why = errors.first().map(|e| format!(": {e}")).unwrap_or_default();
            return Err(TrainError::invalid(format!("{}: no DICOM series in this folder{why}", first.display())));
        }
        let many = series.len() > 1;
        series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let tag = if many { format!("{name}.series{i}") } else { name.to_string() };
                Ok((tag, read_series(s, spec, plane)?))
            })
            .collect()
    } else if is_volume(first) {
        Ok(vec![(name.to_string(), read_volume_case(files, spec, plane)?)])
    } else {
        Ok(vec![(name.to_string(), read_frames(files, spec, plane)?)])
    }
}

/// [`segment_cases`] for runs trained on patches: each image predicted at its own resolution by
/// the sliding window ([`sliding_probabilities`], as validation predicts), case after case.
#[allow(clippy::too_many_arguments)]
fn segment_patch_cases<B: Backend>(
    models: &[&vismae_model::SwinUnet<B>],
    spec: &Preprocess,
    plane: Plane,
    cases: &[(String, Vec<PathBuf>)],
    out: &Path,
    opts: PredictOptions,
    tta: Tta,
    window: SlidingWindow,
    batch: usize,
    seg_info: &SegInfo,
    device: &B::Device,
    progress: &mut dyn FnMut(&str, &[PathBuf]),
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, files) in cases {
        for (tag, case) in read_case(spec, plane, files, name)? {
            let mut preds = Vec::with_capacity(case.images.len());
            let mut classes = 0;
            for image in &case.images {
                let native = native_planes(spec, image).map_err(TrainError::invalid)?;
                let px = native.width * native.height;
                let probs = sliding_probabilities(models, spec, &native, tta, window, batch, device);
                classes = probs.len() / px.max(1);
                let mask = argmax_labels(&probs, classes, px);
                let planes = if opts.probabilities {
                    probs.chunks(px.max(1)).map(<[f32]>::to_vec).collect()
                } else {
                    Vec::new()
                };
                preds.push((mask, planes));
            }
            let w = match case.layout {
                Layout::Volume { .. } => write_volume_outputs(&case, &preds, classes, &tag, out, opts, seg_info)?,
                Layout::Frames => write_frame_outputs(&case, preds, &tag, out, opts)?,
            };
            progress(&tag, &w);
            written.extend(w);
        }
    }
    Ok(written)
}

/// The segment names and algorithm of the DICOM SEGs `nets` write.
fn seg_info<B: Backend>(nets: &[SegNet<B>]) -> SegInfo {
    let cfg = &nets[0].config;
    let classes =
        (1..nets[0].classes).map(|k| cfg.classes.get(k).cloned().unwrap_or_else(|| format!("class {k}"))).collect();
    let mut from: Vec<&str> = nets.iter().map(|n| n.config.init_name.as_str()).collect();
    from.dedup();
    let version = format!(
        "{} ({} run{} from {})",
        vismae_run::VISMAE_VERSION,
        nets.len(),
        if nets.len() == 1 { "" } else { "s" },
        from.join(", ")
    );
    SegInfo {
        classes,
        algorithm: vismae_data::annotations::seg::SegAlgorithm {
            name: "vismae".into(),
            version: version.chars().take(64).collect(),
            description: format!("vismae Swin-UNet segmentation ({} classes)", nets[0].classes - 1),
        },
    }
}

/// A case waiting for the rest of its images' predictions.
struct Pending {
    tag: String,
    case: CaseImages,
    preds: Vec<Option<ImagePrediction>>,
}

/// Segments `cases` (each `(name, image files or a DICOM series folder)`) into `out` (which must
/// exist), outputs named after the cases; `progress(case, written)` is called as each case is
/// written. The images of all cases are predicted in order in chunks of the first run's batch
/// size, as validation predicts the validation cases, so a run's logged validation Dice is what
/// `evaluate seg` gives these outputs (one run, no test-time augmentation). Several runs (a fold
/// ensemble, checked by [`SegNet::check_ensemble`]) average their softmax probabilities; so do
/// the mirrorings of each image that `opts.tta` asks for.
pub fn segment_cases<B: Backend>(
    nets: &[SegNet<B>],
    cases: &[(String, Vec<PathBuf>)],
    out: &Path,
    opts: PredictOptions,
    device: &B::Device,
    progress: &mut dyn FnMut(&str, &[PathBuf]),
) -> Result<Vec<PathBuf>> {
    let net = nets.first().ok_or_else(|| TrainError::invalid("no model to predict with"))?;
    let models: Vec<_> = nets.iter().map(|n| &n.model).collect();
    let spec = &net.config.preprocess;
    let plane = net.config.seg().map(|s| s.plane).unwrap_or_default();
    let (n, c, batch) = (spec.size, net.classes, net.batch_size());
    let tta = opts.tta.unwrap_or_else(|| net.default_tta());
    let px = n * n;
    let seg_info = seg_info(nets);
    if let Some(s) = net.config.seg().filter(|s| s.input == vismae_run::SegInput::Patch) {
        let window =
            SlidingWindow { overlap: opts.overlap.unwrap_or(s.overlap), gaussian: opts.gaussian.unwrap_or(s.gaussian) };
        return segment_patch_cases(
            &models, spec, plane, cases, out, opts, tta, window, batch, &seg_info, device, progress,
        );
    }
    let mut pending: std::collections::VecDeque<Pending> = Default::default();
    // (index into `pending` counted from its first case ever, image) waiting for a forward pass
    let mut queue: Vec<(usize, usize, Planes)> = Vec::new();
    let mut first_case = 0usize; // case number of pending[0]
    let mut next_case = 0usize;
    let mut written = Vec::new();
    let mut flush = |queue: &mut Vec<(usize, usize, Planes)>,
                     pending: &mut std::collections::VecDeque<Pending>,
                     first_case: &mut usize,
                     all: bool|
     -> Result<()> {
        while queue.len() >= batch || (all && !queue.is_empty()) {
            let take: Vec<(usize, usize, Planes)> = queue.drain(..batch.min(queue.len())).collect();
            let inputs: Vec<&Planes> = take.iter().map(|t| &t.2).collect();
            let p = seg_probabilities_mean(&models, spec, &inputs, tta, device);
            for (i, (case, img, _)) in take.iter().enumerate() {
                let slot = &mut pending[case - *first_case];
                let (w, h) = (slot.case.images[*img][0].width, slot.case.images[*img][0].height);
                let probs = &p[i * c * px..(i + 1) * c * px];
                let mask = labels_to_size(argmax_labels(probs, c, px), n, w, h);
                let planes = if opts.probabilities {
                    (0..c)
                        .map(|k| Raster::new(n, n, 1, probs[k * px..(k + 1) * px].to_vec()).resize_bilinear(w, h).data)
                        .collect()
                } else {
                    Vec::new()
                };
                slot.preds[*img] = Some((mask, planes));
            }
            // write the cases whose images are all predicted, in order
            while pending.front().is_some_and(|p| p.preds.iter().all(Option::is_some)) {
                let Some(done) = pending.pop_front() else { break };
                *first_case += 1;
                let preds: Vec<ImagePrediction> = done.preds.into_iter().flatten().collect();
                let w = match done.case.layout {
                    Layout::Volume { .. } => {
                        write_volume_outputs(&done.case, &preds, c, &done.tag, out, opts, &seg_info)?
                    }
                    Layout::Frames => write_frame_outputs(&done.case, preds, &done.tag, out, opts)?,
                };
                progress(&done.tag, &w);
                written.extend(w);
            }
        }
        Ok(())
    };
    for (name, files) in cases {
        for (tag, case) in read_case(spec, plane, files, name)? {
            let inputs = prepare(spec, &case.images)?;
            let k = next_case;
            next_case += 1;
            queue.extend(inputs.into_iter().enumerate().map(|(i, p)| (k, i, p)));
            pending.push_back(Pending { tag, preds: vec![None; case.images.len()], case });
            flush(&mut queue, &mut pending, &mut first_case, false)?;
        }
    }
    flush(&mut queue, &mut pending, &mut first_case, true)?;
    // cases without images (empty files) are written empty
    while let Some(done) = pending.pop_front() {
        let w = write_frame_outputs(&done.case, Vec::new(), &done.tag, out, opts)?;
        progress(&done.tag, &w);
        written.extend(w);
    }
    Ok(written)
}

/// Class probabilities of cases (each its image files) by a fine-tuned classifier, or the mean
/// of several (a fold ensemble, checked by [`ClsNet::check_ensemble`]).
pub fn classify<B: Backend>(nets: &[ClsNet<B>], cases: &[Vec<PathBuf>], device: &B::Device) -> Result<Vec<Vec<f64>>> {
    let net = nets.first().ok_or_else(|| TrainError::invalid("no model to predict with"))?;
    let spec = &net.config.preprocess;
    let inputs = cases.iter().map(|files| crate::finetune::cls::case_input(files, spec)).collect::<Result<Vec<_>>>()?;
    let mut mean = net.probabilities(&inputs, device);
    for other in &nets[1..] {
        for (m, p) in mean.iter_mut().zip(other.probabilities(&inputs, device)) {
            m.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
    }
    let k = nets.len() as f64;
    if nets.len() > 1 {
        mean.iter_mut().for_each(|row| row.iter_mut().for_each(|v| *v /= k));
    }
    Ok(mean)
}

/// Writes `predictions.csv` in the `vismae evaluate cls` format: one row per `(id, label if known,
/// probabilities)`; `labels` (`|`-separated) for multi-label runs.
pub fn write_predictions_csv(
    path: &Path,
    multi_label: bool,
    rows: &[(String, Option<vismae_data::labelled::Target>, Vec<f64>)],
) -> Result<()> {
    use vismae_data::labelled::Target;
    if path.exists() {
        return Err(TrainError::output(path, "already exists (vismae never overwrites)"));
    }
    let classes = rows.first().map(|r| r.2.len()).unwrap_or(0);
    let mut text = String::from(if multi_label { "id,labels" } else { "id,label" });
    for k in 0..classes {
        text.push_str(&format!(",prob_{k}"));
    }
    text.push('\n');
    for (id, target, probs) in rows {
        let label = match target {
            Some(Target::Class(c)) => c.to_string(),
            Some(Target::Labels(on)) => on.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("|"),
            _ => String::new(),
        };
        let id = if id.contains([',', '"']) { format!("\"{}\"", id.replace('"', "\"\"")) } else { id.clone() };
        text.push_str(&format!("{id},{label}"));
        for p in probs {
            text.push_str(&format!(",{p}"));
        }
        text.push('\n');
    }
    vismae_run::run_dir::write_atomic(path, text.as_bytes())?;
    Ok(())
}
