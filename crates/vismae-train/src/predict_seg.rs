//! `vismae predict` for segmentation runs: each 2-D image (or each axial slice of a volume) is
//! normalised as in training (per-image min-max), resized to the model's size, segmented, and the
//! class map brought back to the input's size with nearest neighbour. PNG/JPEG/TIFF/DICOM files
//! give PNG masks (pixel value = class); NIfTI gives a NIfTI label map with the input's header
//! (affine, spacing); a folder holding a DICOM series gives a NIfTI label map with the series'
//! patient-space affine; MHA/NRRD give NIfTI with their spacing. `--overlay` adds colour overlays;
//! `--probabilities` adds the softmax class probabilities (16-bit PNG per class for 2-D images,
//! a 4-D float NIfTI with one frame per class for volumes), resized back bilinearly.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use vismae_data::raster::Raster;
use vismae_data::series::{group_series, series_affine, series_volume};
use vismae_data::source::{Format, SliceOptions, Source};
use vismae_data::volume::{Plane, Volume, write_nifti_affine, write_nifti_like};
use vismae_model::{SwinUnet, Variant};

use crate::finetune::{FinetuneConfig, load_best};
use crate::finetune_seg::SegSettings;
use crate::parallel::forward_split;

/// A fine-tuned segmentation model with the settings it was trained with.
pub struct SegModel<B: Backend> {
    model: SwinUnet<B>,
    settings: SegSettings,
    /// Classes, background included.
    pub classes: usize,
}

/// Loads `RUN/config.json` and `RUN/best.safetensors` of a `vismae finetune seg` run.
pub fn load_run<B: Backend>(run: &Path, device: &B::Device) -> Result<SegModel<B>, String> {
    let cfg = FinetuneConfig::read(run, Some("segmentation"))?;
    let settings: SegSettings = serde_json::from_value(cfg.settings).map_err(|e| format!("{}: {e}", run.display()))?;
    let variant =
        Variant::from_name(&settings.variant).ok_or_else(|| format!("unknown variant {:?}", settings.variant))?;
    let (model, classes) = load_best(run, |classes| variant.unet(settings.in_chans, classes).init::<B>(device))?;
    Ok(SegModel { model, settings, classes })
}

/// What `predict` returns for one image: the class map and, when asked, one probability plane per
/// class, both at the image's own size.
pub struct Prediction {
    /// Class index per pixel.
    pub mask: Vec<u8>,
    /// `classes` planes of `width * height` probabilities (empty unless asked for).
    pub probabilities: Vec<Vec<f32>>,
}

impl<B: Backend> SegModel<B> {
    /// Class maps (and, with `probabilities`, class probabilities) of `images` at their sizes.
    pub fn predict(&self, images: &[Raster], probabilities: bool, device: &B::Device) -> Vec<Prediction> {
        let s = &self.settings;
        let n = s.size;
        let c = self.classes;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(s.batch_size.max(1)) {
            let mut data = Vec::with_capacity(chunk.len() * n * n);
            for r in chunk {
                let g = r.to_grey();
                let (lo, hi) = g
                    .data
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                let norm = Raster::new(
                    g.width,
                    g.height,
                    1,
                    g.data
                        .iter()
                        .map(|&v| if v.is_finite() { (v - lo + 1e-6) / (hi - lo + 1e-6) } else { 0.0 })
                        .collect(),
                );
                data.extend(norm.resize_bilinear(n, n).data);
            }
            let x = Tensor::<B, 4>::from_data(TensorData::new(data, [chunk.len(), 1, n, n]), device);
            let x = if s.in_chans == 3 { x.repeat_dim(1, 3) } else { x };
            let probs = burn::tensor::activation::softmax(forward_split(x, |x| self.model.forward(x)), 1);
            let p: Vec<f32> = probs.into_data().convert::<f32>().to_vec().unwrap_or_default();
            for (i, r) in chunk.iter().enumerate() {
                let plane = |k: usize| &p[(i * c + k) * n * n..(i * c + k + 1) * n * n];
                // argmax over classes, the first of equal maxima (as torch.argmax)
                let small: Vec<f32> = (0..n * n)
                    .map(|px| {
                        (1..c).fold(0usize, |best, k| if plane(k)[px] > plane(best)[px] { k } else { best }) as f32
                    })
                    .collect();
                let mask = Raster::new(n, n, 1, small)
                    .resize_nearest(r.width, r.height)
                    .data
                    .iter()
                    .map(|&v| v as u8)
                    .collect();
                let probabilities = if probabilities {
                    (0..c)
                        .map(|k| Raster::new(n, n, 1, plane(k).to_vec()).resize_bilinear(r.width, r.height).data)
                        .collect()
                } else {
                    Vec::new()
                };
                out.push(Prediction { mask, probabilities });
            }
        }
        out
    }
}

/// What `predict_file` writes besides the masks.
#[derive(Clone, Copy, Debug, Default)]
pub struct PredictOptions {
    /// Colour overlays.
    pub overlay: bool,
    /// Class probabilities.
    pub probabilities: bool,
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

const COLOURS: [[u8; 3]; 6] =
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180], [70, 240, 240]];

fn save_overlay(path: &Path, image: &Raster, mask: &[u8]) -> Result<(), String> {
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
    img.save(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn save_mask(path: &Path, w: usize, h: usize, mask: Vec<u8>) -> Result<(), String> {
    image::GrayImage::from_raw(w as u32, h as u32, mask)
        .ok_or("mask size mismatch")?
        .save(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn save_probability(path: &Path, w: usize, h: usize, p: &[f32]) -> Result<(), String> {
    let v: Vec<u16> = p.iter().map(|&x| (x.clamp(0.0, 1.0) * 65535.0).round() as u16).collect();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(w as u32, h as u32, v)
        .ok_or("probability size mismatch")?
        .save(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn fresh(p: PathBuf) -> Result<PathBuf, String> {
    if p.exists() { Err(format!("{} already exists (vismae never overwrites)", p.display())) } else { Ok(p) }
}

/// Where a volume's outputs take their geometry from.
enum Geometry<'a> {
    /// A NIfTI file whose header is copied.
    Template(&'a Path),
    /// An affine (DICOM series), or the spacing alone when `None`.
    Affine(Option<[[f64; 4]; 3]>),
}

/// Segments the axial slices of `volume` and writes `{name}.nii.gz` (and probabilities, overlay).
fn predict_volume<B: Backend>(
    m: &SegModel<B>,
    volume: &Volume,
    geometry: Geometry,
    name: &str,
    out: &Path,
    opts: PredictOptions,
    device: &B::Device,
) -> Result<Vec<PathBuf>, String> {
    let [nx, ny, nz, _] = volume.dims;
    let slices: Vec<Raster> = (0..nz).map(|k| volume.slice(Plane::Axial, k, 0)).collect();
    let preds = m.predict(&slices, opts.probabilities, device);
    // axial slices show y flipped: row r is y = ny - 1 - r
    let unslice = |planes: &mut [f32], z: usize, v: &[f32]| {
        for r in 0..ny {
            planes[(z * ny + (ny - 1 - r)) * nx..(z * ny + (ny - r)) * nx].copy_from_slice(&v[r * nx..(r + 1) * nx]);
        }
    };
    let mut labels = vec![0f32; nx * ny * nz];
    for (z, p) in preds.iter().enumerate() {
        unslice(&mut labels, z, &p.mask.iter().map(|&v| v as f32).collect::<Vec<_>>());
    }
    let labels = Volume { dims: [nx, ny, nz, 1], spacing: volume.spacing, data: labels };
    let mut written = Vec::new();
    let write = |path: &Path, vol: &Volume, as_labels: bool| match geometry {
        Geometry::Template(t) => write_nifti_like(path, t, vol, as_labels).map_err(|e| e.to_string()),
        Geometry::Affine(a) => write_nifti_affine(path, vol, as_labels, a).map_err(|e| e.to_string()),
    };
    let path = fresh(out.join(format!("{name}.nii.gz")))?;
    write(&path, &labels, true)?;
    written.push(path);
    if opts.probabilities {
        let c = m.classes;
        let mut data = vec![0f32; nx * ny * nz * c];
        for (z, p) in preds.iter().enumerate() {
            for (k, plane) in p.probabilities.iter().enumerate() {
                unslice(&mut data[k * nx * ny * nz..(k + 1) * nx * ny * nz], z, plane);
            }
        }
        let probs = Volume { dims: [nx, ny, nz, c], spacing: volume.spacing, data };
        let path = fresh(out.join(format!("{name}.probabilities.nii.gz")))?;
        write(&path, &probs, false)?;
        written.push(path);
    }
    if opts.overlay && nz > 0 {
        let k = nz / 2;
        let p = fresh(out.join(format!("{name}.overlay.png")))?;
        save_overlay(&p, &slices[k], &preds[k].mask)?;
        written.push(p);
    }
    Ok(written)
}

/// Segments one input (an image or volume file, or a folder holding DICOM series) into `out`
/// (which must exist), naming the outputs after `name` (default: the file's stem); returns the
/// files written.
pub fn predict_file<B: Backend>(
    m: &SegModel<B>,
    input: &Path,
    name: Option<&str>,
    out: &Path,
    opts: PredictOptions,
    device: &B::Device,
) -> Result<Vec<PathBuf>, String> {
    let name = name.map(str::to_string).unwrap_or_else(|| stem(input));
    if input.is_dir() {
        let files = vismae_data::dataset::ingest::walk(&[input.to_path_buf()]).map_err(|e| e.to_string())?;
        let (series, errors) = group_series(&files);
        if series.is_empty() {
            let why = errors.first().map(|e| format!(": {e}")).unwrap_or_default();
            return Err(format!("{}: no DICOM series in this folder{why}", input.display()));
        }
        let mut written = Vec::new();
        for (i, s) in series.iter().enumerate() {
            let volume = series_volume(s).map_err(|e| e.to_string())?;
            let affine = series_affine(s).map_err(|e| e.to_string())?;
            let tag = if series.len() > 1 { format!("{name}.series{i}") } else { name.clone() };
            written.extend(predict_volume(m, &volume, Geometry::Affine(affine), &tag, out, opts, device)?);
        }
        return Ok(written);
    }
    let slice_opts = SliceOptions { planes: vec![Plane::Axial], stride: 1, skip_empty: false };
    let src = Source::open(input, &slice_opts).map_err(|e| e.to_string())?;
    match &src {
        Source::Volume { volume, format, .. } => {
            let geometry = if *format == Format::Nifti { Geometry::Template(input) } else { Geometry::Affine(None) };
            predict_volume(m, volume, geometry, &name, out, opts, device)
        }
        _ => {
            let images: Vec<Raster> = (0..src.len())
                .map(|k| {
                    src.image(k, &slice_opts)
                        .map_err(|e| e.to_string())?
                        .map(|r| r.raster)
                        .ok_or_else(|| "empty image".to_string())
                })
                .collect::<Result<_, _>>()?;
            let preds = m.predict(&images, opts.probabilities, device);
            let mut written = Vec::new();
            for (k, (img, pred)) in images.iter().zip(preds).enumerate() {
                let tag = if images.len() > 1 { format!("{name}.f{k}") } else { name.clone() };
                let p = fresh(out.join(format!("{tag}.png")))?;
                if opts.overlay {
                    let o = fresh(out.join(format!("{tag}.overlay.png")))?;
                    save_overlay(&o, img, &pred.mask)?;
                    written.push(o);
                }
                for (c, plane) in pred.probabilities.iter().enumerate() {
                    let q = fresh(out.join(format!("{tag}.prob-{c}.png")))?;
                    save_probability(&q, img.width, img.height, plane)?;
                    written.push(q);
                }
                save_mask(&p, img.width, img.height, pred.mask)?;
                written.push(p);
            }
            Ok(written)
        }
    }
}
