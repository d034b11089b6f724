//! Weight files: safetensors round trip, format sniffing, clear errors on damaged files and shape
//! mismatches, partial loading and the mirrored decoder transfer.

use burn::backend::Flex;
use vismae_model::weights::{
    DecoderInit, LoadOptions, ModelKind, WeightError, apply_state_dict, detect, export_state_dict,
    mirror_encoder_into_decoder, read_state_dict, safetensors_io,
};
use vismae_model::{Variant, VariantExt};

type B = Flex;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vismae-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}

#[test]
fn safetensors_round_trip_and_detection() {
    let device = Default::default();
    let model = Variant::Tiny.unet(1, 4).init::<B>(&device);
    let (_, sd) = export_state_dict::<B, _>(model);
    let path = tmp("unet.safetensors");
    safetensors_io::write(&sd, &path).unwrap_or_else(|e| panic!("{e}"));
    let back = read_state_dict(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, sd);
    let info = detect(&back).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.kind, ModelKind::Unet);
    assert_eq!(info.num_classes, Some(4));
    assert_eq!(info.swin.in_chans, 1);
    assert_eq!(info.variant, Some(Variant::Tiny));
    // a model built from the detected configuration takes the file whole
    let fresh = vismae_model::UnetConfig { swin: info.swin, num_classes: 4 }.init::<B>(&device);
    let (_, report) = apply_state_dict(fresh, &back, LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.missing.is_empty() && report.unused.is_empty() && report.mismatched.is_empty());
}

#[test]
fn damaged_files_are_clear_errors_naming_the_file() {
    let empty = tmp("empty.pth");
    std::fs::write(&empty, b"").unwrap_or_else(|e| panic!("{e}"));
    let msg = read_state_dict(&empty).unwrap_err().to_string();
    assert!(msg.contains("empty.pth"), "{msg}");
    let truncated = tmp("truncated.safetensors");
    let good = std::fs::read(crate::fixture::dir().join("cls_weights.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let msg = read_state_dict(&truncated).unwrap_err().to_string();
    assert!(msg.contains("truncated.safetensors"), "{msg}");
    let zip = tmp("cut.pth");
    let pth = std::fs::read(crate::fixture::dir().join("official_checkpoint.pth")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&zip, &pth[..pth.len() / 3]).unwrap_or_else(|e| panic!("{e}"));
    let msg = read_state_dict(&zip).unwrap_err().to_string();
    assert!(msg.contains("cut.pth"), "{msg}");
}

#[test]
fn shape_mismatch_is_an_error_unless_partial() {
    let device = Default::default();
    let (_, three) = export_state_dict::<B, _>(Variant::Tiny.mae(3).init::<B>(&device));
    let one = Variant::Tiny.unet(1, 2).init::<B>(&device);
    let err = apply_state_dict(one, &three, LoadOptions::default()).err().unwrap_or_else(|| panic!("loaded"));
    let msg = err.to_string();
    assert!(matches!(err, WeightError::Shape(_)));
    assert!(
        msg.contains("patch_embed.proj.weight") && msg.contains("[24, 3, 4, 4]") && msg.contains("[24, 1, 4, 4]"),
        "{msg}"
    );
    let one = Variant::Tiny.unet(1, 2).init::<B>(&device);
    let (_, report) = apply_state_dict(one, &three, LoadOptions { partial: true }).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.mismatched.len(), 1);
    assert!(!report.applied.is_empty());
}

#[test]
fn mirrored_decoder_copies_encoder_blocks() {
    let device = Default::default();
    let (_, mae) = export_state_dict::<B, _>(Variant::Tiny.mae(3).init::<B>(&device));
    let mirrored = mirror_encoder_into_decoder(&mae, 4, DecoderInit::Mirrored);
    assert_eq!(
        mirrored.tensors["layers_up.2.blocks.0.attn.qkv.weight"],
        mae.tensors["layers.0.blocks.0.attn.qkv.weight"]
    );
    assert_eq!(mirrored.tensors["layers_up.0.blocks.0.mlp.fc1.bias"], mae.tensors["layers.2.blocks.0.mlp.fc1.bias"]);
    assert!(!mirrored.tensors.contains_key("layers_up.0.upsample.expand.weight"));
    let scratch = mirror_encoder_into_decoder(&mae, 4, DecoderInit::Scratch);
    assert!(scratch.tensors.keys().all(|k| !k.starts_with("layers_up.")));
    let unet = Variant::Tiny.unet(3, 2).init::<B>(&device);
    let (_, report) = apply_state_dict(unet, &mirrored, LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.applied.iter().any(|k| k.starts_with("layers_up.2.blocks.0")));
    assert!(report.missing.iter().any(|k| k.starts_with("layers_up.0.upsample")));
}

#[test]
fn every_format_round_trips_through_store() {
    use vismae_model::store::{self, ModelSpec};
    let device = Default::default();
    let cfg = Variant::Tiny.classifier(3, 3);
    let spec = ModelSpec::classifier(&cfg);
    let model = spec.init::<B>(&device);
    let (model, want) = model.state_dict();
    let mut model = model;
    for name in ["c.safetensors", "c.pth", "c.mpk"] {
        let path = tmp(name);
        model = store::save(model, &spec, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (back, back_spec, report) = store::load::<B>(&path, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back_spec.kind, spec.kind, "{name}");
        assert_eq!(back_spec.num_classes, Some(3), "{name}");
        if let Some(r) = report {
            assert!(r.missing.is_empty() && r.unused.is_empty(), "{name}: {r}");
        }
        let (_, got) = back.state_dict();
        assert_eq!(got, want, "{name}: weights changed in the round trip");
    }
    assert!(store::format_for_output(&tmp("x.bin")).is_err());
}
