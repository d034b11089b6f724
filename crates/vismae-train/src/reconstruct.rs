//! Reconstruction grids: for each image a row of original | masked input | reconstruction |
//! reconstruction with the visible patches pasted back, written as a PNG. Used at the end of
//! pre-training epochs and by `vismae reconstruct`; the input goes through the weights'
//! [`Preprocess`] and the reconstruction is shown back in `[0, 1]`.

use std::path::Path;

use burn::tensor::backend::Backend;
use vismae_model::SwinMae;
use vismae_model::mae::{patchify, unpatchify};
use vismae_model::masking::plan_from_seed;
use vismae_run::{InputNorm, Preprocess};

use crate::error::{Result, TrainError};

const GUTTER: usize = 2;

/// The images of a grid: each `planes` planar planes of `size x size` values (the spec's side),
/// before [`Preprocess::finish`], and the seed of the mask.
pub struct Grid<'a> {
    /// The images.
    pub images: &'a [Vec<f32>],
    /// Planes per image.
    pub planes: usize,
    /// Seed of the mask.
    pub seed: u64,
}

/// Writes the grid of `grid.images` to `out` (atomically).
pub fn reconstruction_grid<B: Backend>(
    model: &SwinMae<B>,
    spec: &Preprocess,
    norm_pix_loss: bool,
    grid: &Grid,
    out: &Path,
) -> Result<()> {
    if grid.images.is_empty() {
        return Err(TrainError::invalid("no images to reconstruct"));
    }
    let device = B::Device::default();
    let n = grid.images.len();
    let size = spec.size;
    let x = crate::input::batch::<B>(spec, &grid.images.concat(), n, grid.planes, &device);
    let geom = model.mask_geometry(size, size);
    let plan = plan_from_seed(geom, n, grid.seed)?;
    let out_t = model.forward(x.clone(), &plan)?;
    let c = x.dims()[1];
    let p = size / geom.grid_w;
    let mut pred = out_t.pred;
    if norm_pix_loss {
        // the network predicts per-patch normalised pixels: give them the patches' own statistics
        let target = patchify(x.clone(), p);
        let (var, mean) = target.var_mean(2);
        pred = pred * (var + 1e-6).sqrt() + mean;
    }
    let recon = unpatchify(pred, p, geom.grid_h, geom.grid_w, c);
    let to_vec = |t: burn::tensor::Tensor<B, 4>| -> Vec<f32> {
        t.narrow(1, 0, 1).into_data().convert::<f32>().to_vec().unwrap_or_default()
    };
    let (orig, recon) = (to_vec(x), to_vec(recon));
    // min-max inputs are shown as they are; other normalisations are undone
    let show = |v: f32| -> f32 {
        match &spec.norm {
            InputNorm::MinMax | InputNorm::None => v,
            norm => norm.invert(v, 0).unwrap_or(v),
        }
        .clamp(0.0, 1.0)
    };
    let (w, h) = (4 * size + 5 * GUTTER, n * size + (n + 1) * GUTTER);
    let mut img = image::GrayImage::from_pixel(w as u32, h as u32, image::Luma([255]));
    for k in 0..n {
        for y in 0..size {
            for xx in 0..size {
                let i = k * size * size + y * size + xx;
                let token = (y / p) * geom.grid_w + xx / p;
                let masked = plan.mask[k * geom.grid_h * geom.grid_w + token] > 0.5;
                let o = show(orig[i]);
                let r = show(recon[i]);
                let cells = [o, if masked { 0.5 } else { o }, r, if masked { r } else { o }];
                for (col, v) in cells.iter().enumerate() {
                    let px = GUTTER + col * (size + GUTTER) + xx;
                    let py = GUTTER + k * (size + GUTTER) + y;
                    img.put_pixel(px as u32, py as u32, image::Luma([(v * 255.0).round() as u8]));
                }
            }
        }
    }
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).map_err(|e| TrainError::output(out, e))?;
    vismae_run::run_dir::write_atomic(out, png.get_ref()).map_err(|e| TrainError::output(out, e))
}
