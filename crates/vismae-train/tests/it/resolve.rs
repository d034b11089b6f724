//! Resolution: settings that cannot work are errors naming the setting, before any folder exists;
//! derived values (warm-up, channels, preprocessing) are computed and reported.

use vismae_run::settings::{CommonFlags, Overrides};
use vismae_run::{Channels, InputNorm, Intensity, PretrainSettings, SegSettings, Task, TaskSettings, Variant};
use vismae_train::finetune::{FinetuneRequest, SettingsFrom, resolve};

use crate::{scratch, seg_csv};

fn request(data: &std::path::Path, sets: &[&str]) -> FinetuneRequest {
    FinetuneRequest {
        task: Task::Segmentation,
        data: data.into(),
        init: vismae_run::Init::Scratch,
        init_name: None,
        splits: None,
        folds: 5,
        fold: 0,
        fraction: 1.0,
        test_cases: Vec::new(),
        settings: SettingsFrom::User(Overrides {
            config: None,
            sets: sets.iter().map(|s| s.to_string()).collect(),
            flags: CommonFlags::default(),
        }),
    }
}

fn error(req: &FinetuneRequest) -> String {
    resolve(req).map(|_| ()).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("resolution succeeded"))
}

#[test]
fn a_warm_up_not_shorter_than_the_run_is_refused() {
    let data = seg_csv(&scratch("warmup"), 10);
    let e = error(&request(&data, &["epochs=10", "warmup_epochs=40"]));
    assert!(e.contains("warmup_epochs 40") && e.contains("not shorter than the run"), "{e}");
    // unset, it is the paper's 40 of 150 epochs as a share of the run, and said so
    let r = resolve(&request(&data, &["epochs=10"])).unwrap_or_else(|e| panic!("{e}"));
    assert!((r.config.warmup_epochs - 10.0 * 40.0 / 150.0).abs() < 1e-12);
    assert!(r.warnings.iter().any(|w| w.contains("warm-up") && w.contains("2.67")), "{:?}", r.warnings);
    // pre-training alike: the reference's 10 of 800 epochs unless given, and never the whole run
    let e = vismae_train::pretrain::resolve(
        &PretrainSettings { warmup_epochs: Some(5.0), steps: Some(3), batch_size: 2, ..Default::default() },
        &std::path::PathBuf::from("/nonexistent"),
        1,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("nonexistent"), "{e}");
}

#[test]
fn misspelt_choices_and_unknown_keys_are_errors_that_list_the_choices() {
    let data = seg_csv(&scratch("typos"), 10);
    let e = error(&request(&data, &["variant=\"tniy\""]));
    assert!(e.contains("tniy") && e.contains("vis-mae"), "{e}");
    let e = error(&request(&data, &["augment=\"elastic\""]));
    assert!(e.contains("elastic") && e.contains("reference"), "{e}");
    let e = error(&request(&data, &["decoder_init=\"mirror\""]));
    assert!(e.contains("mirror") && e.contains("mirrored"), "{e}");
    let e = error(&request(&data, &["epoch=3"]));
    assert!(e.contains("epoch"), "{e}");
    let e = error(&request(&data, &["norm=\"zscore\""]));
    assert!(e.contains("zscore") && e.contains("minmax"), "{e}");
}

#[test]
fn folds_fractions_devices_and_tasks_that_do_not_fit_are_refused() {
    let dir = scratch("fit");
    let data = seg_csv(&dir, 10);
    let mut r = request(&data, &[]);
    r.fraction = 0.3;
    let splits = dir.join("splits.json");
    let folds = vismae_data::splits::grouped_kfold(
        &(0..10)
            .map(|i| vismae_data::splits::Item { id: format!("c{i}"), group: format!("c{i}"), class: None })
            .collect::<Vec<_>>(),
        5,
        0,
        &[0.5, 1.0],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&splits, serde_json::to_string(&folds).unwrap_or_default()).unwrap_or_default();
    r.splits = Some(splits);
    let e = error(&r);
    assert!(e.contains("fraction 0.3 is not in the splits"), "{e}");
    r.fraction = 0.5;
    r.fold = 7;
    assert!(error(&r).contains("fold 7 does not exist"));
    let e = error(&request(&data, &["devices=0"]));
    assert!(e.contains("devices = 0"), "{e}");
    // several replicas are a setting of the run
    let r = resolve(&request(&data, &["devices=2"])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.config.devices, 2);
    let mut cls = request(&data, &[]);
    cls.task = Task::Classification;
    cls.settings = SettingsFrom::User(Overrides::default());
    assert!(error(&cls).contains("use `finetune seg`"));
    // settings built by a program must be of the request's task
    let mut given = request(&data, &[]);
    given.task = Task::Classification;
    given.settings = SettingsFrom::Given(TaskSettings::Segmentation(SegSettings::default()));
    assert!(error(&given).contains("segmentation settings given for a classification run"));
}

#[test]
fn the_preprocessing_is_the_references_unless_asked_and_is_in_the_config() {
    let data = seg_csv(&scratch("prep"), 10);
    let r = resolve(&request(&data, &["variant=\"tiny\"", "size=64"])).unwrap_or_else(|e| panic!("{e}"));
    let p = &r.config.preprocess;
    assert_eq!((p.size, p.in_chans, p.channels), (64, 3, Channels::Grey));
    assert_eq!((&p.intensity, &p.norm), (&Intensity::Stored, &InputNorm::MinMax));
    assert_eq!(r.config.variant(), Variant::Tiny);
    let r = resolve(&request(&data, &["norm=\"meanstd\"", "in_chans=1"])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.config.preprocess.norm.clone(), r.config.preprocess.in_chans), (InputNorm::REFERENCE_MEAN_STD, 1));
    // colour planes cannot feed 2 input channels
    let e = error(&request(&data, &["channels=\"colour\"", "in_chans=2"]));
    assert!(e.contains("1 image file(s) per case") && e.contains("2 input channel(s)"), "{e}");
}

/// Supervised weights in Microsoft's layout (a tiny Swin classifier with `attn_mask` buffers and 5
/// classes): converted on reading; the run builds its network with their LayerNorm eps and feeds
/// them ImageNet statistics, both said; the 5-class head is not loaded into a 2-class run.
#[test]
fn imported_swin_weights_bring_their_eps_and_input_and_lose_a_foreign_head() {
    use burn::backend::Flex;
    use vismae_model::VariantExt;
    use vismae_model::weights::{TensorEntry, Values, export_state_dict, pth_write};
    let dir = scratch("imported");
    for (class, seed) in [("a", 1u64), ("b", 2)] {
        std::fs::create_dir_all(dir.join(format!("set/{class}"))).unwrap_or_default();
        for i in 0..6u64 {
            let p = vismae_train::phantom::phantom(seed, i, 32);
            let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
            image::GrayImage::from_raw(32, 32, img).map(|g| g.save(dir.join(format!("set/{class}/{i}.png"))));
        }
    }
    let model = Variant::Tiny.classifier(3, 5).init::<Flex>(&Default::default());
    let (_, mut sd) = export_state_dict::<Flex, _>(model);
    sd.tensors.insert(
        "layers.0.blocks.0.attn_mask".into(),
        TensorEntry { shape: vec![1, 49, 49], values: Values::F32(vec![0.0; 49 * 49]) },
    );
    pth_write::write(&sd, &dir.join("swin_tiny.pth")).unwrap_or_else(|e| panic!("{e}"));
    let mut req = request(&dir.join("set"), &["variant=\"tiny\"", "size=32", "epochs=1", "warmup_epochs=0"]);
    req.task = Task::Classification;
    req.folds = 3;
    req.init = vismae_run::Init::Weights(dir.join("swin_tiny.pth"));
    let r = resolve(&req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.config.layer_norm_eps, r.config.init_name.as_str()), (1e-5, "ImageNet"));
    assert_eq!(r.config.preprocess.norm, InputNorm::imagenet());
    assert!(
        r.warnings.iter().any(|w| w.contains("eps"))
            && r.warnings.iter().any(|w| w.contains("as the initial weights want")),
        "{:?}",
        r.warnings
    );
    let _serial = crate::serial();
    vismae_train::finetune::start::<crate::Train>(&r, &dir.join("run"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let report = std::fs::read_to_string(dir.join("run/transfer_report.txt")).unwrap_or_default();
    assert!(report.contains("head.*: not loaded (the file's head has 5 classes, this run 2)"), "{report}");
    let cfg = vismae_run::FinetuneConfig::read(&dir.join("run"), None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.layer_norm_eps, 1e-5);
}
