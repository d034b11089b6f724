//! A 2-D image of `f32` samples, channel-interleaved, with resizing as PIL does it (the official
//! code resizes with torchvision on PIL images): separable antialiased bilinear (a triangle filter
//! widened by the downscale factor) for images, nearest neighbour for label maps.

/// Row-major, channel-interleaved samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Raster {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Samples per pixel (1 or 3).
    pub channels: usize,
    /// `height * width * channels` values.
    pub data: Vec<f32>,
}

impl Raster {
    /// A raster from its parts; `data` must have `width * height * channels` values.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), width * height * channels);
        Self { width, height, channels, data }
    }

    /// Grey by ITU-R BT.601 luma (`0.299 R + 0.587 G + 0.114 B`, as PIL's `convert("L")`) for
    /// colour (3 channels, or 4 with alpha); grey plus alpha (2 channels) keeps the grey; any other
    /// count of channels is averaged.
    pub fn to_grey(&self) -> Raster {
        let c = self.channels;
        if c == 1 {
            return self.clone();
        }
        let data = self
            .data
            .chunks_exact(c)
            .map(|p| match c {
                2 => p[0],
                3 | 4 => 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2],
                _ => p.iter().sum::<f32>() / c as f32,
            })
            .collect();
        Raster::new(self.width, self.height, 1, data)
    }

    /// Channel `k` as a grey raster.
    pub fn channel(&self, k: usize) -> Raster {
        let data = self.data.iter().skip(k).step_by(self.channels.max(1)).copied().collect();
        Raster::new(self.width, self.height, 1, data)
    }

    /// A grey raster repeated into `channels` channels (as PIL's `convert("RGB")`).
    pub fn replicate(&self, channels: usize) -> Raster {
        if self.channels != 1 {
            return self.clone();
        }
        let data = self.data.iter().flat_map(|&v| std::iter::repeat_n(v, channels)).collect();
        Raster::new(self.width, self.height, channels, data)
    }

    /// Antialiased bilinear resize to `w x h` (PIL `Image.resize(..., BILINEAR)`).
    pub fn resize_bilinear(&self, w: usize, h: usize) -> Raster {
        if w == self.width && h == self.height {
            return self.clone();
        }
        let c = self.channels;
        let cols = filter_weights(self.width, w);
        let rows = filter_weights(self.height, h);
        // horizontal pass: [height, w, c]
        let mut tmp = vec![0f32; self.height * w * c];
        for y in 0..self.height {
            let src = &self.data[y * self.width * c..(y + 1) * self.width * c];
            for (x, (start, weights)) in cols.iter().enumerate() {
                for ch in 0..c {
                    let mut acc = 0f64;
                    for (k, wt) in weights.iter().enumerate() {
                        acc += *wt * src[(start + k) * c + ch] as f64;
                    }
                    tmp[(y * w + x) * c + ch] = acc as f32;
                }
            }
        }
        let mut out = vec![0f32; h * w * c];
        for (y, (start, weights)) in rows.iter().enumerate() {
            for x in 0..w {
                for ch in 0..c {
                    let mut acc = 0f64;
                    for (k, wt) in weights.iter().enumerate() {
                        acc += *wt * tmp[((start + k) * w + x) * c + ch] as f64;
                    }
                    out[(y * w + x) * c + ch] = acc as f32;
                }
            }
        }
        Raster::new(w, h, c, out)
    }

    /// Nearest-neighbour resize (PIL `NEAREST`: source index `floor((i + 0.5) * in / out)`).
    pub fn resize_nearest(&self, w: usize, h: usize) -> Raster {
        let c = self.channels;
        let mut out = Vec::with_capacity(w * h * c);
        for y in 0..h {
            let sy = (((y as f64 + 0.5) * self.height as f64 / h as f64) as usize).min(self.height - 1);
            for x in 0..w {
                let sx = (((x as f64 + 0.5) * self.width as f64 / w as f64) as usize).min(self.width - 1);
                out.extend_from_slice(&self.data[(sy * self.width + sx) * c..(sy * self.width + sx + 1) * c]);
            }
        }
        Raster::new(w, h, c, out)
    }
}

/// PIL's `precompute_coeffs` for the bilinear (triangle) filter: for each output index, the first
/// source index and normalised weights.
fn filter_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // triangle support 1.0, widened when downscaling
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5).floor().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).floor() as usize).min(in_size);
            let mut weights: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = (x as f64 - center + 0.5) / filter_scale;
                    (1.0 - t.abs()).max(0.0)
                })
                .collect();
            let total: f64 = weights.iter().sum();
            if total > 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (xmin, weights)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_downscale_by_two_averages_pairs() {
        // PIL's widened triangle: output 0 is centred at source 1.0 and reads pixels 0, 1, 2 with
        // weights 0.75, 0.75, 0.25 (normalised), the edge clipping the rest
        let r = Raster::new(4, 1, 1, vec![0.0, 1.0, 2.0, 3.0]);
        let d = r.resize_bilinear(2, 1);
        let want0 = (0.0 * 0.75 + 1.0 * 0.75 + 2.0 * 0.25) / 1.75;
        assert!((d.data[0] as f64 - want0).abs() < 1e-6, "{:?}", d.data);
        assert!((d.data[0] + d.data[1] - 3.0).abs() < 1e-5, "symmetric: {:?}", d.data);
    }

    #[test]
    fn resize_preserves_constants_and_identity() {
        let r = Raster::new(5, 3, 1, vec![0.7; 15]);
        assert!(r.resize_bilinear(11, 2).data.iter().all(|v| (v - 0.7).abs() < 1e-6));
        assert_eq!(r.resize_bilinear(5, 3), r);
        let labels = Raster::new(2, 2, 1, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            labels.resize_nearest(4, 4).data,
            vec![0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.]
        );
    }

    #[test]
    fn grey_uses_bt601() {
        let r = Raster::new(1, 1, 3, vec![1.0, 0.0, 0.0]);
        assert!((r.to_grey().data[0] - 0.299).abs() < 1e-6);
        // two channels (grey + alpha) and five channels do not panic
        assert_eq!(Raster::new(1, 1, 2, vec![0.4, 1.0]).to_grey().data, vec![0.4]);
        assert_eq!(Raster::new(1, 1, 5, vec![1.0, 2.0, 3.0, 4.0, 5.0]).to_grey().data, vec![3.0]);
        assert_eq!(Raster::new(2, 1, 2, vec![0.1, 0.2, 0.3, 0.4]).channel(1).data, vec![0.2, 0.4]);
    }
}
