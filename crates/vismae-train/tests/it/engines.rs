//! The engines as a library: pre-training from a resolved config to weights with a model card
//! (whose input fine-tuning from them follows), and fine-tuning interrupted (its last checkpoint and outputs removed) and resumed to the same
//! bytes; every file read back as the typed run-folder schema.

use vismae_data::dataset::ingest::{IngestOptions, ingest};
use vismae_data::source::SliceOptions;
use vismae_run::{PretrainConfig, PretrainSettings, RunRecord, SegSettings, SegSummary, Task, TaskSettings, Variant};
use vismae_train::finetune::{self, FinetuneRequest, SettingsFrom};
use vismae_train::pretrain;

use crate::{Train, scratch, seg_csv};

#[test]
fn pretraining_writes_a_config_it_reads_back_and_weights_with_a_card() {
    let dir = scratch("pretrain");
    seg_csv(&dir, 12);
    let opts = IngestOptions { size: 32, slices: SliceOptions::default(), jobs: 1, ..IngestOptions::default() };
    ingest(&[dir.join("img")], &dir.join("ds"), &opts, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    let s = PretrainSettings {
        variant: Variant::Tiny,
        steps: Some(3),
        batch_size: 4,
        reconstruct_every: 0,
        reconstruct_images: 2,
        ..PretrainSettings::default()
    };
    let cfg = pretrain::resolve(&s, &dir.join("ds"), 2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cfg.total_steps, cfg.devices, cfg.warmup_steps), (3, 2, 0));
    let _serial = crate::serial();
    let (run, out) = pretrain::start::<Train>(&cfg, &dir.join("run"), &[Default::default(), Default::default()], true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.steps, 3);
    assert_eq!(PretrainConfig::read(run.path()).unwrap_or_else(|e| panic!("{e}")), cfg);
    assert!(matches!(RunRecord::read(run.path()), Ok(RunRecord::Pretrain(_))));
    let sd = vismae_model::weights::read_state_dict(&out.weights).unwrap_or_else(|e| panic!("{e}"));
    let card = sd.card().unwrap_or_else(|| panic!("no model card"));
    assert_eq!((card.name.as_str(), card.preprocess.size), ("VIS-MAE-Generic", 32));
    // fine-tuning from these weights feeds them their pre-training input unless told otherwise
    let req = FinetuneRequest {
        task: Task::Segmentation,
        data: dir.join("set.csv"),
        init: vismae_run::Init::Weights(out.weights.clone()),
        init_name: None,
        splits: None,
        folds: 3,
        fold: 0,
        fraction: 1.0,
        test_cases: Vec::new(),
        settings: SettingsFrom::Given(TaskSettings::Segmentation(SegSettings {
            variant: Variant::Tiny,
            size: 32,
            ..SegSettings::default()
        })),
    };
    let r = finetune::resolve(&req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (&r.config.preprocess.intensity, &r.config.preprocess.norm),
        (&card.preprocess.intensity, &card.preprocess.norm)
    );
    assert!(matches!(card.preprocess.norm, vismae_run::InputNorm::MeanStd { .. }), "{:?}", card.preprocess.norm);
    // a second run into the same folder is refused
    let again = pretrain::start::<Train>(&cfg, &dir.join("run"), &[Default::default()], true);
    assert!(again.err().is_some_and(|e| e.to_string().contains("not empty")));
}

#[test]
fn finetuning_resumed_after_losing_its_last_epoch_ends_with_the_same_weights() {
    let dir = scratch("resume");
    let data = seg_csv(&dir, 10);
    let s = SegSettings {
        variant: Variant::Tiny,
        size: 32,
        epochs: 3,
        warmup_epochs: Some(1.0),
        batch_size: 4,
        keep_checkpoints: 3,
        ..SegSettings::default()
    };
    let req = FinetuneRequest {
        task: Task::Segmentation,
        data,
        init: vismae_run::Init::Scratch,
        init_name: None,
        splits: None,
        folds: 5,
        fold: 0,
        fraction: 1.0,
        test_cases: Vec::new(),
        settings: SettingsFrom::Given(TaskSettings::Segmentation(s)),
    };
    let resolved = finetune::resolve(&req).unwrap_or_else(|e| panic!("{e}"));
    let run = dir.join("run");
    let _serial = crate::serial();
    finetune::start::<Train>(&resolved, &run, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let whole = std::fs::read(run.join("final.safetensors")).unwrap_or_default();
    // the log without the timing fields
    let log = |run: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|mut v| {
                v.as_object_mut().map(|o| o.remove("images_per_s"));
                v
            })
            .collect()
    };
    let lines = log(&run);
    // as if killed during epoch 3: its checkpoint, its log line and the final weights are gone
    std::fs::remove_dir_all(run.join("checkpoints/epoch-00000003")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(run.join("final.safetensors")).unwrap_or_default();
    let (cfg, _, out) = finetune::resume::<Train>(&run, Some(Task::Segmentation), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.resumed_from(), Some(2));
    assert_eq!(cfg, resolved.config);
    assert_eq!(std::fs::read(run.join("final.safetensors")).unwrap_or_default(), whole);
    assert_eq!(log(&run), lines);
    let summary = SegSummary::read(&run).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.train_images + summary.val_images, 10);
    // the wrong task is refused by name
    let wrong = finetune::resume::<Train>(&run, Some(Task::Classification), &Default::default());
    assert!(wrong.err().is_some_and(|e| e.to_string().contains("not classification")));
}
