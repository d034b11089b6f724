//! Data parallelism inside one process: a micro-batch is split into contiguous chunks, one per
//! replica (GPUs, or CPU workers in one-thread kernel pools), and the replicas' gradients are
//! summed by burn-collective's all-reduce into one step of one model.

use burn::collective::{self, AllReduceStrategy, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;

use crate::error::{Result, TrainError};

/// One replica's gradients and loss.
pub(crate) type ReplicaOut = (GradientsParams, f64);

/// The collective configuration of `n` data-parallel replicas on one machine: gradients are
/// all-reduced (summed) with burn-collective's tree strategy, which orders devices by id.
fn collective_config(n: usize) -> CollectiveConfig {
    CollectiveConfig::default().with_num_devices(n).with_local_all_reduce_strategy(AllReduceStrategy::Tree(2))
}

/// The contiguous `(first, end)` image ranges of a micro-batch of `n` images over `devices`
/// replicas (empty ranges left out).
pub(crate) fn chunks(n: usize, devices: usize) -> Vec<(usize, usize)> {
    let replicas = devices.clamp(1, n.max(1));
    (0..replicas).map(|w| (w * n / replicas, (w + 1) * n / replicas)).filter(|(a, b)| b > a).collect()
}

/// This node's replicas among all replicas of a run: global replicas `first..first + devices`
/// of `total` (one node: `first` 0 and `total` the device count).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Share {
    /// Global index of this node's first replica.
    pub first: usize,
    /// Replicas over all nodes.
    pub total: usize,
}

impl Share {
    /// All replicas on this one node.
    pub(crate) fn local(devices: usize) -> Self {
        Self { first: 0, total: devices }
    }

    /// This node's share with `devices` replicas, among `nodes` (`None`: alone).
    pub(crate) fn of(nodes: Option<&crate::cluster::Topology>, devices: usize) -> Self {
        match nodes {
            Some(t) => Self { first: t.rank * devices, total: t.nodes * devices },
            None => Self::local(devices),
        }
    }
}

/// The ranges of a micro-batch of `n` images that this node's replicas take: its part of the
/// [`chunks`] over all replicas of the run.
pub(crate) fn local_chunks(n: usize, devices: usize, share: Share) -> Vec<(usize, usize)> {
    let all = chunks(n, share.total.max(devices));
    all.into_iter().skip(share.first).take(devices).collect()
}

/// Splits this node's part of a micro-batch of `n` images ([`local_chunks`]) over its devices,
/// and runs `work(replica, device, (first, end), index)` on each in its own thread with a
/// replica of the model on that device (`index` counts this node's replicas). The replicas' gradients are summed by burn-collective's all-reduce (every replica
/// registers as a peer for the step); the sum, on the first device, is returned with every
/// replica's loss. One chunk runs inline, without the collective.
pub(crate) fn data_parallel<B: AutodiffBackend, M: AutodiffModule<B> + Sync>(
    model: &M,
    devices: &[B::Device],
    n: usize,
    share: Share,
    work: impl Fn(&M, &B::Device, (usize, usize), usize) -> Result<ReplicaOut> + Sync,
) -> Result<(GradientsParams, Vec<f64>)> {
    let chunks = local_chunks(n, devices.len(), share);
    if chunks.is_empty() {
        // more replicas in the run than images in the micro-batch: nothing for this node
        return Ok((GradientsParams::new(), Vec::new()));
    }
    if chunks.len() == 1 {
        let (g, v) = work(model, &devices[0], chunks[0], 0)?;
        return Ok((g, vec![v]));
    }
    let peers = chunks.len();
    let outs: Vec<Result<(Option<GradientsParams>, f64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .enumerate()
            .map(|(w, &range)| {
                let dev = devices[w].clone();
                let replica = model.clone().fork(&dev);
                let work = &work;
                scope.spawn(move || {
                    let peer = PeerId::from(w as u32);
                    let fail = |what: &str, e: CollectiveError| TrainError::Replica {
                        replica: w,
                        reason: format!("collective {what} failed: {e:?}"),
                    };
                    collective::register::<B::InnerBackend>(peer, dev.clone(), collective_config(peers))
                        .map_err(|e| fail("register", e))?;
                    // each replica in a one-thread rayon pool: the CPU kernels (gemm, reductions)
                    // then never split work with the other replica, so results are bit-reproducible
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .map_err(|e| TrainError::Replica { replica: w, reason: e.to_string() });
                    let out = pool.and_then(|p| p.install(|| work(&replica, &dev, range, w)));
                    // every peer must take part in the all-reduce, even one whose work failed
                    let (grads, value) = match out {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = collective::finish_collective::<B::InnerBackend>(peer);
                            return Err(e);
                        }
                    };
                    let summed = grads
                        .all_reduce::<B::InnerBackend>(peer, ReduceOperation::Sum)
                        .map_err(|e| fail("all-reduce", e));
                    collective::finish_collective::<B::InnerBackend>(peer).map_err(|e| fail("finish", e))?;
                    Ok(((w == 0).then_some(summed?), value))
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(w, h)| {
                h.join().unwrap_or_else(|_| Err(TrainError::Replica { replica: w, reason: "panicked".into() }))
            })
            .collect()
    });
    let mut grads = None;
    let mut values = Vec::with_capacity(peers);
    for o in outs {
        let (g, v) = o?;
        grads = grads.or(g);
        values.push(v);
    }
    let grads = grads.ok_or(TrainError::Replica { replica: 0, reason: "returned no gradients".into() })?;
    Ok((grads, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData};
    use vismae_model::VariantExt;
    use vismae_model::layers::with_stochastic_seed;
    use vismae_model::masking::plan_from_seed;
    use vismae_model::weights::{Values, export_state_dict};
    use vismae_model::{SwinMae, Variant};

    type B = Autodiff<Flex>;

    /// The summed gradient of a batch computed by `replicas` data-parallel replicas, read back as
    /// the change one plain SGD step (lr 1) makes to every weight.
    fn gradient(replicas: usize) -> Vec<f32> {
        let device = Default::default();
        // under the lock: other tests of this binary build networks from the same generator
        let model: SwinMae<B> = crate::seeds::locked(|| {
            B::seed(&device, 7);
            Variant::Tiny.mae(3).init(&device)
        });
        let (n, size) = (6, 32);
        let data: Vec<f32> = (0..n * 3 * size * size).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let plan = plan_from_seed(model.mask_geometry(size, size), n, 3).unwrap_or_else(|e| panic!("{e}"));
        let devices = vec![device; replicas];
        let per = 3 * size * size;
        let (grads, losses) =
            data_parallel(&model, &devices, n, Share::local(replicas), |replica: &SwinMae<B>, dev, (a, b), _| {
                let sub = crate::pretrain::mae::sub_plan(&plan, a, b);
                with_stochastic_seed(11, a as u64, || {
                    let k = b - a;
                    let x = Tensor::<B, 4>::from_data(
                        TensorData::new(data[a * per..b * per].to_vec(), [k, 3, size, size]),
                        dev,
                    );
                    let loss = replica.forward(x, &sub)?.loss * (k as f64 / n as f64);
                    let value = crate::losses::scalar(loss.clone());
                    Ok((GradientsParams::from_grads::<B, _>(loss.backward(), replica), value))
                })
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(losses.len(), replicas);
        let (model, before) = export_state_dict::<B, _>(model);
        let mut optim = burn::optim::SgdConfig::new().init::<B, SwinMae<B>>();
        let (_, after) = export_state_dict::<B, _>(optim.step(1.0, model, grads));
        let mut delta = Vec::new();
        for (k, t) in &before.tensors {
            if let (Values::F32(a), Values::F32(b)) = (&t.values, &after.tensors[k].values) {
                delta.extend(a.iter().zip(b).map(|(x, y)| x - y));
            }
        }
        delta
    }

    #[test]
    fn the_nodes_shares_of_a_micro_batch_are_the_chunks_of_all_replicas() {
        let all = chunks(10, 6);
        let mut joined = Vec::new();
        for node in 0..3 {
            joined.extend(local_chunks(10, 2, Share { first: node * 2, total: 6 }));
        }
        assert_eq!(joined, all);
        // 2 images over 3 nodes: the last node gets none
        assert!(local_chunks(2, 1, Share { first: 2, total: 3 }).is_empty());
        assert_eq!(local_chunks(5, 2, Share::local(2)), chunks(5, 2));
    }

    #[test]
    fn collective_all_reduce_over_two_and_three_cpu_replicas_equals_one() {
        let one = gradient(1);
        assert!(one.iter().any(|v| *v != 0.0));
        for replicas in [2, 3] {
            let many = gradient(replicas);
            let num: f64 = one.iter().zip(&many).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            let den: f64 = one.iter().map(|a| f64::from(*a).powi(2)).sum();
            let rel = (num / den).sqrt();
            assert!(rel < 1e-5, "{replicas} replicas: summed gradient differs from one replica's by {rel:e}");
        }
    }
}
