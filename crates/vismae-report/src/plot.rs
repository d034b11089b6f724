//! Figures drawn with plotters, each written as SVG and PNG: label-efficiency plots (metric vs %
//! of labels, one line per initialisation, error bars over folds) and training curves (stacked
//! panels sharing the x axis). PNG text uses the Ubuntu Light font bundled by
//! `epaint_default_fonts`, so no system fonts are needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One line: its legend and `(x, y, sd)` points (sd NaN: no error bar).
pub type Line = (String, Vec<(f64, f64, f64)>);

const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
    });
}

type Fail = Box<dyn std::error::Error>;

/// Extent of the values with a margin, never empty.
fn range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-9);
    (lo - pad * span, hi + pad * span)
}

/// A tick label: fixed with up to 3 decimals, or scientific for small or logarithmic values.
fn tick(v: f64, scientific: bool) -> String {
    if v == 0.0 {
        "0".into()
    } else if scientific || v.abs() < 1e-2 {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One panel: lines with markers and error bars in `area`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    markers: bool,
    log_y: bool,
) -> Result<(), Fail>
where
    DB::ErrorType: 'static,
{
    // the legend goes in a strip on the right, so it never hides data
    let (w, _) = area.dim_in_pixel();
    let (area, strip) = area.split_horizontally(w.saturating_sub(250));
    let area = &area;
    let xs = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0));
    let (x0, x1) = range(xs, 0.05);
    let ys = lines.iter().flat_map(|l| {
        l.1.iter().flat_map(|p| {
            let sd = if p.2.is_finite() { p.2 } else { 0.0 };
            [p.1 - sd, p.1 + sd]
        })
    });
    let (y0, y1) = range(ys, 0.08);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .x_label_formatter(&|v| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") })
        .y_label_formatter(&|v| tick(if log_y { 10f64.powf(*v) } else { *v }, log_y || (y1 - y0) < 0.01))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, (name, pts)) in lines.iter().enumerate() {
        let c = colour(i);
        let finite: Vec<(f64, f64)> = pts.iter().filter(|p| p.1.is_finite()).map(|p| (p.0, p.1)).collect();
        chart.draw_series(LineSeries::new(finite.clone(), c.stroke_width(2)))?;
        if markers {
            chart.draw_series(finite.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled())))?;
            chart.draw_series(
                pts.iter()
                    .filter(|p| p.1.is_finite() && p.2.is_finite() && p.2 > 0.0)
                    .map(|p| ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, c.stroke_width(2), 10)),
            )?;
        }
        let y = 60 + 22 * i as i32;
        strip.draw(&PathElement::new(vec![(8, y), (30, y)], c.stroke_width(3)))?;
        strip.draw(&Text::new(name.clone(), (36, y - 8), ("sans-serif", 15).into_font().color(&BLACK)))?;
    }
    Ok(())
}

/// Draws `panels` (title, y label, lines) stacked vertically into `root`.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[(String, String, Vec<Line>)],
    x_label: &str,
    markers: bool,
) -> Result<(), Fail>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (area, (title, y_label, lines)) in areas.iter().zip(panels) {
        let log_y = y_label.ends_with("(log scale)");
        panel(area, title, x_label, y_label, lines, markers, log_y)?;
    }
    root.present()?;
    Ok(())
}

/// Writes `stem.svg` and `stem.png` with `panels` stacked; returns both paths.
pub fn figure(
    stem: &Path,
    panels: &[(String, String, Vec<Line>)],
    x_label: &str,
    markers: bool,
) -> Result<(PathBuf, PathBuf), crate::ReportError> {
    register_fonts();
    let (w, h) = (900u32, 360 * panels.len().max(1) as u32);
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let fail = |p: &Path, e: Fail| crate::ReportError::Io { path: p.into(), reason: e.to_string() };
    draw(SVGBackend::new(&svg, (w, h)).into_drawing_area(), panels, x_label, markers).map_err(|e| fail(&svg, e))?;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    draw(BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area(), panels, x_label, markers)
        .map_err(|e| fail(&png, e))?;
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| crate::ReportError::Io { path: png.clone(), reason: "buffer size".into() })?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| crate::ReportError::Io { path: png.clone(), reason: e.to_string() })?;
    vismae_run::run_dir::write_atomic(&png, bytes.get_ref())?;
    Ok((svg, png))
}
