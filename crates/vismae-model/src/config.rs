//! Architecture configuration of the three VIS-MAE networks and the named variants
//! (`vis-mae`, `small`, `tiny`). Variants are data: one constructor per name (SPEC §0, §2-4).

use serde::{Deserialize, Serialize};
pub use vismae_run::Variant;

/// Hyper-parameters shared by every Swin network in VIS-MAE.
///
/// Defaults follow the official factories (`swin_mae()`, `swin_unet()`, `swin_class()`): patch 4,
/// embed 96, heads (3, 6, 12, 24), window 7, MLP ratio 4, qkv bias, LayerNorm eps 1e-6, drop path 0.1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwinConfig {
    /// Input channels (3 in the reference, which replicates grey images; 1 is supported too).
    pub in_chans: usize,
    /// Side of the square patch embedded into one token, in pixels.
    pub patch_size: usize,
    /// Token width of the first stage; stage `s` has `embed_dim * 2^s`.
    pub embed_dim: usize,
    /// Number of Swin blocks in each of the four encoder stages.
    pub depths: Vec<usize>,
    /// Attention heads in each stage.
    pub num_heads: Vec<usize>,
    /// Side of the square attention window, in tokens.
    pub window_size: usize,
    /// Hidden width of the MLP as a multiple of the token width.
    pub mlp_ratio: usize,
    /// Whether the qkv projection has a bias.
    pub qkv_bias: bool,
    /// LayerNorm epsilon (1e-6 in every VIS-MAE module).
    pub layer_norm_eps: f64,
    /// Highest stochastic-depth rate; rates rise linearly over all blocks (SPEC §1.7).
    pub drop_path_rate: f64,
}

impl SwinConfig {
    /// Number of stages (the length of `depths`).
    pub fn num_stages(&self) -> usize {
        self.depths.len()
    }

    /// Token width of stage `s`.
    pub fn stage_dim(&self, s: usize) -> usize {
        self.embed_dim << s
    }

    /// Token width after the last stage (768 for the paper's model).
    pub fn bottleneck_dim(&self) -> usize {
        self.stage_dim(self.num_stages() - 1)
    }

    /// Stochastic-depth rates for every block of the encoder, `linspace(0, rate, sum(depths))`.
    pub fn drop_path_rates(&self) -> Vec<f64> {
        let total: usize = self.depths.iter().sum();
        (0..total).map(|i| if total <= 1 { 0.0 } else { self.drop_path_rate * i as f64 / (total - 1) as f64 }).collect()
    }

    /// The rates of stage `s`, a slice of [`Self::drop_path_rates`].
    pub fn stage_drop_path(&self, s: usize) -> Vec<f64> {
        let rates = self.drop_path_rates();
        let start: usize = self.depths[..s].iter().sum();
        rates[start..start + self.depths[s]].to_vec()
    }

    /// Checks the invariants the networks rely on; returns a readable reason when one fails.
    pub fn validate(&self) -> Result<(), crate::ModelError> {
        let bad = |m: String| Err(crate::ModelError::Config(m));
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            return bad(format!(
                "depths {:?} and num_heads {:?} must be non-empty and of equal length",
                self.depths, self.num_heads
            ));
        }
        for (s, &h) in self.num_heads.iter().enumerate() {
            let dim = self.stage_dim(s);
            if h == 0 || !dim.is_multiple_of(h) {
                return bad(format!("stage {s}: width {dim} is not divisible by {h} heads"));
            }
        }
        if self.patch_size == 0 || self.window_size == 0 || self.in_chans == 0 {
            return bad("patch_size, window_size and in_chans must be positive".into());
        }
        Ok(())
    }
}

/// The networks of a named variant ([`Variant`] is data in vismae-run: widths, depths, heads).
pub trait VariantExt {
    /// The backbone of this variant with `depths`.
    fn swin(self, in_chans: usize, depths: Vec<usize>) -> SwinConfig;
    /// Configuration of the pre-training MAE.
    fn mae(self, in_chans: usize) -> MaeConfig;
    /// Configuration of the segmentation Swin-UNet.
    fn unet(self, in_chans: usize, num_classes: usize) -> UnetConfig;
    /// Configuration of the classifier.
    fn classifier(self, in_chans: usize, num_classes: usize) -> ClassifierConfig;
}

impl VariantExt for Variant {
    fn swin(self, in_chans: usize, depths: Vec<usize>) -> SwinConfig {
        SwinConfig {
            in_chans,
            patch_size: 4,
            embed_dim: self.embed_dim(),
            depths,
            num_heads: self.num_heads(),
            window_size: 7,
            mlp_ratio: 4,
            qkv_bias: true,
            layer_norm_eps: 1e-6,
            drop_path_rate: 0.1,
        }
    }

    fn mae(self, in_chans: usize) -> MaeConfig {
        MaeConfig { swin: self.swin(in_chans, self.mae_depths()), mask_ratio: 0.75, mask_unit: 4, norm_pix_loss: false }
    }

    fn unet(self, in_chans: usize, num_classes: usize) -> UnetConfig {
        UnetConfig { swin: self.swin(in_chans, self.seg_depths()), num_classes }
    }

    fn classifier(self, in_chans: usize, num_classes: usize) -> ClassifierConfig {
        ClassifierConfig { swin: self.swin(in_chans, self.mae_depths()), num_classes }
    }
}

/// The window-masked Swin MAE (SPEC §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaeConfig {
    /// Backbone hyper-parameters (the decoder mirrors stages 0..n-1 of the encoder).
    pub swin: SwinConfig,
    /// Fraction of mask units replaced by the mask token (0.75).
    pub mask_ratio: f64,
    /// Side of a mask unit in tokens (4 tokens = 16 px).
    pub mask_unit: usize,
    /// Normalise each target patch by its own mean and variance before the MSE.
    pub norm_pix_loss: bool,
}

/// The segmentation Swin-UNet (SPEC §3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnetConfig {
    /// Backbone hyper-parameters; the decoder stage mirroring encoder stage `k` has its depth.
    pub swin: SwinConfig,
    /// Output classes including background.
    pub num_classes: usize,
}

/// The Swin classifier (SPEC §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Backbone hyper-parameters.
    pub swin: SwinConfig,
    /// Number of classes (or labels, for multi-label use).
    pub num_classes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_path_rates_match_reference_linspace() {
        let c = Variant::VisMae.mae(3).swin;
        let r = c.drop_path_rates();
        let expect = [0.0, 0.014286, 0.028571, 0.042857, 0.057143, 0.071429, 0.085714, 0.1];
        assert_eq!(r.len(), 8);
        for (a, b) in r.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
        assert_eq!(c.stage_drop_path(3).len(), 2);
        assert!((c.stage_drop_path(3)[1] - 0.1).abs() < 1e-12);
    }

    #[test]
    fn variants_parse_and_validate() {
        for v in Variant::ALL {
            assert_eq!(Variant::from_name(v.name()), Some(v));
            v.mae(3).swin.validate().unwrap();
            v.unet(1, 3).swin.validate().unwrap();
        }
        assert_eq!(Variant::from_name("huge"), None);
    }
}
