//! `vismae weights inspect|convert`: describe a weight file, or convert it between official
//! `.pth`, safetensors and burn records.

use std::path::PathBuf;

use clap::Subcommand;
use vismae_model::store;
use vismae_model::weights::{Format, ModelInfo, detect, read_state_dict, swin_import};

use crate::{Backend, device};

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Print the kind of model, its configuration, parameter count and (with --keys) every tensor.
    Inspect {
        /// A .pth checkpoint, a .safetensors file or a .mpk burn record.
        file: PathBuf,
        /// List every key with its shape and dtype.
        #[arg(long)]
        keys: bool,
    },
    /// Convert between .pth, .safetensors and .mpk (burn record); the output format follows OUT's
    /// extension. Supervised Swin weights in Microsoft's or timm's layout become the VIS-MAE layout.
    Convert {
        /// Input file.
        input: PathBuf,
        /// Output file (.safetensors, .pth or .mpk); must not exist.
        output: PathBuf,
        /// The name the weights get in reports (imports default to `ImageNet`; e.g. `RadImageNet`).
        #[arg(long)]
        name: Option<String>,
        /// The licence note the output's model card gives (for files whose card has none).
        #[arg(long)]
        licence: Option<String>,
        /// The `vismae ingest` dataset the weights were pre-trained on: its images by modality go
        /// into the output's card (for files written before cards held them).
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Where the training images came from, for the card (repeatable; added to the dataset's).
        #[arg(long = "source")]
        sources: Vec<String>,
    },
}

fn describe(info: &ModelInfo) {
    println!("model:            {}", info.kind);
    println!("variant:          {}", info.variant.map(|v| v.name().to_string()).unwrap_or_else(|| "custom".into()));
    let s = &info.swin;
    println!("in_chans:         {}", s.in_chans);
    println!("patch / window:   {} / {}", s.patch_size, s.window_size);
    println!("embed_dim:        {}", s.embed_dim);
    println!("depths:           {:?}", s.depths);
    println!("num_heads:        {:?}", s.num_heads);
    if let Some(c) = info.num_classes {
        println!("classes:          {c}");
    }
    println!("trainable params: {}", info.trainable_params);
}

pub fn run(cmd: WeightsCommand) -> anyhow::Result<()> {
    match cmd {
        WeightsCommand::Inspect { file, keys } => {
            if Format::sniff(&file)? == Format::BurnRecord {
                let (model, spec, _) = store::load::<Backend>(&file, &device())?;
                println!("format:           burn record (spec from {})", store::sidecar(&file).display());
                let (_, sd) = model.state_dict();
                describe(&detect(&sd)?);
                print_card(spec.card.as_ref());
                print_keys(keys, &sd);
                return Ok(());
            }
            let raw = read_state_dict(&file)?;
            println!("format:           {:?}", Format::sniff(&file)?);
            let (sd, layout) = swin_import::to_vismae(raw);
            if layout != swin_import::SwinLayout::Vismae {
                println!("layout:           {} (read as the VIS-MAE layout)", layout.name());
            }
            println!("tensors:          {}", sd.tensors.len());
            match detect(&sd) {
                Ok(info) => describe(&info),
                Err(e) => println!("model:            not recognised ({e})"),
            }
            match (sd.card(), vismae_run::ModelCard::read_beside(&file)) {
                (None, Some((beside, card))) => {
                    println!("model card from:  {}", beside.display());
                    print_card(Some(&card));
                }
                (card, _) => print_card(card.as_ref()),
            }
            print_keys(keys, &sd);
            Ok(())
        }
        WeightsCommand::Convert { input, output, name, licence, dataset, sources } => {
            if output.exists() {
                anyhow::bail!("{} already exists: choose another output (vismae never overwrites)", output.display());
            }
            store::format_for_output(&output)?;
            if Format::sniff(&input)? != Format::BurnRecord {
                let layout = swin_import::detect_layout(&read_state_dict(&input)?);
                if layout != swin_import::SwinLayout::Vismae {
                    println!("layout: {} (converted to the VIS-MAE layout)", layout.name());
                    for n in swin_import::NOTES {
                        println!("  note: {n}");
                    }
                }
            }
            let (model, mut spec, report) = store::load::<Backend>(&input, &device())?;
            if let Some(r) = &report {
                println!("read {}: {}", input.display(), r.summary());
            }
            if let Some(card) = spec.card.as_mut() {
                if let vismae_run::Origin::Imported { source, .. } = &mut card.origin {
                    *source = input.display().to_string();
                }
                if let Some(n) = name {
                    card.name = n;
                }
                if licence.is_some() {
                    card.licence = licence;
                }
                if let Some(d) = &dataset {
                    let modalities = match &card.origin {
                        vismae_run::Origin::Pretrained { modalities, .. } => modalities.clone(),
                        _ => Vec::new(),
                    };
                    let filter = vismae_data::dataset::reader::Filter { modalities, ..Default::default() };
                    let ds = vismae_data::dataset::reader::ShardedDataset::open(d, &filter)?;
                    card.data = Some(vismae_run::DataSummary {
                        images: ds.len(),
                        modalities: ds.modality_counts(),
                        sources: ds.info().sources.clone(),
                    });
                }
                if !sources.is_empty() {
                    card.data.get_or_insert_with(Default::default).sources.extend(sources);
                }
            } else if name.is_some() || licence.is_some() || dataset.is_some() || !sources.is_empty() {
                println!(
                    "note: {} carries no model card, so --name, --licence, --dataset and --source are not recorded",
                    input.display()
                );
            }
            store::save(model, &spec, &output)?;
            println!("wrote {} ({} model)", output.display(), spec.kind);
            Ok(())
        }
    }
}

fn print_card(card: Option<&vismae_run::ModelCard>) {
    match card {
        Some(c) => {
            println!("name:             {}", c.name);
            println!("written by:       vismae {}", c.vismae);
            println!("origin:           {}", serde_json::to_string(&c.origin).unwrap_or_default());
            println!("input:            {}", c.preprocess.describe());
            if !c.classes.is_empty() {
                println!("class names:      {}", c.classes.join(", "));
            }
            if let Some(d) = &c.data {
                let by: Vec<String> = d.modalities.iter().map(|(m, n)| format!("{n} {m}")).collect();
                println!("training data:    {} ({})", d.images, if by.is_empty() { "-".into() } else { by.join(", ") });
                for s in &d.sources {
                    println!("  source:         {s}");
                }
            }
            if !c.metrics.is_empty() {
                let m: Vec<String> = c.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                println!("metrics:          {}", m.join(", "));
            }
            println!("licence:          {}", c.licence.as_deref().unwrap_or(vismae_run::LICENCE_UNSTATED));
        }
        None => println!("model card:       none (not written by vismae 0.2 or later)"),
    }
}

fn print_keys(keys: bool, sd: &vismae_model::weights::StateDict) {
    if keys {
        for (k, t) in &sd.tensors {
            println!("{k}\t{:?}\t{}", t.shape, t.values.dtype());
        }
    }
}
