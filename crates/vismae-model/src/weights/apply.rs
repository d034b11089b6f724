//! Applying a state dict to a network (import) and reading one out of it (export), both through
//! the network's official-key walk. Import reports every key: applied, left at initialisation,
//! unused, and shape mismatches (an error unless partial loading was asked for).

use std::collections::BTreeSet;
use std::fmt;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::{ShapeMismatch, StateDict, TensorEntry, Values, WeightError};
use crate::params::{Buffer, ParamIo, TorchLayout, burn_to_torch, torch_to_burn};
use crate::{SimClr, SwinClassifier, SwinMae, SwinUnet};

/// A network whose parameters can be walked under their official keys.
pub trait Visit<B: Backend>: Sized {
    /// Walks every parameter and buffer.
    fn visit_params(self, v: &mut impl ParamIo<B>) -> Self;
}

impl<B: Backend> Visit<B> for SwinMae<B> {
    fn visit_params(self, v: &mut impl ParamIo<B>) -> Self {
        self.visit(v)
    }
}
impl<B: Backend> Visit<B> for SwinUnet<B> {
    fn visit_params(self, v: &mut impl ParamIo<B>) -> Self {
        self.visit(v)
    }
}
impl<B: Backend> Visit<B> for SimClr<B> {
    fn visit_params(self, v: &mut impl ParamIo<B>) -> Self {
        self.visit(v)
    }
}
impl<B: Backend> Visit<B> for SwinClassifier<B> {
    fn visit_params(self, v: &mut impl ParamIo<B>) -> Self {
        self.visit(v)
    }
}

/// Options of a load.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Skip tensors whose shapes disagree (they are still listed) instead of failing.
    pub partial: bool,
}

/// What a load did, key by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Parameters replaced by file tensors.
    pub applied: Vec<String>,
    /// Model parameters the file does not have: they keep their initialisation.
    pub missing: Vec<String>,
    /// File tensors the model has no use for.
    pub unused: Vec<String>,
    /// Shape mismatches (skipped under partial loading).
    pub mismatched: Vec<ShapeMismatch>,
    /// Buffers in the file that match the recomputed ones by key and shape.
    pub buffers: Vec<String>,
}

impl LoadReport {
    /// Number of parameter elements applied.
    pub fn summary(&self) -> String {
        format!(
            "{} tensors applied, {} left at initialisation, {} file tensors unused, {} shape mismatches skipped",
            self.applied.len(),
            self.missing.len(),
            self.unused.len(),
            self.mismatched.len()
        )
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        let list = |f: &mut fmt::Formatter<'_>, title: &str, keys: &[String]| -> fmt::Result {
            if !keys.is_empty() {
                writeln!(f, "{title}:")?;
                for k in keys {
                    writeln!(f, "  {k}")?;
                }
            }
            Ok(())
        };
        list(f, "left at initialisation", &self.missing)?;
        list(f, "unused file tensors", &self.unused)?;
        if !self.mismatched.is_empty() {
            writeln!(f, "shape mismatches:")?;
            for m in &self.mismatched {
                writeln!(f, "  {m}")?;
            }
        }
        Ok(())
    }
}

struct Importer<'a> {
    sd: &'a StateDict,
    used: BTreeSet<String>,
    report: LoadReport,
}

fn as_f32(values: &Values) -> Vec<f32> {
    match values {
        Values::F32(v) => v.clone(),
        Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
    }
}

impl<B: Backend> ParamIo<B> for Importer<'_> {
    fn param<const D: usize>(&mut self, key: &str, p: Param<Tensor<B, D>>, layout: TorchLayout) -> Param<Tensor<B, D>> {
        let Some(entry) = self.sd.tensors.get(key) else {
            self.report.missing.push(key.to_string());
            return p;
        };
        self.used.insert(key.to_string());
        if entry.shape != layout.shape {
            self.report.mismatched.push(ShapeMismatch {
                key: key.to_string(),
                file: entry.shape.clone(),
                model: layout.shape,
            });
            return p;
        }
        let value = p.val();
        let (shape, device) = (value.dims(), value.device());
        let data = torch_to_burn(&as_f32(&entry.values), &layout);
        let tensor = Tensor::<B, D>::from_data(TensorData::new(data, shape), &device);
        self.report.applied.push(key.to_string());
        Param::initialized(p.id, tensor.require_grad())
    }

    fn buffer(&mut self, key: &str, shape: Vec<usize>, _value: impl FnOnce() -> Buffer) {
        let Some(entry) = self.sd.tensors.get(key) else {
            return;
        };
        self.used.insert(key.to_string());
        if entry.shape == shape {
            self.report.buffers.push(key.to_string());
        } else {
            self.report.mismatched.push(ShapeMismatch {
                key: key.to_string(),
                file: entry.shape.clone(),
                model: shape,
            });
        }
    }
}

/// Replaces the model's parameters by the state dict's tensors with the same official key.
/// Shape mismatches fail the load (naming every key and both shapes) unless `opts.partial`.
pub fn apply_state_dict<B: Backend, M: Visit<B>>(
    model: M,
    sd: &StateDict,
    opts: LoadOptions,
) -> Result<(M, LoadReport), WeightError> {
    let mut importer = Importer { sd, used: BTreeSet::new(), report: LoadReport::default() };
    let model = model.visit_params(&mut importer);
    let mut report = importer.report;
    report.unused = sd.tensors.keys().filter(|k| !importer.used.contains(*k)).cloned().collect();
    if !opts.partial && !report.mismatched.is_empty() {
        return Err(WeightError::Shape(report.mismatched));
    }
    Ok((model, report))
}

struct Exporter {
    sd: StateDict,
}

impl<B: Backend> ParamIo<B> for Exporter {
    fn param<const D: usize>(&mut self, key: &str, p: Param<Tensor<B, D>>, layout: TorchLayout) -> Param<Tensor<B, D>> {
        let data: Vec<f32> = p.val().into_data().convert::<f32>().to_vec().unwrap_or_default();
        let values = Values::F32(burn_to_torch(&data, &layout));
        self.sd.tensors.insert(key.to_string(), TensorEntry { shape: layout.shape, values });
        p
    }

    fn buffer(&mut self, key: &str, shape: Vec<usize>, value: impl FnOnce() -> Buffer) {
        let values = match value() {
            Buffer::I64(v) => Values::I64(v),
            Buffer::F32(v) => Values::F32(v),
        };
        self.sd.tensors.insert(key.to_string(), TensorEntry { shape, values });
    }
}

/// The model's parameters and buffers as an official-layout state dict.
pub fn export_state_dict<B: Backend, M: Visit<B>>(model: M) -> (M, StateDict) {
    let mut exporter = Exporter { sd: StateDict::default() };
    let model = model.visit_params(&mut exporter);
    (model, exporter.sd)
}
