//! A small SVG line chart, written by hand: panels stacked vertically, each
//! with its own y axis and one or more lines over a shared time axis (the
//! soak's RSS, and its round-trip p99s). No dependency, no script, no
//! external reference: the file renders anywhere, GitHub included.

use std::fmt::Write;

/// One line of a panel.
pub struct Line {
    pub label: String,
    /// A CSS colour.
    pub color: &'static str,
    /// (x, y): x in the chart's unit (minutes), y in the panel's.
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub unit: String,
    pub lines: Vec<Line>,
}

const WIDTH: f64 = 800.0;
const PANEL_HEIGHT: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const GAP: f64 = 60.0;

/// Text safe inside an SVG element or attribute.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step (1, 2 or 5 times a power of ten) for about `ticks` ticks over `span`.
fn nice_step(span: f64, ticks: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / ticks;
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let k = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    k * p
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The chart: `title` over the panels, x labelled `x_label`.
pub fn render(title: &str, x_label: &str, panels: &[Panel]) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP) + 10.0;
    let xs = panels
        .iter()
        .flat_map(|p| p.lines.iter())
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .filter(|x| x.is_finite());
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0.min(0.0), x1)
    } else {
        (0.0, 1.0)
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (k, panel) in panels.iter().enumerate() {
        let top = TOP + k as f64 * (PANEL_HEIGHT + GAP);
        let bottom = top + PANEL_HEIGHT;
        let ys = panel
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite());
        let ymax = ys.fold(0.0f64, f64::max);
        let step = nice_step(if ymax > 0.0 { ymax } else { 1.0 }, 4.0);
        let ytop = ((ymax / step).ceil() * step).max(step);
        let sy = |y: f64| bottom - (y / ytop) * PANEL_HEIGHT;
        let _ = writeln!(
            o,
            r#"<text x="{LEFT}" y="{}" font-size="13">{} ({})</text>"#,
            top - 8.0,
            escape(&panel.title),
            escape(&panel.unit)
        );
        // Grid and y ticks.
        let mut y = 0.0;
        while y <= ytop + step / 2.0 {
            let py = sy(y);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                py + 4.0,
                fmt_num(y)
            );
            y += step;
        }
        // X ticks.
        let xstep = nice_step(x1 - x0, 8.0);
        let mut x = (x0 / xstep).ceil() * xstep;
        while x <= x1 + xstep / 1000.0 {
            let px = sx(x);
            let _ = writeln!(
                o,
                r##"<line x1="{px:.1}" y1="{bottom}" x2="{px:.1}" y2="{}" stroke="#444"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 4.0,
                bottom + 17.0,
                fmt_num(x)
            );
            x += xstep;
        }
        let _ = writeln!(
            o,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            bottom + 32.0,
            escape(x_label)
        );
        for (j, line) in panel.lines.iter().enumerate() {
            let pts: Vec<String> = line
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                line.color,
                pts.join(" ")
            );
            // Legend, top right of the panel.
            let ly = top + 16.0 + j as f64 * 16.0;
            let lx = WIDTH - RIGHT - 200.0;
            let _ = writeln!(
                o,
                r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/><text x="{}" y="{ly}">{}</text>"#,
                ly - 4.0,
                lx + 20.0,
                ly - 4.0,
                line.color,
                lx + 26.0,
                escape(&line.label)
            );
        }
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, f64)>) -> String {
        render(
            "soak <1000 workers> & churn",
            "minutes",
            &[Panel {
                title: "RSS".into(),
                unit: "MiB".into(),
                lines: vec![Line {
                    label: "coordinator \"RSS\"".into(),
                    color: "#1f77b4",
                    points,
                }],
            }],
        )
    }

    #[test]
    fn draws_every_point_inside_the_plot_and_escapes_text() {
        let svg = chart((0..=30).map(|m| (m as f64, 60.0 + m as f64 / 10.0)).collect());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("soak &lt;1000 workers&gt; &amp; churn"));
        assert!(svg.contains("coordinator &quot;RSS&quot;"));
        let pts = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        let pts: Vec<(f64, f64)> = pts
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(pts.len(), 31);
        for (x, y) in &pts {
            assert!((LEFT..=WIDTH - RIGHT).contains(x), "{x}");
            assert!((TOP..=TOP + PANEL_HEIGHT).contains(y), "{y}");
        }
        // Time runs left to right; the highest value is the highest point.
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(pts[30].1 < pts[0].1);
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn empty_or_constant_series_give_finite_numbers() {
        for svg in [
            chart(Vec::new()),
            chart(vec![(0.0, 0.0), (1.0, 0.0)]),
            chart(vec![(5.0, f64::NAN)]),
        ] {
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(66.0, 4.0), 20.0);
        assert_eq!(nice_step(30.0, 8.0), 5.0);
        assert!((nice_step(0.9, 4.0) - 0.5).abs() < 1e-12);
        assert_eq!(nice_step(0.0, 4.0), 1.0);
    }
}
