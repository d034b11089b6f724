//! Loads a reference fixture set: `VISMAE_PARITY_DIR` when set, otherwise the copy of
//! `shared/fixtures/reference` in `testdata/reference`. The network configuration comes from its
//! `meta.json`, so any fixture set of the same layout is checked by the same tests.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde_json::Value;
use vismae_model::weights::{StateDict, Values, read_state_dict};
use vismae_model::{ClassifierConfig, MaeConfig, SwinConfig, UnetConfig};

pub struct Fixture {
    pub dir: PathBuf,
    pub meta: Value,
}

pub fn dir() -> PathBuf {
    match std::env::var_os("VISMAE_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/reference"),
    }
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_u64()).map(|x| x as usize).collect()).unwrap_or_default()
}

impl Fixture {
    pub fn load() -> Fixture {
        let dir = dir();
        let text = std::fs::read_to_string(dir.join("meta.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("meta.json").display()));
        let meta = serde_json::from_str(&text).unwrap_or_else(|e| panic!("meta.json: {e}"));
        Fixture { dir, meta }
    }

    pub fn num(&self, key: &str) -> f64 {
        self.meta[key].as_f64().unwrap_or_else(|| panic!("meta.json has no number {key}"))
    }

    pub fn size(&self, key: &str) -> usize {
        self.num(key) as usize
    }

    pub fn swin(&self, depths_key: &str) -> SwinConfig {
        SwinConfig {
            in_chans: self.size("in_chans"),
            patch_size: self.size("patch_size"),
            embed_dim: self.size("embed_dim"),
            depths: usizes(&self.meta[depths_key]),
            num_heads: usizes(&self.meta["num_heads"]),
            window_size: self.size("window_size"),
            mlp_ratio: self.meta["mlp_ratio"].as_u64().unwrap_or(4) as usize,
            qkv_bias: true,
            layer_norm_eps: self.num("layer_norm_eps"),
            drop_path_rate: 0.0,
        }
    }

    pub fn mae(&self) -> MaeConfig {
        MaeConfig {
            swin: self.swin("mae_depths"),
            mask_ratio: self.num("mask_ratio"),
            mask_unit: self.size("mask_unit_tokens"),
            norm_pix_loss: self.meta["norm_pix_loss"].as_bool().unwrap_or(false),
        }
    }

    pub fn unet(&self) -> UnetConfig {
        UnetConfig { swin: self.swin("unet_depths"), num_classes: self.size("unet_num_classes") }
    }

    pub fn classifier(&self) -> ClassifierConfig {
        let depths = if self.meta["cls_depths"].is_array() { "cls_depths" } else { "mae_depths" };
        ClassifierConfig { swin: self.swin(depths), num_classes: self.size("cls_num_classes") }
    }

    pub fn state_dict(&self, file: &str) -> StateDict {
        read_state_dict(&self.dir.join(file)).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn array(&self, file: &str, key: &str) -> (Vec<usize>, Vec<f32>) {
        let sd = self.state_dict(file);
        let t = sd.tensors.get(key).unwrap_or_else(|| panic!("{file} has no tensor {key}"));
        let v = match &t.values {
            Values::F32(v) => v.clone(),
            Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
        };
        (t.shape.clone(), v)
    }

    pub fn has(&self, file: &str, key: &str) -> bool {
        self.dir.join(file).exists() && self.state_dict(file).tensors.contains_key(key)
    }
}

pub fn tensor<B: Backend, const D: usize>(shape: &[usize], values: Vec<f32>, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap_or_default()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((*x - *y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// A path under the repository's `testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}
