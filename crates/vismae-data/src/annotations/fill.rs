//! Polygon filling by pixel centres, as scikit-image's `draw.polygon` fills (the reference that
//! pydicom users rasterise RTSTRUCT contours with): a pixel is in when its centre is inside the
//! polygon or on its boundary, by the ray-crossing test of O'Rourke, *Computational Geometry in
//! C* (2nd ed., ch. 7), which tells inside, outside, vertex and edge apart.

/// Where a point lies with respect to a polygon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Outside,
    Inside,
    Boundary,
}

/// Classifies point (`x`, `y`) against the polygon with vertices `xs`, `ys` (closed implicitly).
/// Only the edges in `edges` (those whose y-range holds `y`) can change the answer.
fn classify(xs: &[f64], ys: &[f64], edges: &[usize], x: f64, y: f64) -> Place {
    const EPS: f64 = 1e-12;
    let n = xs.len();
    let (mut right, mut left) = (0u32, 0u32);
    for &i in edges {
        // the edge from vertex i - 1 to vertex i, relative to the point
        let j = if i == 0 { n - 1 } else { i - 1 };
        let (x0, y0, x1, y1) = (xs[i] - x, ys[i] - y, xs[j] - x, ys[j] - y);
        if x0.abs() < EPS && y0.abs() < EPS {
            return Place::Boundary;
        }
        let crosses = |x0: f64, y0: f64, x1: f64, y1: f64| (x0 * y1 - x1 * y0) / (y1 - y0);
        if (y0 > 0.0) != (y1 > 0.0) && crosses(x0, y0, x1, y1) > 0.0 {
            right += 1;
        }
        if (y0 < 0.0) != (y1 < 0.0) && crosses(x0, y0, x1, y1) < 0.0 {
            left += 1;
        }
    }
    if right % 2 != left % 2 {
        Place::Boundary
    } else if right % 2 == 1 {
        Place::Inside
    } else {
        Place::Outside
    }
}

/// Toggles (even-odd: a second contour inside a first makes a hole) every pixel of the
/// `rows` x `cols` row-major `mask` whose centre (row r, column c at integer coordinates) is inside
/// or on the polygon with vertices `(row, col)` `points`; returns how many pixels it toggled.
pub fn fill_polygon(mask: &mut [bool], rows: usize, cols: usize, points: &[(f64, f64)]) -> usize {
    if points.len() < 3 || points.iter().any(|p| !p.0.is_finite() || !p.1.is_finite()) {
        return 0;
    }
    let ys: Vec<f64> = points.iter().map(|p| p.0).collect();
    let xs: Vec<f64> = points.iter().map(|p| p.1).collect();
    let lo = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let clamp = |v: f64, n: usize| v.clamp(0.0, n as f64 - 1.0) as usize;
    if hi(&ys) < 0.0 || hi(&xs) < 0.0 || lo(&ys) > rows as f64 - 1.0 || lo(&xs) > cols as f64 - 1.0 {
        return 0;
    }
    // a vertex a rounding error off a pixel centre still reaches it
    let (r0, r1) = (clamp((lo(&ys) - 1e-9).ceil(), rows), clamp((hi(&ys) + 1e-9).floor(), rows));
    let (c0, c1) = (clamp((lo(&xs) - 1e-9).ceil(), cols), clamp((hi(&xs) + 1e-9).floor(), cols));
    let n = points.len();
    let mut toggled = 0;
    let mut edges = Vec::with_capacity(n);
    for r in r0..=r1 {
        let y = r as f64;
        edges.clear();
        edges.extend((0..n).filter(|&i| {
            let j = if i == 0 { n - 1 } else { i - 1 };
            ys[i].min(ys[j]) <= y + 1e-9 && ys[i].max(ys[j]) >= y - 1e-9
        }));
        if edges.is_empty() {
            continue;
        }
        for c in c0..=c1 {
            if classify(&xs, &ys, &edges, c as f64, y) != Place::Outside {
                let m = &mut mask[r * cols + c];
                *m = !*m;
                toggled += 1;
            }
        }
    }
    toggled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(rows: usize, cols: usize, pts: &[(f64, f64)]) -> Vec<Vec<u8>> {
        let mut m = vec![false; rows * cols];
        fill_polygon(&mut m, rows, cols, pts);
        m.chunks(cols).map(|r| r.iter().map(|&b| u8::from(b)).collect()).collect()
    }

    #[test]
    fn a_square_includes_its_boundary_pixels() {
        let m = filled(6, 6, &[(1.0, 1.0), (1.0, 3.0), (3.0, 3.0), (3.0, 1.0)]);
        let expect: Vec<Vec<u8>> = [
            [0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        assert_eq!(m, expect);
    }

    #[test]
    fn a_triangle_takes_the_pixel_centres_inside() {
        // skimage.draw.polygon([0.5, 4.5, 4.5], [0.5, 0.5, 4.5], (6, 6)): rows 1-4, columns up to the diagonal
        let m = filled(6, 6, &[(0.5, 0.5), (4.5, 0.5), (4.5, 4.5)]);
        for (r, row) in m.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let inside = (1..=4).contains(&r) && c >= 1 && c <= r;
                assert_eq!(v == 1, inside, "pixel ({r}, {c}): {m:?}");
            }
        }
    }

    #[test]
    fn a_second_contour_inside_cuts_a_hole_and_off_grid_parts_are_clipped() {
        let mut m = vec![false; 8 * 8];
        fill_polygon(&mut m, 8, 8, &[(0.5, 0.5), (0.5, 6.5), (6.5, 6.5), (6.5, 0.5)]);
        fill_polygon(&mut m, 8, 8, &[(2.5, 2.5), (2.5, 4.5), (4.5, 4.5), (4.5, 2.5)]);
        assert_eq!(m.iter().filter(|&&b| b).count(), 36 - 4);
        assert!(!m[3 * 8 + 3] && m[8 + 1]);
        let mut m = vec![false; 4 * 4];
        assert_eq!(fill_polygon(&mut m, 4, 4, &[(-5.0, -5.0), (-5.0, 1.0), (1.0, 1.0), (1.0, -5.0)]), 4);
        assert_eq!(fill_polygon(&mut m, 4, 4, &[(9.0, 9.0), (9.0, 12.0), (12.0, 12.0)]), 0);
        assert_eq!(fill_polygon(&mut m, 4, 4, &[(0.0, 0.0), (f64::NAN, 1.0), (1.0, 1.0)]), 0);
    }
}
