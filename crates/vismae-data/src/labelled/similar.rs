//! Near-duplicate images of a labelled set, for splits of sets without patient ids (Br35H's class
//! folders hold the same slice re-windowed, re-cropped or re-saved under several names). Each
//! case's middle image gets a 64-bit difference hash: grey, area-averaged to 9 x 8, one bit per
//! horizontally adjacent pair (left brighter than right). Cases with the same hash are put in one
//! group, joined with the patient groups the layout knows. The hash ignores brightness, contrast
//! and resampling, so it over-groups rather than misses a copy: for splits that is the safe side.

use std::collections::HashMap;

use rayon::prelude::*;
use vismae_run::{Channels, InputNorm, Intensity, Preprocess};

use super::LabelledSet;
use crate::error::DataError;
use crate::prep::middle_images;
use crate::raster::Raster;

/// The 64-bit difference hash of a raster (channels averaged).
pub fn dhash(r: &Raster) -> u64 {
    let (w, h, c) = (r.width.max(1), r.height.max(1), r.channels.max(1));
    let mut cells = [[0f64; 9]; 8];
    let mut counts = [[0usize; 9]; 8];
    for y in 0..r.height {
        let cy = y * 8 / h;
        for x in 0..r.width {
            let cx = x * 9 / w;
            let p = &r.data[(y * r.width + x) * c..(y * r.width + x + 1) * c];
            cells[cy][cx] += p.iter().map(|v| f64::from(*v)).sum::<f64>() / c as f64;
            counts[cy][cx] += 1;
        }
    }
    let mut bits = 0u64;
    for y in 0..8 {
        let m: Vec<f64> = (0..9).map(|x| cells[y][x] / counts[y][x].max(1) as f64).collect();
        for x in 0..8 {
            bits = (bits << 1) | u64::from(m[x] > m[x + 1]);
        }
    }
    bits
}

fn find(parent: &mut [usize], mut a: usize) -> usize {
    while parent[a] != a {
        parent[a] = parent[parent[a]];
        a = parent[a];
    }
    a
}

/// What [`similar_groups`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct SimilarGroups {
    /// Each sample's group (the id of the group's first sample in the set's order).
    pub groups: Vec<String>,
    /// Groups of more than one case that the hash joined.
    pub joined_groups: usize,
    /// Cases in them.
    pub joined_cases: usize,
}

/// The groups of `set`'s samples when near-duplicate images (equal difference hash of their
/// first file's middle image) and the cases of one patient must stay together.
pub fn similar_groups(set: &LabelledSet) -> Result<SimilarGroups, DataError> {
    let spec = Preprocess {
        size: 16,
        in_chans: 1,
        channels: Channels::Grey,
        intensity: Intensity::Stored,
        norm: InputNorm::None,
    };
    let hashes: Vec<u64> = set
        .samples
        .par_iter()
        .map(|s| {
            let first = &s.images[..s.images.len().min(1)];
            let images = middle_images(first, &spec)?;
            Ok(images.first().map_or(0, dhash))
        })
        .collect::<Result<_, DataError>>()?;
    let n = set.samples.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut first_of: HashMap<(bool, String), usize> = HashMap::new();
    for (i, s) in set.samples.iter().enumerate() {
        for key in [(false, s.group.clone()), (true, format!("{:016x}", hashes[i]))] {
            let j = *first_of.entry(key).or_insert(i);
            let (a, b) = (find(&mut parent, i), find(&mut parent, j));
            if a != b {
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let roots: Vec<usize> = (0..n).map(|i| find(&mut parent, i)).collect();
    let mut size: HashMap<usize, usize> = HashMap::new();
    for &r in &roots {
        *size.entry(r).or_default() += 1;
    }
    // groups the patients alone would not have made
    let mut by_patient: HashMap<usize, std::collections::HashSet<&str>> = HashMap::new();
    for (i, s) in set.samples.iter().enumerate() {
        by_patient.entry(roots[i]).or_default().insert(s.group.as_str());
    }
    let joined: Vec<usize> = by_patient.iter().filter(|(_, p)| p.len() > 1).map(|(r, _)| *r).collect();
    Ok(SimilarGroups {
        groups: roots.iter().map(|&r| set.samples[r].id.clone()).collect(),
        joined_groups: joined.len(),
        joined_cases: joined.iter().map(|r| size[r]).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhash_ignores_contrast_and_size_but_not_content() {
        let img = |w: usize, h: usize, f: &dyn Fn(f32, f32) -> f32| {
            let data = (0..h * w).map(|i| f((i % w) as f32 / w as f32, (i / w) as f32 / h as f32)).collect();
            Raster::new(w, h, 1, data)
        };
        let blob = |x: f32, y: f32| (-((x - 0.3).powi(2) + (y - 0.6).powi(2)) * 20.0).exp() + 0.3 * x * (1.0 - y);
        let small = img(90, 80, &blob);
        let a = dhash(&small);
        // the same picture at twice the size (each pixel 2 x 2), brighter and with more contrast
        let big: Vec<f32> =
            (0..160 * 180).map(|i| 2.0 * small.data[(i / 180 / 2) * 90 + (i % 180) / 2] + 10.0).collect();
        assert_eq!(a, dhash(&Raster::new(180, 160, 1, big)), "brighter, larger: same hash");
        assert_ne!(a, dhash(&img(90, 80, &|x, y| blob(1.0 - x, y))), "mirrored: another image");
    }
}
