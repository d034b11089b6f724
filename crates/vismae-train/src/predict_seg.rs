//! `vismae predict` for segmentation runs: each 2-D image (or each axial slice of a volume) is
//! normalised as in training (per-image min-max), resized to the model's size, segmented, and the
//! class map brought back to the input's size with nearest neighbour. PNG/JPEG/TIFF/DICOM give PNG
//! masks (pixel value = class); NIfTI gives a NIfTI label map with the input's header (affine,
//! spacing); MHA/NRRD give NIfTI with their spacing. `--overlay` adds colour overlays.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use vismae_data::raster::Raster;
use vismae_data::source::{Format, SliceOptions, Source};
use vismae_data::volume::{Plane, Volume, write_nifti, write_nifti_labels_like};
use vismae_model::weights::{LoadOptions, apply_state_dict, read_state_dict};
use vismae_model::{SwinUnet, Variant};

use crate::finetune_seg::SegSettings;

/// A fine-tuned segmentation model with the settings it was trained with.
pub struct SegModel<B: Backend> {
    model: SwinUnet<B>,
    settings: SegSettings,
    /// Classes, background included.
    pub classes: usize,
}

/// Loads `RUN/config.json` and `RUN/best.safetensors` of a `vismae finetune seg` run.
pub fn load_run<B: Backend>(run: &Path, device: &B::Device) -> Result<SegModel<B>, String> {
    let cfg_path = run.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| format!("{}: {e} (is this a `vismae finetune seg` run?)", cfg_path.display()))?;
    let cfg: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    if cfg["task"] != "segmentation" {
        return Err(format!("{}: not a segmentation run", cfg_path.display()));
    }
    let settings: SegSettings =
        serde_json::from_value(cfg["settings"].clone()).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let weights = run.join("best.safetensors");
    let sd = read_state_dict(&weights).map_err(|e| e.to_string())?;
    let classes = sd
        .tensors
        .get("head.weight")
        .map(|t| t.shape[0])
        .ok_or_else(|| format!("{}: no head.weight", weights.display()))?;
    let variant =
        Variant::from_name(&settings.variant).ok_or_else(|| format!("unknown variant {:?}", settings.variant))?;
    let model: SwinUnet<B> = variant.unet(settings.in_chans, classes).init(device);
    let (model, report) = apply_state_dict(model, &sd, LoadOptions::default()).map_err(|e| e.to_string())?;
    if !report.missing.is_empty() {
        return Err(format!(
            "{}: {} tensors missing ({:?}...)",
            weights.display(),
            report.missing.len(),
            report.missing.first()
        ));
    }
    Ok(SegModel { model, settings, classes })
}

impl<B: Backend> SegModel<B> {
    /// Class maps of `images` at their native sizes.
    pub fn predict(&self, images: &[Raster], device: &B::Device) -> Vec<Vec<u8>> {
        let s = &self.settings;
        let n = s.size;
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
            let pred: Vec<i64> =
                self.model.forward(x).argmax(1).into_data().convert::<i64>().to_vec().unwrap_or_default();
            for (i, r) in chunk.iter().enumerate() {
                let small = Raster::new(n, n, 1, pred[i * n * n..(i + 1) * n * n].iter().map(|&v| v as f32).collect());
                out.push(small.resize_nearest(r.width, r.height).data.iter().map(|&v| v as u8).collect());
            }
        }
        out
    }
}

fn stem(p: &Path) -> String {
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

/// Segments one input file into `out` (which must exist); returns the files written.
pub fn predict_file<B: Backend>(
    m: &SegModel<B>,
    input: &Path,
    out: &Path,
    overlay: bool,
    device: &B::Device,
) -> Result<Vec<PathBuf>, String> {
    let opts = SliceOptions { planes: vec![Plane::Axial], stride: 1, skip_empty: false };
    let src = Source::open(input, &opts).map_err(|e| e.to_string())?;
    let name = stem(input);
    let mut written = Vec::new();
    let fresh = |p: PathBuf| -> Result<PathBuf, String> {
        if p.exists() { Err(format!("{} already exists (vismae never overwrites)", p.display())) } else { Ok(p) }
    };
    match &src {
        Source::Volume { volume, format, .. } => {
            let [nx, ny, nz, _] = volume.dims;
            let slices: Vec<Raster> = (0..nz).map(|k| volume.slice(Plane::Axial, k, 0)).collect();
            let masks = m.predict(&slices, device);
            let mut data = vec![0f32; nx * ny * nz];
            for (z, mask) in masks.iter().enumerate() {
                for r in 0..ny {
                    for x in 0..nx {
                        // axial slices show y flipped: row r is y = ny - 1 - r
                        data[(z * ny + (ny - 1 - r)) * nx + x] = mask[r * nx + x] as f32;
                    }
                }
            }
            let labels = Volume { dims: [nx, ny, nz, 1], spacing: volume.spacing, data };
            let path = fresh(out.join(format!("{name}.nii.gz")))?;
            if *format == Format::Nifti {
                write_nifti_labels_like(&path, input, &labels).map_err(|e| e.to_string())?;
            } else {
                write_nifti(&path, &labels, true).map_err(|e| e.to_string())?;
            }
            written.push(path);
            if overlay {
                let k = nz / 2;
                let p = fresh(out.join(format!("{name}.overlay.png")))?;
                save_overlay(&p, &slices[k], &masks[k])?;
                written.push(p);
            }
        }
        _ => {
            let images: Vec<Raster> = (0..src.len())
                .map(|k| {
                    src.image(k, &opts)
                        .map_err(|e| e.to_string())?
                        .map(|r| r.raster)
                        .ok_or_else(|| "empty image".to_string())
                })
                .collect::<Result<_, _>>()?;
            let masks = m.predict(&images, device);
            for (k, (img, mask)) in images.iter().zip(masks).enumerate() {
                let tag = if images.len() > 1 { format!("{name}.f{k}") } else { name.clone() };
                let p = fresh(out.join(format!("{tag}.mask.png")))?;
                if overlay {
                    let o = fresh(out.join(format!("{tag}.overlay.png")))?;
                    save_overlay(&o, img, &mask)?;
                    written.push(o);
                }
                save_mask(&p, img.width, img.height, mask)?;
                written.push(p);
            }
        }
    }
    Ok(written)
}
