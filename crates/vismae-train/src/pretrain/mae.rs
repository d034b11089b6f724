//! The MAE method of pre-training (SPEC §2): a window-masked Swin autoencoder; each micro-batch's
//! masks and stochastic depth are seeded by (seed, step, micro-batch), the batch split over the
//! replicas; reconstruction grids at epoch ends; the weights in the official layout.

use std::path::PathBuf;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use vismae_data::dataset::reader::ShardedDataset;
use vismae_model::layers::with_stochastic_seed;
use vismae_model::masking::{MaskPlan, plan_from_seed};
use vismae_model::store::{self, AnyModel, ModelSpec};
use vismae_model::weights::{export_state_dict, safetensors_io};
use vismae_model::{MaeConfig, SwinMae, VariantExt};
use vismae_run::{ModelKind, PretrainConfig, RunDir};

use super::engine::{Method, Micro, card};
use super::replicas::data_parallel;
use crate::error::{Result, TrainError};
use crate::reconstruct::{Grid, reconstruction_grid};
use crate::seeds::mix;

/// The MAE configuration of a run.
pub fn mae_config(cfg: &PretrainConfig) -> MaeConfig {
    let s = &cfg.settings;
    let mut c = s.variant.mae(cfg.preprocess.in_chans);
    if let Some(d) = &s.depths {
        c.swin.depths = d.clone();
    }
    c.mask_ratio = s.mask_ratio;
    c.norm_pix_loss = s.norm_pix_loss;
    c.swin.drop_path_rate = s.drop_path;
    c
}

/// The part of a mask plan for images `a..b`.
pub(crate) fn sub_plan(plan: &MaskPlan, a: usize, b: usize) -> MaskPlan {
    let tokens = plan.grid_h * plan.grid_w;
    MaskPlan { batch: b - a, mask: plan.mask[a * tokens..b * tokens].to_vec(), ..plan.clone() }
}

pub(crate) struct Mae<'a> {
    pub cfg: &'a PretrainConfig,
    pub ds: Arc<ShardedDataset>,
    pub mcfg: MaeConfig,
}

impl<B: AutodiffBackend> Method<B> for Mae<'_> {
    type Model = SwinMae<B>;

    fn init(&self, device: &B::Device) -> SwinMae<B> {
        self.mcfg.init(device)
    }

    fn micro(
        &self,
        model: &SwinMae<B>,
        devices: &[B::Device],
        data: &[f32],
        m: Micro,
    ) -> Result<(GradientsParams, Vec<f64>)> {
        let (cfg, s) = (self.cfg, &self.cfg.settings);
        let n = m.images;
        let geom = model.mask_geometry(cfg.size, cfg.size);
        let plan = plan_from_seed(geom, n, mix(s.seed ^ 0x6d61736b, m.step as u64, m.micro as u64))?;
        let stochastic = mix(s.seed ^ 0x64726f70, m.step as u64, m.micro as u64);
        let per = data.len() / n.max(1);
        let planes = per / (cfg.size * cfg.size);
        data_parallel(model, devices, n, m.share, |replica: &SwinMae<B>, dev, (a, b), _| {
            let k = b - a;
            let sub = sub_plan(&plan, a, b);
            with_stochastic_seed(stochastic, a as u64, || {
                let x = crate::input::batch::<B>(&cfg.preprocess, &data[a * per..b * per], k, planes, dev);
                let out = replica.forward(x, &sub)?;
                // each replica's mean, weighted by its share: the sum is the whole batch's mean
                let loss = out.loss * (k as f64 * m.scale);
                let value = crate::losses::scalar(loss.clone());
                Ok((GradientsParams::from_grads::<B, _>(loss.backward(), replica), value))
            })
        })
    }

    fn after_step(&self, model: &SwinMae<B>, run: &RunDir, done: usize) -> Result<()> {
        let (cfg, s) = (self.cfg, &self.cfg.settings);
        let epoch_end = done.is_multiple_of(cfg.steps_per_epoch);
        let finished_epoch = done / cfg.steps_per_epoch;
        if (epoch_end && s.reconstruct_every > 0 && finished_epoch.is_multiple_of(s.reconstruct_every))
            || done == cfg.total_steps
        {
            let name = format!("reconstructions/step-{done:08}.png");
            let dir = run.join("reconstructions");
            std::fs::create_dir_all(&dir).map_err(|e| TrainError::output(&dir, e))?;
            let channels = self.ds.info().channels;
            let images: Vec<Vec<f32>> = (0..s.reconstruct_images.min(self.ds.len()))
                .map(|i| self.ds.pixels(i).iter().step_by(channels).map(|&v| v as f32 / 255.0).collect())
                .collect();
            let grid = Grid { images: &images, planes: 1, seed: s.seed };
            reconstruction_grid::<B::InnerBackend>(
                &model.valid(),
                &cfg.preprocess,
                s.norm_pix_loss,
                &grid,
                &run.join(&name),
            )?;
        }
        Ok(())
    }

    fn export(&self, model: SwinMae<B>, run: &RunDir) -> Result<PathBuf> {
        let (model, mut sd) = export_state_dict::<B, _>(model);
        let card = card(self.cfg, ModelKind::Mae);
        sd.set_card(&card);
        let weights = run.join("weights.safetensors");
        safetensors_io::write(&sd, &weights)?;
        let spec = ModelSpec::mae(&self.mcfg).with_card(card);
        store::save(AnyModel::Mae(model), &spec, &run.join("weights.mpk"))?;
        Ok(weights)
    }
}
