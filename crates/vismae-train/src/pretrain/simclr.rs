//! The SimCLR method of pre-training (the paper's baseline; Chen et al. 2020): two augmented views
//! of every image ([`crate::views`]), the classifier's Swin encoder with its final norm, global
//! average pooling and a projection head, and the NT-Xent loss over the whole micro-batch.
//!
//! Data-parallel replicas split the batch, but the loss keeps every image of the batch as a
//! negative (SimCLR's global batch): each replica projects its views, the projections of all
//! replicas are gathered (values only), every replica computes the loss and its gradient with
//! respect to all projections, and back-propagates its own rows of that gradient through its
//! network. The summed parameter gradients are then exactly the one-device gradient, whatever the
//! replica count. Each view's forward pass seeds stochastic depth by its images' positions, so
//! the split changes no draw either.

use std::path::PathBuf;
use std::sync::{Barrier, Mutex};

use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use vismae_model::layers::with_stochastic_seed;
use vismae_model::simclr::nt_xent;
use vismae_model::store::{self, AnyModel, ModelSpec};
use vismae_model::weights::{export_state_dict, safetensors_io};
use vismae_model::{SimClr, SimClrConfig, VariantExt};
use vismae_run::{ModelKind, PretrainConfig, RunDir};

use super::engine::{Method, Micro, card};
use super::replicas::{chunks, data_parallel};
use crate::error::{Result, TrainError};
use crate::seeds::mix;

/// The SimCLR network of a run.
pub fn simclr_config(cfg: &PretrainConfig) -> SimClrConfig {
    let s = &cfg.settings;
    let mut swin = s.variant.classifier(cfg.preprocess.in_chans, 2).swin;
    if let Some(d) = &s.depths {
        swin.depths = d.clone();
    }
    swin.drop_path_rate = s.drop_path;
    let d = swin.bottleneck_dim();
    SimClrConfig {
        swin,
        projection_layers: s.projection_layers,
        projection_hidden: d,
        projection_dim: s.projection_dim,
    }
}

pub(crate) struct SimClrMethod<'a> {
    pub cfg: &'a PretrainConfig,
    pub ccfg: SimClrConfig,
}

impl<B: AutodiffBackend> Method<B> for SimClrMethod<'_> {
    type Model = SimClr<B>;

    fn init(&self, device: &B::Device) -> SimClr<B> {
        self.ccfg.init(device)
    }

    fn micro(
        &self,
        model: &SimClr<B>,
        devices: &[B::Device],
        data: &[f32],
        m: Micro,
    ) -> Result<(GradientsParams, Vec<f64>)> {
        let (cfg, s) = (self.cfg, &self.cfg.settings);
        let (n, size) = (m.images, cfg.size);
        let per = data.len() / n.max(1);
        let planes = per / (size * size);
        let step_seed = mix(s.seed, m.step as u64, m.micro as u64);
        let stochastic = mix(s.seed ^ 0x64726f70, m.step as u64, m.micro as u64);
        let ranges = chunks(n, devices.len());
        let gathered: Mutex<Vec<Option<Vec<f32>>>> = Mutex::new(vec![None; ranges.len()]);
        let barrier = Barrier::new(ranges.len());
        let dim = self.ccfg.projection_dim;
        data_parallel(model, devices, n, m.share, |replica: &SimClr<B>, dev, (a, b), w| {
            let k = b - a;
            // 1. the replica's projections: view 1 then view 2 of images a..b, each view its own
            // forward pass with stochastic depth seeded by the images' positions
            let projected = {
                let (mut v1, mut v2) = (Vec::with_capacity(k * per), Vec::with_capacity(k * per));
                for i in a..b {
                    let img = &data[i * per..(i + 1) * per];
                    let (x, y) = crate::views::pair(img, planes, size, s.crop_min, step_seed, i as u64);
                    v1.extend(x);
                    v2.extend(y);
                }
                let z1 = with_stochastic_seed(stochastic, a as u64, || {
                    replica.forward(crate::input::batch::<B>(&cfg.preprocess, &v1, k, planes, dev)).1
                });
                let z2 = with_stochastic_seed(stochastic ^ 0x32, a as u64, || {
                    replica.forward(crate::input::batch::<B>(&cfg.preprocess, &v2, k, planes, dev)).1
                });
                Ok::<_, TrainError>(Tensor::cat(vec![z1, z2], 0))
            };
            // 2. every replica's projection values, gathered (a failed replica still meets the others)
            let values =
                projected.as_ref().ok().map(|z| z.clone().into_data().convert::<f32>().to_vec().unwrap_or_default());
            if let Ok(mut g) = gathered.lock() {
                g[w] = values;
            }
            barrier.wait();
            let z_local = projected?;
            let all =
                gathered.lock().map_err(|_| TrainError::Replica { replica: w, reason: "poisoned".into() })?.clone();
            let mut rows = vec![0f32; 2 * n * dim];
            for (r, &(ra, rb)) in ranges.iter().enumerate() {
                let z = all[r]
                    .as_ref()
                    .ok_or_else(|| TrainError::Replica { replica: r, reason: "projection failed".into() })?;
                let kr = rb - ra;
                rows[ra * dim..rb * dim].copy_from_slice(&z[..kr * dim]);
                rows[(n + ra) * dim..(n + rb) * dim].copy_from_slice(&z[kr * dim..]);
            }
            // 3. the loss of the whole batch and its gradient with respect to every projection
            let z_all = Tensor::<B, 2>::from_data(TensorData::new(rows, [2 * n, dim]), dev).require_grad();
            let loss = nt_xent(z_all.clone(), s.temperature);
            let value = crate::losses::scalar(loss.clone());
            let dz = z_all
                .grad(&loss.backward())
                .ok_or_else(|| TrainError::Replica { replica: w, reason: "no gradient".into() })?;
            let dz =
                Tensor::<B, 2>::from_inner(Tensor::cat(vec![dz.clone().narrow(0, a, k), dz.narrow(0, n + a, k)], 0));
            // 4. this replica's share of the parameter gradient
            let surrogate = (z_local * dz).sum() * (m.scale * n as f64);
            let grads = GradientsParams::from_grads::<B, _>(surrogate.backward(), replica);
            Ok((grads, value * k as f64 * m.scale))
        })
    }

    fn after_step(&self, _model: &SimClr<B>, _run: &RunDir, _done: usize) -> Result<()> {
        Ok(())
    }

    fn export(&self, model: SimClr<B>, run: &RunDir) -> Result<PathBuf> {
        let (model, mut sd) = export_state_dict::<B, _>(model);
        let card = card(self.cfg, ModelKind::Encoder);
        sd.set_card(&card);
        let weights = run.join("weights.safetensors");
        safetensors_io::write(&sd, &weights)?;
        let spec = ModelSpec::simclr(&self.ccfg).with_card(card);
        store::save(AnyModel::SimClr(model), &spec, &run.join("weights.mpk"))?;
        Ok(weights)
    }
}
