//! Whether a series stays flat after its warm-up (the soak's RSS, open
//! files, tasks): a least-squares line through the samples after the
//! warm-up, and the growth it projects over that window, against a
//! tolerance. A leak shows as a steady slope; noise around a level does not.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Verdict {
    /// Within the tolerance over the window after the warm-up.
    Flat,
    /// Both the fitted line and the last sample rose past the tolerance.
    Growing,
    /// Fewer than three samples after the warm-up: nothing to say.
    TooShort,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Flatness {
    pub verdict: Verdict,
    /// Samples after the warm-up.
    pub samples: usize,
    /// First and last values after the warm-up.
    pub first: f64,
    pub last: f64,
    pub min: f64,
    pub max: f64,
    /// The fitted line's rise over the window (same unit as the values).
    pub fitted_growth: f64,
    /// The same per hour.
    pub slope_per_hour: f64,
    /// The growth allowed over the window.
    pub tolerance: f64,
}

/// `points`: (seconds since the start, value). Growth up to `tolerance_pct`
/// percent of the first post-warm-up value, or `tolerance_abs`, whichever
/// is larger, counts as flat.
pub fn flatness(points: &[(f64, f64)], warmup_s: f64, tolerance_pct: f64, tolerance_abs: f64) -> Flatness {
    let after: Vec<(f64, f64)> = points.iter().copied().filter(|(t, _)| *t >= warmup_s).collect();
    let first = after.first().map_or(0.0, |p| p.1);
    let last = after.last().map_or(0.0, |p| p.1);
    let min = after.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = after.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let tolerance = (first.abs() * tolerance_pct / 100.0).max(tolerance_abs);
    let slope = slope(&after);
    let span = after.last().map_or(0.0, |p| p.0) - after.first().map_or(0.0, |p| p.0);
    let fitted_growth = slope * span;
    let verdict = if after.len() < 3 {
        Verdict::TooShort
    } else if fitted_growth > tolerance && last - first > tolerance {
        Verdict::Growing
    } else {
        Verdict::Flat
    };
    Flatness {
        verdict,
        samples: after.len(),
        first,
        last,
        min: if min.is_finite() { min } else { 0.0 },
        max: if max.is_finite() { max } else { 0.0 },
        fitted_growth,
        slope_per_hour: slope * 3600.0,
        tolerance,
    }
}

/// Least-squares slope of `points` (value per second); 0 for fewer than two
/// points or no spread in time.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mv = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mv)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    if var <= 0.0 {
        0.0
    } else {
        cov / var
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..31).map(|m| (m as f64 * 60.0, f(m as f64))).collect()
    }

    #[test]
    fn noise_around_a_level_is_flat() {
        // 66 MiB, +-1 MiB of noise, after a warm-up climb from 40.
        let s = series(|m| {
            if m < 5.0 {
                40.0 + m * 5.0
            } else {
                66.0 + (m * 1.7).sin()
            }
        });
        let f = flatness(&s, 300.0, 5.0, 0.0);
        assert_eq!(f.verdict, Verdict::Flat, "{f:?}");
        assert_eq!(f.samples, 26);
        assert!(f.min >= 65.0 && f.max <= 67.0);
    }

    #[test]
    fn a_steady_climb_is_growing() {
        // 0.5 MiB a minute: 12.5 MiB over the 25 minutes after the warm-up.
        let s = series(|m| 60.0 + m * 0.5);
        let f = flatness(&s, 300.0, 5.0, 0.0);
        assert_eq!(f.verdict, Verdict::Growing, "{f:?}");
        assert!((f.slope_per_hour - 30.0).abs() < 1e-6, "{f:?}");
        assert!((f.fitted_growth - 12.5).abs() < 1e-6);
    }

    #[test]
    fn the_absolute_tolerance_covers_small_counts() {
        // Open files 1,050 -> 1,060: under 5 %, flat; 10 -> 20 past 5 % but within 16 files.
        assert_eq!(
            flatness(&series(|m| 1050.0 + m / 3.0), 300.0, 5.0, 0.0).verdict,
            Verdict::Flat
        );
        assert_eq!(
            flatness(&series(|m| 10.0 + m / 3.0), 300.0, 5.0, 16.0).verdict,
            Verdict::Flat
        );
        assert_eq!(
            flatness(&series(|m| 10.0 + m / 3.0), 300.0, 5.0, 0.0).verdict,
            Verdict::Growing
        );
    }

    #[test]
    fn a_spike_that_falls_back_is_not_growth() {
        let s = series(|m| if (20.0..25.0).contains(&m) { 90.0 } else { 66.0 });
        assert_eq!(flatness(&s, 300.0, 5.0, 0.0).verdict, Verdict::Flat);
    }

    #[test]
    fn too_few_samples_say_so() {
        assert_eq!(
            flatness(&series(|m| m)[..6], 300.0, 5.0, 0.0).verdict,
            Verdict::TooShort
        );
        let f = flatness(&[], 0.0, 5.0, 0.0);
        assert_eq!(
            (f.verdict, f.min, f.max, f.fitted_growth),
            (Verdict::TooShort, 0.0, 0.0, 0.0)
        );
    }
}
