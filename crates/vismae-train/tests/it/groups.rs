//! Learning-rate groups in fine-tuning: a frozen encoder leaves every encoder tensor as the
//! initial weights gave it while the decoder learns; an encoder learning 10^6 times slower barely
//! moves; the default moves it.

use std::collections::BTreeMap;
use std::path::Path;

use vismae_model::weights::{StateDict, Values, export_state_dict, read_state_dict, safetensors_io};
use vismae_model::{Variant, VariantExt};
use vismae_run::{Init, SegSettings, Task, TaskSettings};
use vismae_train::finetune::groups::is_encoder;
use vismae_train::finetune::{self, FinetuneRequest, SettingsFrom};

use crate::{Train, scratch, seg_csv};

fn values(sd: &StateDict) -> BTreeMap<String, Vec<f32>> {
    sd.tensors
        .iter()
        .filter_map(|(k, t)| match &t.values {
            Values::F32(v) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

/// The largest change of an encoder tensor and of a decoder tensor from `init` to `sd`.
fn moved(init: &BTreeMap<String, Vec<f32>>, sd: &BTreeMap<String, Vec<f32>>) -> (f32, f32) {
    let mut m = (0f32, 0f32);
    for (k, v) in sd {
        let Some(i) = init.get(k) else { continue };
        let d = v.iter().zip(i).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        if is_encoder(k) {
            m.0 = m.0.max(d);
        } else {
            m.1 = m.1.max(d);
        }
    }
    m
}

fn run(dir: &Path, data: &Path, weights: &Path, name: &str, set: impl Fn(&mut SegSettings)) -> (f32, f32) {
    let mut s = SegSettings {
        variant: Variant::Tiny,
        size: 32,
        epochs: 2,
        warmup_epochs: Some(0.0),
        batch_size: 4,
        ..SegSettings::default()
    };
    set(&mut s);
    let req = FinetuneRequest {
        task: Task::Segmentation,
        data: data.into(),
        init: Init::Weights(weights.into()),
        init_name: None,
        splits: None,
        folds: 5,
        fold: 0,
        fraction: 1.0,
        test_cases: Vec::new(),
        settings: SettingsFrom::Given(TaskSettings::Segmentation(s)),
    };
    let resolved = finetune::resolve(&req).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join(name);
    finetune::start::<Train>(&resolved, &out, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let init = values(&read_state_dict(weights).unwrap_or_else(|e| panic!("{e}")));
    moved(&init, &values(&read_state_dict(&out.join("final.safetensors")).unwrap_or_else(|e| panic!("{e}"))))
}

#[test]
fn frozen_and_slower_encoders_learn_as_asked() {
    let dir = scratch("groups");
    let data = seg_csv(&dir, 10);
    let weights = dir.join("mae.safetensors");
    let model = Variant::Tiny.mae(3).init::<burn::backend::Flex>(&Default::default());
    let (_, sd) = export_state_dict::<burn::backend::Flex, _>(model);
    safetensors_io::write(&sd, &weights).unwrap_or_else(|e| panic!("{e}"));
    let _serial = crate::serial();
    let frozen = run(&dir, &data, &weights, "frozen", |s| s.freeze_encoder = true);
    assert_eq!(frozen.0, 0.0, "a frozen encoder is not changed at all");
    assert!(frozen.1 > 1e-4, "the decoder learns: {frozen:?}");
    let slow = run(&dir, &data, &weights, "slow", |s| {
        s.encoder_lr_scale = 1e-6;
        s.layer_decay = 0.75;
    });
    let plain = run(&dir, &data, &weights, "plain", |_| {});
    assert!(slow.0 < 1e-7 && plain.0 > 1e-4, "slow {slow:?}, plain {plain:?}");
    assert!(slow.1 > 1e-4);
}
