//! Supervised Swin-T checkpoints in Microsoft's and timm's layouts (real Swin-T keys and shapes,
//! `testdata/swin-keys`, values from a fixed seed) convert to identical VIS-MAE tensors; the
//! downsample keys move one stage in timm's; the buffers go; the result loads into a VIS-MAE
//! classifier of Swin-T depths whole, and into the (2,2,2,2) classifier with stage 2's blocks 2-5
//! reported unused.

use std::collections::BTreeMap;

use burn::backend::Flex;
use vismae_model::weights::swin_import::{SwinLayout, detect_layout, to_vismae};
use vismae_model::weights::{
    LoadOptions, StateDict, TensorEntry, Values, apply_state_dict, pth_write, read_state_dict, safetensors_io,
};
use vismae_model::{ClassifierConfig, Variant, VariantExt};

use crate::fixture::testdata;

/// `(key, shape, dtype)` of a key list.
fn keys(file: &str) -> Vec<(String, Vec<usize>, String)> {
    let text =
        std::fs::read_to_string(testdata(&format!("swin-keys/{file}"))).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let shape =
                f[1].trim_matches(|c| c == '(' || c == ')').split(',').filter_map(|d| d.trim().parse().ok()).collect();
            (f[0].to_string(), shape, f[2].to_string())
        })
        .collect()
}

/// A Microsoft-layout checkpoint of these keys: floats from a fixed seed, index buffers 0..
fn microsoft(list: &[(String, Vec<usize>, String)]) -> StateDict {
    let mut sd = StateDict::default();
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    for (k, shape, dtype) in list {
        let n: usize = shape.iter().product();
        let values = if dtype == "int64" {
            Values::I64((0..n as i64).map(|i| i % 169).collect())
        } else {
            Values::F32((0..n).map(|_| next()).collect())
        };
        sd.tensors.insert(k.clone(), TensorEntry { shape: shape.clone(), values });
    }
    sd
}

/// The same tensors under timm's (2023 hub) names.
fn as_timm(ms: &StateDict) -> StateDict {
    let mut out = StateDict::default();
    for (k, v) in &ms.tensors {
        let k = if let Some(rest) = k.strip_prefix("head.") {
            format!("head.fc.{rest}")
        } else if let Some((s, tail)) =
            k.strip_prefix("layers.").and_then(|r| r.split_once('.')).filter(|(_, t)| t.starts_with("downsample."))
        {
            format!("layers.{}.{tail}", s.parse::<usize>().unwrap_or(0) + 1)
        } else {
            k.clone()
        };
        out.tensors.insert(k, v.clone());
    }
    out
}

#[test]
fn microsoft_and_timm_swin_t_convert_to_the_same_vismae_tensors() {
    let ms_keys = keys("microsoft_swin_tiny_patch4_window7_224.tsv");
    let timm_keys = keys("timm_swin_tiny_patch4_window7_224.ms_in1k.tsv");
    let ms = microsoft(&ms_keys);
    let timm = as_timm(&ms);
    // the renamed dict is exactly timm's key list
    let listed: BTreeMap<String, Vec<usize>> = timm_keys.iter().map(|(k, s, _)| (k.clone(), s.clone())).collect();
    let made: BTreeMap<String, Vec<usize>> = timm.tensors.iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect();
    assert_eq!(made, listed);
    // written as the users have them: Microsoft's .pth ({'model': ...}), timm's safetensors
    let dir = std::env::temp_dir().join(format!("vismae-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_default();
    pth_write::write(&ms, &dir.join("swin_tiny_patch4_window7_224.pth")).unwrap_or_else(|e| panic!("{e}"));
    safetensors_io::write(&timm, &dir.join("model.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let ms = read_state_dict(&dir.join("swin_tiny_patch4_window7_224.pth")).unwrap_or_else(|e| panic!("{e}"));
    let timm = read_state_dict(&dir.join("model.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((detect_layout(&ms), detect_layout(&timm)), (SwinLayout::Microsoft, SwinLayout::Timm));
    let (a, _) = to_vismae(ms.clone());
    let (b, _) = to_vismae(timm.clone());
    assert_eq!(a.tensors, b.tensors, "both layouts give the same VIS-MAE tensors");
    // the index shift, on named keys
    let t = |sd: &StateDict, k: &str| sd.tensors.get(k).map(|t| t.values.clone());
    assert!(t(&a, "layers.0.downsample.reduction.weight").is_some());
    assert_eq!(t(&a, "layers.0.downsample.reduction.weight"), t(&timm, "layers.1.downsample.reduction.weight"));
    assert_eq!(t(&a, "layers.2.downsample.norm.bias"), t(&timm, "layers.3.downsample.norm.bias"));
    assert_eq!(t(&a, "head.weight"), t(&timm, "head.fc.weight"));
    assert_eq!(t(&a, "head.weight"), t(&ms, "head.weight"));
    assert!(!a.tensors.keys().any(|k| k.contains("attn_mask")
        || k.contains("relative_position_index")
        || k.contains("layers.3.downsample")));
    let card = a.card().unwrap_or_else(|| panic!("no card"));
    assert_eq!((card.name.as_str(), card.layer_norm_eps), ("ImageNet", Some(1e-5)));
    // the whole of it fits a classifier of Swin-T depths
    let device = Default::default();
    let mut swin_t = ClassifierConfig { swin: Variant::VisMae.swin(3, vec![2, 2, 6, 2]), num_classes: 1000 };
    swin_t.swin.layer_norm_eps = 1e-5;
    let (_, r) =
        apply_state_dict(swin_t.init::<Flex>(&device), &a, LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.missing.is_empty() && r.unused.is_empty(), "{r}");
    assert_eq!(r.applied.len(), 173);
    // VIS-MAE's classifier (2,2,2,2): blocks 2-5 of stage 2 are unused; the head is replaced
    let mut rest = a.clone();
    rest.tensors.retain(|k, _| !k.starts_with("head."));
    let (_, r) =
        apply_state_dict(Variant::VisMae.classifier(3, 2).init::<Flex>(&device), &rest, LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.unused.iter().all(|k| k.starts_with("layers.2.blocks.")), "{r}");
    for b in 2..6 {
        assert!(r.unused.contains(&format!("layers.2.blocks.{b}.attn.qkv.weight")), "{r}");
    }
    assert_eq!(r.missing, vec!["head.weight".to_string(), "head.bias".to_string()]);
    let _ = std::fs::remove_dir_all(dir);
}
