//! Parity with the official PyTorch modules: every test here has `parity` in its name and reads
//! its configuration from the fixture set's `meta.json` (see `fixture.rs`).

use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use vismae_model::masking::{MaskGeometry, plan_from_noise};
use vismae_model::weights::{LoadOptions, Values, apply_state_dict, export_state_dict, read_state_dict};

use crate::fixture::{Fixture, rel_err, tensor, values};

type B = Flex;
type AB = Autodiff<Flex>;

const FORWARD_TOL: f64 = 1e-4;
const TRAIN_TOL: f64 = 1e-3;

fn geometry(fx: &Fixture, input_shape: &[usize]) -> MaskGeometry {
    let p = fx.size("patch_size");
    MaskGeometry {
        grid_h: input_shape[2] / p,
        grid_w: input_shape[3] / p,
        unit: fx.size("mask_unit_tokens"),
        ratio: fx.num("mask_ratio"),
    }
}

fn mae_model<Bk: Backend>(fx: &Fixture, device: &Bk::Device) -> vismae_model::SwinMae<Bk> {
    let model = fx.mae().init::<Bk>(device);
    let (model, report) = apply_state_dict(model, &fx.state_dict("mae_weights.safetensors"), LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.missing.is_empty(), "model tensors missing from the fixture: {:?}", report.missing);
    assert!(report.unused.is_empty(), "fixture tensors unused: {:?}", report.unused);
    model
}

#[test]
fn parity_mae_mask_from_noise_is_exact() {
    let fx = Fixture::load();
    let (shape, _) = fx.array("mae_io.safetensors", "input");
    let (nshape, noise) = fx.array("mae_io.safetensors", "noise");
    let (_, mask) = fx.array("mae_io.safetensors", "mask");
    let plan = plan_from_noise(geometry(&fx, &shape), nshape[0], &noise).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.mask, mask, "mask planned from noise differs from the reference");
}

#[test]
fn parity_mae_forward_latent_pred_loss() {
    let fx = Fixture::load();
    let device = Default::default();
    let model = mae_model::<B>(&fx, &device);
    let (shape, input) = fx.array("mae_io.safetensors", "input");
    let (nshape, noise) = fx.array("mae_io.safetensors", "noise");
    let plan = plan_from_noise(geometry(&fx, &shape), nshape[0], &noise).unwrap_or_else(|e| panic!("{e}"));
    let out = model.forward(tensor::<B, 4>(&shape, input, &device), &plan).unwrap_or_else(|e| panic!("{e}"));

    for (name, got) in [
        ("latent", values(out.latent)),
        ("pred", values(out.pred)),
        ("loss", values(out.loss)),
        ("mask", values(out.mask)),
    ] {
        let (_, want) = fx.array("mae_io.safetensors", name);
        let err = rel_err(&got, &want);
        println!("mae {name}: relative error {err:.3e}");
        assert!(err < FORWARD_TOL, "mae {name}: relative error {err:.3e} >= {FORWARD_TOL}");
    }
}

fn unet_parity(size_key: &str) {
    let fx = Fixture::load();
    let input_key = format!("unet_input_{size_key}");
    if size_key != "224" && !fx.has("downstream_io.safetensors", &input_key) {
        panic!("downstream_io.safetensors has no {input_key}");
    }
    let device = Default::default();
    let model = fx.unet().init::<B>(&device);
    let sd = fx.state_dict("unet_weights.safetensors");
    let (model, report) = apply_state_dict(model, &sd, LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let (shape, input) = fx.array("downstream_io.safetensors", &input_key);
    let (lshape, want) = fx.array("downstream_io.safetensors", &format!("unet_logits_{size_key}"));
    let logits = model.forward(tensor::<B, 4>(&shape, input, &device));
    assert_eq!(logits.dims().to_vec(), lshape);
    let err = rel_err(&values(logits), &want);
    println!("unet logits at {size_key}: relative error {err:.3e}");
    assert!(err < FORWARD_TOL, "unet logits at {size_key}: relative error {err:.3e}");
}

#[test]
fn parity_unet_logits_224() {
    unet_parity("224");
}

#[test]
fn parity_unet_logits_padded_size() {
    let fx = Fixture::load();
    unet_parity(&fx.size("seg_size").to_string());
}

#[test]
fn parity_classifier_logits() {
    let fx = Fixture::load();
    let device = Default::default();
    let model = fx.classifier().init::<B>(&device);
    let (model, report) = apply_state_dict(model, &fx.state_dict("cls_weights.safetensors"), LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.missing.is_empty() && report.unused.is_empty(), "{report}");
    let (shape, input) = fx.array("downstream_io.safetensors", "cls_input");
    let (_, want) = fx.array("downstream_io.safetensors", "cls_logits");
    let err = rel_err(&values(model.forward(tensor::<B, 4>(&shape, input, &device))), &want);
    println!("classifier logits: relative error {err:.3e}");
    assert!(err < FORWARD_TOL, "classifier logits: relative error {err:.3e}");
}

#[test]
fn parity_adamw_training_steps_reproduce_losses_and_weights() {
    let fx = Fixture::load();
    let train = &fx.meta["train"];
    let steps = train["steps"].as_u64().unwrap_or(0) as usize;
    let losses: Vec<f64> =
        train["losses"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default();
    let betas: Vec<f64> =
        train["betas"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default();
    let lr = train["lr"].as_f64().unwrap_or(1e-3);
    assert!(steps > 0 && losses.len() == steps && betas.len() == 2, "meta.json train section incomplete");

    let device = Default::default();
    let mut model = mae_model::<AB>(&fx, &device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(betas[0] as f32)
        .with_beta_2(betas[1] as f32)
        .with_epsilon(train["eps"].as_f64().unwrap_or(1e-8) as f32)
        .with_weight_decay(train["weight_decay"].as_f64().unwrap_or(0.05) as f32)
        .init::<AB, vismae_model::SwinMae<AB>>();
    for (s, want) in losses.iter().enumerate() {
        let (shape, input) = fx.array("train_io.safetensors", &format!("step{s}_input"));
        let (nshape, noise) = fx.array("train_io.safetensors", &format!("step{s}_noise"));
        let plan = plan_from_noise(geometry(&fx, &shape), nshape[0], &noise).unwrap_or_else(|e| panic!("{e}"));
        let out = model.forward(tensor::<AB, 4>(&shape, input, &device), &plan).unwrap_or_else(|e| panic!("{e}"));
        let loss = values(out.loss.clone())[0] as f64;
        let (_, step_ref) = fx.array("train_io.safetensors", &format!("step{s}_loss"));
        let err = (loss - *want).abs() / want.abs();
        println!(
            "step {s}: loss {loss:.7} reference {want:.7} ({:.7} in train_io) relative error {err:.3e}",
            step_ref[0]
        );
        assert!(err < TRAIN_TOL, "step {s}: loss {loss} vs reference {want}");
        let grads = GradientsParams::from_grads::<AB, _>(out.loss.backward(), &model);
        assert!(!grads.is_empty(), "no gradients reached the optimizer");
        model = optim.step(lr, model, grads);
    }
    let (_, got) = export_state_dict::<AB, _>(model);
    let want = read_state_dict(&fx.dir.join("train_final_weights.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let (mut num, mut den, mut worst) = (0f64, 0f64, (0f64, String::new()));
    for (key, w) in &want.tensors {
        let (Values::F32(w), Some(Values::F32(g))) = (&w.values, got.tensors.get(key).map(|t| &t.values)) else {
            continue;
        };
        num += w.iter().zip(g).map(|(a, b)| ((*a - *b) as f64).powi(2)).sum::<f64>();
        den += w.iter().map(|a| (*a as f64).powi(2)).sum::<f64>();
        // The key third of a qkv bias has an exactly zero gradient (softmax ignores a constant per
        // query), so AdamW turns round-off into +-lr steps in both implementations: compare q and v.
        let e = if key.ends_with("attn.qkv.bias") {
            let c = w.len() / 3;
            let k_err = rel_err(&g[c..2 * c], &w[c..2 * c]);
            if k_err > TRAIN_TOL {
                println!("{key}: key part (zero true gradient) differs by {k_err:.3e}");
            }
            rel_err(&[&g[..c], &g[2 * c..]].concat(), &[&w[..c], &w[2 * c..]].concat())
        } else {
            rel_err(g, w)
        };
        if e > worst.0 {
            worst = (e, key.clone());
        }
    }
    let total = (num / den).sqrt();
    println!("final weights: relative error {total:.3e} over all tensors; worst tensor {} at {:.3e}", worst.1, worst.0);
    assert!(total < TRAIN_TOL, "final weights: relative error {total:.3e}");
    assert!(worst.0 < TRAIN_TOL, "final weights: {} has relative error {:.3e}", worst.1, worst.0);
}

#[test]
fn parity_official_checkpoint_reads_without_python() {
    let fx = Fixture::load();
    let got = read_state_dict(&fx.dir.join("official_checkpoint.pth")).unwrap_or_else(|e| panic!("{e}"));
    let want = fx.state_dict("official_checkpoint.expected.safetensors");
    assert_eq!(got.tensors.len(), want.tensors.len());
    for (k, w) in &want.tensors {
        let g = got.tensors.get(k).unwrap_or_else(|| panic!("checkpoint lacks {k}"));
        assert_eq!(g, w, "{k} differs");
    }
}

#[test]
fn parity_mae_export_reproduces_official_state_dict() {
    let fx = Fixture::load();
    let device = Default::default();
    let model = mae_model::<B>(&fx, &device);
    let (_, got) = export_state_dict::<B, _>(model);
    let want = fx.state_dict("mae_weights.safetensors");
    let keys = |sd: &vismae_model::weights::StateDict| sd.tensors.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&got), keys(&want));
    for (k, w) in &want.tensors {
        let g = &got.tensors[k];
        assert_eq!(g.shape, w.shape, "{k}");
        match (&g.values, &w.values) {
            (Values::I64(a), Values::I64(b)) => assert_eq!(a, b, "{k}"),
            (Values::F32(a), Values::F32(b)) if k == "pos_embed" => {
                let e = rel_err(a, b);
                assert!(e < 1e-6, "pos_embed recomputed differs: {e:.3e}");
            }
            (Values::F32(a), Values::F32(b)) => assert_eq!(a, b, "{k}"),
            _ => panic!("{k}: dtype differs"),
        }
    }
}

#[test]
fn parity_mae_to_unet_transfer_loads_reference_key_count() {
    let fx = Fixture::load();
    let device = Default::default();
    let unet = fx.unet().init::<B>(&device);
    let mae = fx.state_dict("mae_weights.safetensors");
    let (_, report) = apply_state_dict(unet, &mae, LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let want = fx.size("unet_keys_loaded_from_mae");
    // the reference counts the relative_position_index buffers it copied as loaded tensors
    let loaded = report.applied.len() + report.buffers.len();
    assert_eq!(loaded, want, "{report}");
    let mut unused = report.unused.clone();
    unused.sort();
    assert_eq!(unused, vec!["decoder_pred.bias", "decoder_pred.weight", "mask_token", "pos_embed"]);
}
