//! Batch-parallel inference on the CPU. burn's flex backend runs most of a Swin forward pass on
//! one core, so a batch is split into contiguous chunks, one per worker, each run on its own
//! thread in a one-thread kernel pool (so the result does not depend on how work is shared) and
//! the results are returned in chunk order. The CLI sets the worker count once: the number of
//! cores on the CPU build, 1 with a GPU backend, where one device already runs the whole batch.

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

static WORKERS: AtomicUsize = AtomicUsize::new(1);

/// Sets how many workers [`map_chunks`] uses (at least 1).
pub fn set_workers(n: usize) {
    WORKERS.store(n.max(1), Ordering::Relaxed);
}

/// The worker count [`map_chunks`] uses.
pub fn workers() -> usize {
    WORKERS.load(Ordering::Relaxed)
}

/// Splits `0..n` into up to [`workers`] contiguous ranges and runs `f(start, end)` on each in
/// parallel; returns the results in range order. One worker (or `n <= 1`) runs inline.
pub fn map_chunks<T: Send>(n: usize, f: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
    let w = workers().clamp(1, n.max(1));
    if w == 1 {
        return vec![f(0, n)];
    }
    let bounds: Vec<(usize, usize)> = (0..w).map(|i| (i * n / w, (i + 1) * n / w)).filter(|(a, b)| b > a).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = bounds
            .iter()
            .map(|&(a, b)| {
                let f = &f;
                scope.spawn(move || match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                    Ok(pool) => pool.install(|| f(a, b)),
                    Err(_) => f(a, b),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// `f` (a forward pass) on `x` split along its first (batch) dimension over the workers, the
/// outputs concatenated in order: the same values as `f(x)`, sooner.
pub fn forward_split<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    f: impl Fn(Tensor<B, D>) -> Tensor<B, E> + Sync,
) -> Tensor<B, E> {
    let n = x.dims()[0];
    let mut parts = map_chunks(n, |a, b| f(x.clone().narrow(0, a, b - a)));
    if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(parts, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_batch_in_order() {
        set_workers(3);
        let got = map_chunks(8, |a, b| (a, b));
        assert_eq!(got, vec![(0, 2), (2, 5), (5, 8)]);
        assert_eq!(map_chunks(1, |a, b| (a, b)), vec![(0, 1)]);
        set_workers(1);
        assert_eq!(map_chunks(8, |a, b| (a, b)), vec![(0, 8)]);
    }
}
