//! Model-level checks that need no fixture: parameter counts of the full-size networks, shapes
//! on odd input sizes, and that a training step reaches the optimizer (BURN-NOTES trap 1).

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Tensor};
use vismae_model::{Variant, VariantExt};

type B = Flex;
type AB = Autodiff<Flex>;

#[test]
fn full_size_parameter_counts_match_reference() {
    let device = Default::default();
    let v = Variant::VisMae;
    assert_eq!(v.mae(3).init::<B>(&device).num_params(), 26_635_860);
    assert_eq!(v.unet(3, 3).init::<B>(&device).num_params(), 41_378_724);
    assert_eq!(v.classifier(3, 2).init::<B>(&device).num_params(), 20_414_924);
}

#[test]
fn unet_accepts_any_multiple_of_four_and_one_channel() {
    let device = Default::default();
    let model = Variant::Tiny.unet(1, 3).init::<B>(&device);
    for side in [64, 100, 228] {
        let x = Tensor::<B, 4>::random([1, 1, side, side + 8], Distribution::Default, &device);
        assert_eq!(model.forward(x).dims(), [1, 3, side, side + 8], "side {side}");
    }
}

#[test]
fn classifier_and_mae_shapes() {
    let device = Default::default();
    let cls = Variant::Tiny.classifier(3, 5).init::<B>(&device);
    let x = Tensor::<B, 4>::random([2, 3, 224, 224], Distribution::Default, &device);
    assert_eq!(cls.forward(x.clone()).dims(), [2, 5]);
    let mae = Variant::Tiny.mae(3).init::<B>(&device);
    let out = mae.forward_seeded(x, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.pred.dims(), [2, 3136, 48]);
    assert_eq!(out.latent.dims(), [2, 7, 7, 192]);
    assert!(mae.forward_seeded(Tensor::zeros([1, 3, 200, 200], &device), 1).is_err());
}

#[test]
fn a_training_step_moves_the_loss() {
    let device = Default::default();
    let mut model = Variant::Tiny.mae(1).init::<AB>(&device);
    let x = Tensor::<AB, 4>::random([2, 1, 64, 64], Distribution::Default, &device);
    let mut optim = AdamWConfig::new().init::<AB, vismae_model::SwinMae<AB>>();
    let mut losses = Vec::new();
    for _ in 0..3 {
        let out = model.forward_seeded(x.clone(), 3).unwrap_or_else(|e| panic!("{e}"));
        losses.push(out.loss.clone().into_scalar());
        let grads = GradientsParams::from_grads::<AB, _>(out.loss.backward(), &model);
        assert!(!grads.is_empty());
        model = optim.step(1e-3, model, grads);
    }
    assert!(losses[2] < losses[0], "loss did not fall: {losses:?}");
}

fn official_keys(name: &str) -> Vec<(String, Vec<usize>, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/official-keys").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let shape = cols[1]
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<usize>().unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect();
            (cols[0].to_string(), shape, cols[2].to_string())
        })
        .collect()
}

fn exported_keys(sd: &vismae_model::weights::StateDict) -> Vec<(String, Vec<usize>, String)> {
    let mut v: Vec<_> =
        sd.tensors.iter().map(|(k, t)| (k.clone(), t.shape.clone(), t.values.dtype().to_string())).collect();
    v.sort();
    v
}

#[test]
fn full_size_exports_use_the_official_keys_and_shapes() {
    use vismae_model::weights::export_state_dict;
    let device = Default::default();
    let v = Variant::VisMae;
    let mut want = official_keys("vismae_keys_swin_mae.tsv");
    want.sort();
    let (_, sd) = export_state_dict::<B, _>(v.mae(3).init::<B>(&device));
    assert_eq!(exported_keys(&sd), want);

    let mut want = official_keys("vismae_keys_swin_unet.tsv");
    want.sort();
    let classes = want.iter().find(|k| k.0 == "head.weight").map(|k| k.1[0]).unwrap_or(0);
    let (_, sd) = export_state_dict::<B, _>(v.unet(3, classes).init::<B>(&device));
    assert_eq!(exported_keys(&sd), want);

    let mut want = official_keys("vismae_keys_swin_class.tsv");
    want.sort();
    let classes = want.iter().find(|k| k.0 == "head.weight").map(|k| k.1[0]).unwrap_or(0);
    let (_, sd) = export_state_dict::<B, _>(v.classifier(3, classes).init::<B>(&device));
    assert_eq!(exported_keys(&sd), want);
}
