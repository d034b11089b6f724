//! Swin geometry as free functions: window partition/reverse, the cyclic shift, zero padding,
//! the relative position index and the shifted-window attention mask (SPEC §1.3, timm
//! `swin_transformer.py`). Host-side helpers return plain vectors so they can be tested alone.

use burn::tensor::{Tensor, backend::Backend};

/// Relative position index of a `ws x ws` window, row-major `[ws², ws²]`.
///
/// Tokens are numbered `i = y * ws + x`; `idx(i, j) = (yi - yj + ws - 1) * (2 ws - 1) + (xi - xj + ws - 1)`,
/// as in the official Swin. For `ws = 7` row 0 starts `84, 83, 82, ...`.
pub fn relative_position_index(ws: usize) -> Vec<i64> {
    let n = ws * ws;
    let span = (2 * ws - 1) as i64;
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        let (yi, xi) = ((i / ws) as i64, (i % ws) as i64);
        for j in 0..n {
            let (yj, xj) = ((j / ws) as i64, (j % ws) as i64);
            out.push((yi - yj + ws as i64 - 1) * span + (xi - xj + ws as i64 - 1));
        }
    }
    out
}

/// Region labels of the shifted-window mask on an `h x w` grid (already padded to whole windows),
/// row-major. Rows `[0, h-ws)`, `[h-ws, h-shift)`, `[h-shift, h)` get indices 0, 1, 2, likewise
/// columns, and `label = 3 * row_index + col_index` (SPEC §1.3, labels in rolled coordinates).
pub fn shift_region_labels(h: usize, w: usize, ws: usize, shift: usize) -> Vec<u8> {
    let region = |p: usize, n: usize| -> u8 {
        if p + ws < n {
            0
        } else if p + shift < n {
            1
        } else {
            2
        }
    };
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h {
        for x in 0..w {
            out.push(3 * region(y, h) + region(x, w));
        }
    }
    out
}

/// The additive attention mask of a shifted block: `[nW, ws², ws²]` flattened, 0 between tokens
/// of the same region and -inf across regions. `h` and `w` must be multiples of `ws`.
///
/// The official code adds -100, which leaves the masked weights at about e^-100 (4e-44) of the
/// row's largest: subnormal floats, below anything a float32 sum or product keeps beside a weight
/// near 1, so the results are the same, but every CPU multiply-add that meets one takes a microcode
/// assist. -inf gives exact zeros instead: 12 % faster MAE training and, with the inference
/// kernel's own cut-off, 45 % faster inference on flex. (The two differ only where a masked
/// logit exceeds the row's unmasked maximum by more than about 84.)
pub fn shift_attention_mask(h: usize, w: usize, ws: usize, shift: usize) -> Vec<f32> {
    let labels = shift_region_labels(h, w, ws, shift);
    let (nh, nw, l) = (h / ws, w / ws, ws * ws);
    let mut out = Vec::with_capacity(nh * nw * l * l);
    for wy in 0..nh {
        for wx in 0..nw {
            let label = |t: usize| labels[(wy * ws + t / ws) * w + wx * ws + t % ws];
            for i in 0..l {
                let li = label(i);
                for j in 0..l {
                    out.push(if li == label(j) { 0.0 } else { f32::NEG_INFINITY });
                }
            }
        }
    }
    out
}

/// Splits `[B, H, W, C]` into windows `[B * H/ws * W/ws, ws * ws, C]`, batch outermost and windows
/// row-major (einops `'B (Nh ws) (Nw ws) C -> (B Nh Nw) (ws ws) C'`). `H`, `W` must be multiples of `ws`.
pub fn window_partition<B: Backend>(x: Tensor<B, 4>, ws: usize) -> Tensor<B, 3> {
    let [b, h, w, c] = x.dims();
    let (nh, nw) = (h / ws, w / ws);
    x.reshape([b, nh, ws, nw, ws, c]) // [B, Nh, ws, Nw, ws, C]
        .permute([0, 1, 3, 2, 4, 5]) // [B, Nh, Nw, ws, ws, C]
        .reshape([b * nh * nw, ws * ws, c])
}

/// Inverse of [`window_partition`]: `[B * Nh * Nw, ws * ws, C]` back to `[B, H, W, C]`.
pub fn window_reverse<B: Backend>(windows: Tensor<B, 3>, ws: usize, b: usize, h: usize, w: usize) -> Tensor<B, 4> {
    let c = windows.dims()[2];
    let (nh, nw) = (h / ws, w / ws);
    windows
        .reshape([b, nh, nw, ws, ws, c]) // [B, Nh, Nw, ws, ws, C]
        .permute([0, 1, 3, 2, 4, 5]) // [B, Nh, ws, Nw, ws, C]
        .reshape([b, h, w, c])
}

/// Cyclic shift of one dimension with PyTorch's `torch.roll` semantics: `out[i] = x[(i - shift) mod n]`.
///
/// burn 0.21's own `roll` shifts the other way (BURN-NOTES.md), so every shift goes through here.
pub fn roll_dim<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize, shift: i64) -> Tensor<B, D> {
    let n = x.dims()[dim] as i64;
    if n == 0 {
        return x;
    }
    let s = shift.rem_euclid(n) as usize;
    if s == 0 {
        return x;
    }
    let n = n as usize;
    let tail = x.clone().narrow(dim, n - s, s);
    let head = x.narrow(dim, 0, n - s);
    Tensor::cat(vec![tail, head], dim)
}

/// Zero-pads `[B, H, W, C]` at the bottom and right by `pad_h` rows and `pad_w` columns.
pub fn pad_bottom_right<B: Backend>(x: Tensor<B, 4>, pad_h: usize, pad_w: usize) -> Tensor<B, 4> {
    let mut x = x;
    let [b, h, _, c] = x.dims();
    if pad_h > 0 {
        let w = x.dims()[2];
        let zeros = Tensor::zeros([b, pad_h, w, c], &x.device());
        x = Tensor::cat(vec![x, zeros], 1);
    }
    if pad_w > 0 {
        let zeros = Tensor::zeros([b, h + pad_h, pad_w, c], &x.device());
        x = Tensor::cat(vec![x, zeros], 2);
    }
    x
}

/// Row indices that turn a `[B*h*w, C]` token matrix (plus one zero row appended at index
/// `B*h*w`) into shifted, zero-padded windows `[B*nW*ws², C]`, and back.
///
/// `forward[r]` is the source row of window row `r` (padding reads the zero row); `reverse[t]` is
/// the window row that holds token `t`. Together they replace pad + roll + partition and
/// reverse + roll + crop by two row gathers, which CPU backends do as bulk copies instead of
/// element-wise strided walks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowIndex {
    /// Window row -> source row.
    pub forward: Vec<i64>,
    /// Token -> window row.
    pub reverse: Vec<i64>,
    /// Padded height and width.
    pub padded: (usize, usize),
}

/// Builds the [`WindowIndex`] of a `b x h x w` token grid with windows `ws` and cyclic shift `shift`
/// (torch `roll(-shift)` before partitioning, as the reference does).
pub fn window_index(b: usize, h: usize, w: usize, ws: usize, shift: usize) -> WindowIndex {
    let (hp, wp) = (h + pad_to_multiple(h, ws), w + pad_to_multiple(w, ws));
    let (nh, nw, l) = (hp / ws, wp / ws, ws * ws);
    let zero_row = (b * h * w) as i64;
    let mut forward = Vec::with_capacity(b * hp * wp);
    let mut reverse = vec![0i64; b * h * w];
    for bi in 0..b {
        for wy in 0..nh {
            for wx in 0..nw {
                for t in 0..l {
                    let (py, px) = (wy * ws + t / ws, wx * ws + t % ws);
                    // rolled[i] = x[(i + shift) mod n]
                    let (y, x) = ((py + shift) % hp, (px + shift) % wp);
                    let row = forward.len() as i64;
                    if y < h && x < w {
                        let src = (bi * h + y) * w + x;
                        forward.push(src as i64);
                        reverse[src] = row;
                    } else {
                        forward.push(zero_row);
                    }
                }
            }
        }
    }
    WindowIndex { forward, reverse, padded: (hp, wp) }
}

/// Row order that merges heads: `[Bn*nH*L, P]` rows (head-major per window) to `[Bn*L*nH, P]`
/// (token-major), so that a reshape gives `[Bn, L, nH*P]`.
pub fn head_merge_index(bn: usize, nh: usize, l: usize) -> Vec<i64> {
    let mut idx = Vec::with_capacity(bn * nh * l);
    for b in 0..bn {
        for t in 0..l {
            for h in 0..nh {
                idx.push(((b * nh + h) * l + t) as i64);
            }
        }
    }
    idx
}

/// Row order that splits a `Linear(C, 3C)` output into q, k and v, each head-major: the output
/// `[Bn*L*3*nH, P]` rows (token-major, then `[q | k | v]`, then head) gathered as `[3, Bn, nH, L]`,
/// so that q, k and v are contiguous `[Bn, nH, L, P]` blocks of one tensor.
pub fn qkv_split_index(bn: usize, l: usize, nh: usize) -> Vec<i64> {
    let mut idx = Vec::with_capacity(3 * bn * nh * l);
    for k in 0..3 {
        for b in 0..bn {
            for h in 0..nh {
                for t in 0..l {
                    idx.push((((b * l + t) * 3 + k) * nh + h) as i64);
                }
            }
        }
    }
    idx
}

/// Indices into the flattened relative position bias table `[(2ws-1)² * nH]` that give the bias of
/// every head and token pair, `[nH, ws², ws²]` row-major (`table[rel(i, j), h]` at `(h, i, j)`).
pub fn relative_bias_index(ws: usize, nh: usize) -> Vec<i64> {
    let rel = relative_position_index(ws);
    (0..nh).flat_map(|h| rel.iter().map(move |&r| r * nh as i64 + h as i64)).collect()
}

/// Row order of patch merging: `[B*h*w, C]` token rows (plus a zero row at index `B*h*w` for an
/// odd side's padding) gathered as `[B, ceil(h/2), ceil(w/2), 4]` rows, the 4 being the
/// neighbours `x00, x10, x01, x11` (row offset, then column offset, varying fastest first), so that
/// a reshape gives the `4C` channels of the reference's concatenation.
pub fn merge_index(b: usize, h: usize, w: usize) -> Vec<i64> {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let zero_row = (b * h * w) as i64;
    let mut idx = Vec::with_capacity(b * ho * wo * 4);
    for bi in 0..b {
        for i in 0..ho {
            for j in 0..wo {
                for (dy, dx) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (y, x) = (2 * i + dy, 2 * j + dx);
                    idx.push(if y < h && x < w { ((bi * h + y) * w + x) as i64 } else { zero_row });
                }
            }
        }
    }
    idx
}

/// Row order of the pixel shuffle of patch expanding by `f`: `[B*h*w*f*f, c]` rows (token, then
/// `P1`, then `P2`) gathered into `[B, h*f, w*f]` order (einops `'B H W (P1 P2 c) -> B (H P1) (W P2) c'`).
pub fn expand_index(b: usize, h: usize, w: usize, f: usize) -> Vec<i64> {
    let mut idx = Vec::with_capacity(b * h * w * f * f);
    for bi in 0..b {
        for i in 0..h {
            for p1 in 0..f {
                for j in 0..w {
                    for p2 in 0..f {
                        idx.push(((((bi * h + i) * w + j) * f + p1) * f + p2) as i64);
                    }
                }
            }
        }
    }
    idx
}

/// Element order that turns per-pixel logits still in patch-expanding order, `[B*h*w*f*f, K]`
/// (token, `P1`, `P2`, class), into `[B, K, H, W]` images cropped to `H x W` (at most `h*f x w*f`):
/// the pixel shuffle, crop and channels-first permute as one gather of single values.
pub fn expand_to_images_index(b: usize, h: usize, w: usize, f: usize, k: usize, out: (usize, usize)) -> Vec<i64> {
    let (oh, ow) = out;
    let mut idx = Vec::with_capacity(b * k * oh * ow);
    for bi in 0..b {
        for ki in 0..k {
            for y in 0..oh {
                for x in 0..ow {
                    let (i, p1, j, p2) = (y / f, y % f, x / f, x % f);
                    idx.push((((((bi * h + i) * w + j) * f + p1) * f + p2) * k + ki) as i64);
                }
            }
        }
    }
    idx
}

/// The gather index of layer kind `kind` at dimensions `dims`, built once per thread by `build` and
/// shared afterwards: index vectors are pure functions of shape.
pub fn cached_rows(kind: &'static str, dims: &[usize], build: impl FnOnce() -> Vec<i64>) -> std::rc::Rc<Vec<i64>> {
    type Cache = std::collections::HashMap<(&'static str, Vec<usize>), std::rc::Rc<Vec<i64>>>;
    thread_local! {
        static ROWS: std::cell::RefCell<Cache> = std::cell::RefCell::new(Cache::new());
    }
    ROWS.with(|cache| {
        cache.borrow_mut().entry((kind, dims.to_vec())).or_insert_with(|| std::rc::Rc::new(build())).clone()
    })
}

/// `x`'s rows `[N, C]` gathered by `index` (a row gather: CPU backends copy whole rows).
pub fn gather_rows<B: Backend>(x: Tensor<B, 2>, index: &[i64]) -> Tensor<B, 2> {
    use burn::tensor::{Int, TensorData};
    let device = x.device();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index.to_vec(), [index.len()]), &device);
    x.select(0, index)
}

/// Smallest padding that makes `n` a multiple of `m`.
pub fn pad_to_multiple(n: usize, m: usize) -> usize {
    (m - n % m) % m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use burn::tensor::TensorData;

    #[test]
    fn relative_index_row0_matches_swin() {
        let idx = relative_position_index(7);
        assert_eq!(idx.len(), 2401);
        assert_eq!(&idx[..8], &[84, 83, 82, 81, 80, 79, 78, 71]);
        assert_eq!(*idx.iter().max().unwrap_or(&0), 168);
        assert_eq!(*idx.iter().min().unwrap_or(&-1), 0);
        // the diagonal is the centre of the table
        assert!((0..49).all(|i| idx[i * 49 + i] == 84));
    }

    #[test]
    fn seven_by_seven_shift_mask_masks_1776_entries() {
        let m = shift_attention_mask(7, 7, 7, 3);
        assert_eq!(m.len(), 2401);
        assert_eq!(m.iter().filter(|&&v| v == f32::NEG_INFINITY).count(), 1776);
        // on the 7x7 grid the first slice is empty: rows 0-3 are region 1, rows 4-6 region 2
        let labels = shift_region_labels(7, 7, 7, 3);
        assert_eq!(labels[0], 4);
        assert_eq!(labels[3], 4);
        assert_eq!(labels[4], 5);
        assert_eq!(labels[4 * 7], 7);
        assert_eq!(labels[48], 8);
    }

    #[test]
    fn shift_mask_on_56_grid_only_touches_last_row_and_column_of_windows() {
        let m = shift_attention_mask(56, 56, 7, 3);
        let per = 49 * 49;
        for wy in 0..8 {
            for wx in 0..8 {
                let win = &m[(wy * 8 + wx) * per..(wy * 8 + wx + 1) * per];
                let masked = win.iter().filter(|&&v| v != 0.0).count();
                let edge = wy == 7 || wx == 7;
                assert_eq!(masked > 0, edge, "window {wy},{wx}");
            }
        }
    }

    #[test]
    fn partition_reverse_round_trip_and_order() {
        let dev = Default::default();
        let (b, h, w, c) = (2, 14, 21, 3);
        let vals: Vec<f32> = (0..b * h * w * c).map(|v| v as f32).collect();
        let x = Tensor::<TestBackend, 4>::from_data(TensorData::new(vals.clone(), [b, h, w, c]), &dev);
        let win = window_partition(x.clone(), 7);
        assert_eq!(win.dims(), [2 * 2 * 3, 49, 3]);
        // window 1 of batch 0 starts at row 0, column 7
        let got: Vec<f32> = win.clone().narrow(0, 1, 1).narrow(1, 0, 1).into_data().to_vec().unwrap_or_default();
        assert_eq!(got, vec![(7 * 3) as f32, 22.0, 23.0]);
        // token 8 of window 0 is row 1, column 1
        let got: Vec<f32> =
            win.clone().narrow(0, 0, 1).narrow(1, 8, 1).narrow(2, 0, 1).into_data().to_vec().unwrap_or_default();
        assert_eq!(got, vec![((w + 1) * c) as f32]);
        let back = window_reverse(win, 7, b, h, w);
        let back: Vec<f32> = back.into_data().to_vec().unwrap_or_default();
        assert_eq!(back, vals);
    }

    #[test]
    fn roll_matches_torch_semantics() {
        let dev = Default::default();
        let x = Tensor::<TestBackend, 1>::from_data(TensorData::new(vec![0f32, 1., 2., 3., 4.], [5]), &dev);
        // torch.roll([0,1,2,3,4], 2) == [3,4,0,1,2]; torch.roll(x, -2) == [2,3,4,0,1]
        let plus: Vec<f32> = roll_dim(x.clone(), 0, 2).into_data().to_vec().unwrap_or_default();
        assert_eq!(plus, vec![3., 4., 0., 1., 2.]);
        let minus: Vec<f32> = roll_dim(x.clone(), 0, -2).into_data().to_vec().unwrap_or_default();
        assert_eq!(minus, vec![2., 3., 4., 0., 1.]);
        let zero: Vec<f32> = roll_dim(x, 0, 5).into_data().to_vec().unwrap_or_default();
        assert_eq!(zero, vec![0., 1., 2., 3., 4.]);
    }

    #[test]
    fn window_index_equals_pad_roll_partition() {
        let dev = Default::default();
        for (h, w, shift) in [(14usize, 14usize, 3usize), (10, 12, 3), (7, 7, 3), (9, 8, 0)] {
            let (b, c, ws) = (2, 3, 7);
            let vals: Vec<f32> = (0..b * h * w * c).map(|v| v as f32 + 1.0).collect();
            let x = Tensor::<TestBackend, 4>::from_data(TensorData::new(vals, [b, h, w, c]), &dev);
            // reference: pad, roll(-shift), partition
            let p = pad_bottom_right(x.clone(), pad_to_multiple(h, ws), pad_to_multiple(w, ws));
            let p = roll_dim(roll_dim(p, 1, -(shift as i64)), 2, -(shift as i64));
            let want: Vec<f32> = window_partition(p, ws).into_data().to_vec().unwrap_or_default();
            let idx = window_index(b, h, w, ws, shift);
            let flat = Tensor::cat(vec![x.reshape([b * h * w, c]), Tensor::zeros([1, c], &dev)], 0);
            let fwd = Tensor::<TestBackend, 1, burn::tensor::Int>::from_data(
                TensorData::new(idx.forward.clone(), [idx.forward.len()]),
                &dev,
            );
            let got = flat.select(0, fwd);
            let got_v: Vec<f32> = got.clone().into_data().to_vec().unwrap_or_default();
            assert_eq!(got_v, want, "{h}x{w} shift {shift}");
            let rev = Tensor::<TestBackend, 1, burn::tensor::Int>::from_data(
                TensorData::new(idx.reverse.clone(), [idx.reverse.len()]),
                &dev,
            );
            let back: Vec<f32> = got.select(0, rev).into_data().to_vec().unwrap_or_default();
            let orig: Vec<f32> = (0..b * h * w * c).map(|v| v as f32 + 1.0).collect();
            assert_eq!(back, orig);
        }
        assert_eq!(head_merge_index(1, 2, 3), vec![0, 3, 1, 4, 2, 5]);
    }

    fn values<const D: usize>(t: Tensor<TestBackend, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap_or_default()
    }

    fn gathered(x: Tensor<TestBackend, 2>, zero_row: bool, index: &[i64]) -> Vec<f32> {
        let c = x.dims()[1];
        let x = if zero_row { Tensor::cat(vec![x, Tensor::zeros([1, c], &Default::default())], 0) } else { x };
        values(gather_rows(x, index))
    }

    #[test]
    fn merge_index_equals_pad_reshape_permute() {
        let dev = Default::default();
        for (h, w) in [(4usize, 6usize), (5, 4), (3, 3), (1, 2)] {
            let (b, c) = (2, 3);
            let x = Tensor::<TestBackend, 4>::from_data(
                TensorData::new((0..b * h * w * c).map(|v| v as f32 + 1.0).collect::<Vec<_>>(), [b, h, w, c]),
                &dev,
            );
            // the reference: pad, then '(h p) (w q) C -> h w (q p C)'
            let p = pad_bottom_right(x.clone(), h % 2, w % 2);
            let [_, hp, wp, _] = p.dims();
            let want =
                values(p.reshape([b, hp / 2, 2, wp / 2, 2, c]).permute([0, 1, 3, 4, 2, 5]).reshape([b * hp * wp, c]));
            let odd = h % 2 == 1 || w % 2 == 1;
            assert_eq!(gathered(x.reshape([b * h * w, c]), odd, &merge_index(b, h, w)), want, "{h}x{w}");
        }
    }

    #[test]
    fn expand_index_equals_pixel_shuffle() {
        let dev = Default::default();
        for (h, w, f) in [(2usize, 3usize, 2usize), (3, 2, 4), (1, 1, 2)] {
            let (b, c) = (2, 3);
            let n = b * h * w * f * f * c;
            let x = Tensor::<TestBackend, 4>::from_data(
                TensorData::new((0..n).map(|v| v as f32).collect::<Vec<_>>(), [b, h, w, f * f * c]),
                &dev,
            );
            let want = values(x.clone().reshape([b, h, w, f, f, c]).permute([0, 1, 3, 2, 4, 5]).reshape([n / c, c]));
            assert_eq!(gathered(x.reshape([n / c, c]), false, &expand_index(b, h, w, f)), want);
        }
    }

    #[test]
    fn expand_to_images_index_equals_shuffle_crop_permute() {
        let dev = Default::default();
        let (b, h, w, f, k) = (2usize, 2usize, 3usize, 4usize, 3usize);
        let n = b * h * w * f * f * k;
        let x = Tensor::<TestBackend, 2>::from_data(
            TensorData::new((0..n).map(|v| v as f32).collect::<Vec<_>>(), [n / k, k]),
            &dev,
        );
        for out in [(h * f, w * f), (7, 10)] {
            let rows = gathered(x.clone(), false, &expand_index(b, h, w, f));
            let img = Tensor::<TestBackend, 4>::from_data(TensorData::new(rows, [b, h * f, w * f, k]), &dev);
            let want = values(img.narrow(1, 0, out.0).narrow(2, 0, out.1).permute([0, 3, 1, 2]));
            let got = gathered(x.clone().reshape([n, 1]), false, &expand_to_images_index(b, h, w, f, k, out));
            assert_eq!(got, want, "{out:?}");
        }
    }

    #[test]
    fn qkv_and_bias_indices_equal_the_permutes_they_replace() {
        let dev = Default::default();
        let (bn, l, nh, p) = (2usize, 4usize, 3usize, 2usize);
        let n = bn * l * 3 * nh * p;
        let qkv = Tensor::<TestBackend, 3>::from_data(
            TensorData::new((0..n).map(|v| v as f32).collect::<Vec<_>>(), [bn, l, 3 * nh * p]),
            &dev,
        );
        let got = gathered(qkv.clone().reshape([n / p, p]), false, &qkv_split_index(bn, l, nh));
        let c = nh * p;
        for k in 0..3 {
            let want = values(qkv.clone().narrow(2, k * c, c).reshape([bn, l, nh, p]).swap_dims(1, 2));
            assert_eq!(&got[k * n / 3..(k + 1) * n / 3], &want[..], "part {k}");
        }
        let ws = 3;
        let span = (2 * ws - 1) * (2 * ws - 1);
        let table = Tensor::<TestBackend, 2>::from_data(
            TensorData::new((0..span * nh).map(|v| v as f32).collect::<Vec<_>>(), [span, nh]),
            &dev,
        );
        let l = ws * ws;
        let rel = relative_position_index(ws);
        let rel = Tensor::<TestBackend, 1, burn::tensor::Int>::from_data(TensorData::new(rel, [l * l]), &dev);
        let want = values(table.clone().select(0, rel).reshape([l, l, nh]).permute([2, 0, 1]));
        assert_eq!(gathered(table.reshape([span * nh, 1]), false, &relative_bias_index(ws, nh)), want);
    }

    #[test]
    fn padding_adds_zeros_bottom_right() {
        let dev = Default::default();
        let x = Tensor::<TestBackend, 4>::ones([1, 2, 3, 1], &dev);
        let p = pad_bottom_right(x, 1, 2);
        assert_eq!(p.dims(), [1, 3, 5, 1]);
        let v: Vec<f32> = p.into_data().to_vec().unwrap_or_default();
        assert_eq!(v.iter().sum::<f32>(), 6.0);
        assert_eq!(v[0..5], [1., 1., 1., 0., 0.]);
        assert_eq!(pad_to_multiple(80, 7), 4);
        assert_eq!(pad_to_multiple(56, 7), 0);
    }
}
