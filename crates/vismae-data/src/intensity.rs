//! Intensity handling: the DICOM VOI window (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID),
//! named CT presets, and the fallbacks used when a file carries no usable window. Output is in
//! `[0, 1]`; 8-bit output rounds `255 * y`.

use std::str::FromStr;

/// A window centre and width, in the units of the (rescaled) pixel values (HU for CT).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Window centre (level).
    pub center: f64,
    /// Window width.
    pub width: f64,
}

/// The VOI LUT function of the DICOM header (0028,1056).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VoiFunction {
    /// `LINEAR` (the default).
    #[default]
    Linear,
    /// `LINEAR_EXACT`.
    LinearExact,
    /// `SIGMOID`.
    Sigmoid,
}

impl VoiFunction {
    /// Parses the header value; unknown values mean `LINEAR`.
    pub fn from_header(s: &str) -> Self {
        match s.trim().to_ascii_uppercase().as_str() {
            "LINEAR_EXACT" => VoiFunction::LinearExact,
            "SIGMOID" => VoiFunction::Sigmoid,
            _ => VoiFunction::Linear,
        }
    }
}

impl Window {
    /// Whether the window can be applied (finite, width >= 1 for LINEAR, > 0 otherwise).
    pub fn is_valid(&self, f: VoiFunction) -> bool {
        self.center.is_finite()
            && self.width.is_finite()
            && match f {
                VoiFunction::Linear => self.width >= 1.0,
                _ => self.width > 0.0,
            }
    }

    /// Maps a value to `[0, 1]`.
    ///
    /// LINEAR: `x <= c - 0.5 - (w-1)/2 -> 0`, `x > c - 0.5 + (w-1)/2 -> 1`, otherwise
    /// `((x - (c - 0.5)) / (w - 1) + 0.5)`. LINEAR_EXACT: `(x - c) / w + 0.5` clamped.
    /// SIGMOID: `1 / (1 + exp(-4 (x - c) / w))`.
    pub fn apply(&self, x: f64, f: VoiFunction) -> f64 {
        let (c, w) = (self.center, self.width);
        match f {
            VoiFunction::Linear => {
                if w <= 1.0 {
                    return if x <= c - 0.5 { 0.0 } else { 1.0 };
                }
                if x <= c - 0.5 - (w - 1.0) / 2.0 {
                    0.0
                } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                    1.0
                } else {
                    ((x - (c - 0.5)) / (w - 1.0) + 0.5).clamp(0.0, 1.0)
                }
            }
            VoiFunction::LinearExact => ((x - c) / w + 0.5).clamp(0.0, 1.0),
            VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
        }
    }
}

/// Named CT windows (centre, width in HU), as radiology teaching material gives them.
pub const PRESETS: [(&str, Window); 7] = [
    ("brain", Window { center: 40.0, width: 80.0 }),
    ("subdural", Window { center: 75.0, width: 215.0 }),
    ("lung", Window { center: -600.0, width: 1500.0 }),
    ("mediastinum", Window { center: 50.0, width: 350.0 }),
    ("abdomen", Window { center: 40.0, width: 400.0 }),
    ("liver", Window { center: 30.0, width: 150.0 }),
    ("bone", Window { center: 400.0, width: 1800.0 }),
];

/// A window given by the user: `C,W` or a preset name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowArg(pub Window);

impl FromStr for WindowArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((_, w)) = PRESETS.iter().find(|(n, _)| n.eq_ignore_ascii_case(s.trim())) {
            return Ok(WindowArg(*w));
        }
        let parts: Vec<&str> = s.split(',').collect();
        let bad = || {
            format!(
                "window {s:?}: expected CENTER,WIDTH (e.g. 40,400) or a preset ({})",
                PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
            )
        };
        if parts.len() != 2 {
            return Err(bad());
        }
        let center: f64 = parts[0].trim().parse().map_err(|_| bad())?;
        let width: f64 = parts[1].trim().parse().map_err(|_| bad())?;
        let w = Window { center, width };
        if !w.is_valid(VoiFunction::Linear) {
            return Err(format!("window {s:?}: width must be at least 1"));
        }
        Ok(WindowArg(w))
    }
}

pub use vismae_run::Fallback;

/// What was applied to bring an image to `[0, 1]` (recorded in manifests).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Normalisation {
    /// A window, from the header or the user.
    Window {
        /// The window.
        window: Window,
        /// The VOI function.
        function: VoiFunction,
        /// `header` or `user`.
        from_header: bool,
    },
    /// Min-max over the clip range `[lo, hi]`.
    Range {
        /// Value mapped to 0.
        lo: f64,
        /// Value mapped to 1.
        hi: f64,
        /// Which fallback chose the range.
        fallback: Fallback,
    },
}

/// The `[lo, hi]` range a fallback maps to `[0, 1]` (non-finite values ignored).
pub fn fallback_range(values: &[f32], fallback: Fallback) -> (f64, f64) {
    let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (0.0, 0.0);
    }
    match fallback {
        Fallback::MinMax => {
            let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (lo as f64, hi as f64)
        }
        Fallback::Percentile => {
            finite.sort_by(f32::total_cmp);
            let at = |q: f64| finite[((finite.len() - 1) as f64 * q).round() as usize] as f64;
            (at(0.005), at(0.995))
        }
    }
}

/// Maps values to `[0, 1]` in place by `norm`; `invert` flips the result (MONOCHROME1).
pub fn normalise(values: &mut [f32], norm: &Normalisation, invert: bool) {
    for v in values.iter_mut() {
        let x = *v as f64;
        let y = match norm {
            Normalisation::Window { window, function, .. } => window.apply(x, *function),
            Normalisation::Range { lo, hi, .. } => {
                if hi > lo {
                    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            }
        };
        let y = if y.is_finite() { y } else { 0.0 };
        *v = if invert { 1.0 - y } else { y } as f32;
    }
}

/// Chooses the normalisation: the user's window, else the header's (if valid), else the fallback.
pub fn choose(
    values: &[f32],
    user: Option<Window>,
    header: Option<(Window, VoiFunction)>,
    fallback: Fallback,
) -> Normalisation {
    if let Some(window) = user {
        return Normalisation::Window { window, function: VoiFunction::Linear, from_header: false };
    }
    if let Some((window, function)) = header.filter(|(w, f)| w.is_valid(*f)) {
        return Normalisation::Window { window, function, from_header: true };
    }
    let (lo, hi) = fallback_range(values, fallback);
    Normalisation::Range { lo, hi, fallback }
}

/// `[0, 1]` to 8 bits, rounding.
pub fn to_u8(y: f32) -> u8 {
    (y.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_matches_the_standard() {
        let w = Window { center: 40.0, width: 400.0 };
        let f = VoiFunction::Linear;
        assert_eq!(w.apply(-160.0, f), 0.0); // c - 0.5 - 199.5
        assert_eq!(w.apply(1000.0, f), 1.0);
        assert!((w.apply(39.5, f) - 0.5).abs() < 1e-12);
        assert!((w.apply(239.0, f) - (199.5 / 399.0 + 0.5)).abs() < 1e-12);
        // LINEAR_EXACT and SIGMOID at the centre
        assert!((w.apply(40.0, VoiFunction::LinearExact) - 0.5).abs() < 1e-12);
        assert!((w.apply(40.0, VoiFunction::Sigmoid) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn invalid_header_windows_fall_back() {
        let vals = [0f32, 50.0, 100.0];
        let zero = Window { center: 0.0, width: 0.0 };
        let n = choose(&vals, None, Some((zero, VoiFunction::Linear)), Fallback::MinMax);
        assert_eq!(n, Normalisation::Range { lo: 0.0, hi: 100.0, fallback: Fallback::MinMax });
        let mut v = vals;
        normalise(&mut v, &n, false);
        assert_eq!(v, [0.0, 0.5, 1.0]);
        normalise(&mut v, &Normalisation::Range { lo: 0.0, hi: 1.0, fallback: Fallback::MinMax }, true);
        assert_eq!(v, [1.0, 0.5, 0.0]);
    }

    #[test]
    fn window_arguments_parse() {
        assert_eq!("40,400".parse::<WindowArg>().map(|w| w.0), Ok(Window { center: 40.0, width: 400.0 }));
        assert_eq!("Lung".parse::<WindowArg>().map(|w| w.0.center), Ok(-600.0));
        assert!("40".parse::<WindowArg>().is_err());
        assert!("40,0".parse::<WindowArg>().is_err());
        assert!("x,y".parse::<WindowArg>().unwrap_err().contains("preset"));
    }

    #[test]
    fn percentile_fallback_clips_outliers() {
        let mut v: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        v[0] = -1e6;
        v[999] = 1e6;
        let (lo, hi) = fallback_range(&v, Fallback::Percentile);
        assert!(lo > -1e5 && hi < 1e5, "{lo} {hi}");
        assert_eq!(to_u8(0.5), 128);
    }
}
