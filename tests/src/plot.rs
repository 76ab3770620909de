//! A small SVG line-chart writer for the pictures in docs/ (the failover
//! as Prometheus recorded it, docs/observability.md): stacked panels that
//! share the time axis, one polyline per series, vertical marks for
//! events. Plain text out; nothing to install.

use std::fmt::Write as _;

/// One line of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend (the same name has the same colour in every
    /// panel).
    pub name: String,
    /// `(x, y)` points, sorted by x.
    pub points: Vec<(f64, f64)>,
}

/// One panel: a title, a unit for its y axis, its series.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// The title above it.
    pub title: String,
    /// The y axis's unit (shown after the title).
    pub unit: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Draw as steps (a value holds until the next sample), not slopes.
    pub step: bool,
}

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 150.0;
const GAP: f64 = 48.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 56.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step for a range: 1, 2 or 5 times a power of ten, about
/// `n` ticks.
fn tick_step(range: f64, n: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / n;
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let k = if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    };
    k * p
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The SVG text of `panels` stacked under `title`, x axis labelled
/// `x_label`, with a dashed vertical line and a label at each of `marks`.
#[must_use]
pub fn svg(title: &str, x_label: &str, panels: &[Panel], marks: &[(f64, &str)]) -> String {
    let xs = panels
        .iter()
        .flat_map(|p| p.series.iter())
        .flat_map(|s| s.points.iter().map(|(x, _)| *x))
        .chain(marks.iter().map(|(x, _)| *x));
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !x0.is_finite() || !x1.is_finite() || x1 <= x0 {
        x0 = 0.0;
        x1 = 1.0;
    }
    let mut names: Vec<&str> = Vec::new();
    for s in panels.iter().flat_map(|p| p.series.iter()) {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let colour = |name: &str| {
        let i = names.iter().position(|n| *n == name).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    #[allow(clippy::cast_precision_loss)]
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) + 20.0;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let xstep = tick_step(x1 - x0, 10.0);
    for (pi, p) in panels.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let top = TOP + pi as f64 * (PANEL_H + GAP);
        let bottom = top + PANEL_H;
        let ys = p
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|(_, y)| *y));
        let (ymin, ymax) = ys.fold((0.0f64, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
        let ymax = if ymax.is_finite() && ymax > ymin {
            ymax * 1.1
        } else {
            ymin + 1.0
        };
        let sy = |y: f64| bottom - (y - ymin) / (ymax - ymin) * PANEL_H;
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{}{}</text>"#,
            top - 8.0,
            esc(&p.title),
            if p.unit.is_empty() {
                String::new()
            } else {
                format!(" ({})", esc(&p.unit))
            }
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
        );
        // y ticks and grid
        let ystep = tick_step(ymax - ymin, 4.0);
        let mut y = (ymin / ystep).ceil() * ystep;
        let mut n = 0;
        while y <= ymax && n < 20 {
            let py = sy(y);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                py + 4.0,
                num(y)
            );
            y += ystep;
            n += 1;
        }
        // x ticks
        let mut x = (x0 / xstep).ceil() * xstep;
        let mut n = 0;
        while x <= x1 && n < 40 {
            let px = sx(x);
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#f2f2f2"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 14.0,
                num(x)
            );
            x += xstep;
            n += 1;
        }
        for (x, label) in marks {
            let px = sx(*x);
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#000" stroke-dasharray="4 3"/>"##
            );
            if pi == 0 {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{}">{}</text>"#,
                    px + 4.0,
                    top + 14.0,
                    esc(label)
                );
            }
        }
        for s in &p.series {
            let mut pts = String::new();
            let mut last: Option<(f64, f64)> = None;
            for &(x, y) in &s.points {
                if p.step {
                    if let Some((_, ly)) = last {
                        let _ = write!(pts, "{:.1},{:.1} ", sx(x), sy(ly));
                    }
                }
                let _ = write!(pts, "{:.1},{:.1} ", sx(x), sy(y));
                last = Some((x, y));
            }
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                colour(&s.name),
                pts.trim_end()
            );
        }
        // legend
        for (i, s) in p.series.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let ly = top + 14.0 + i as f64 * 16.0;
            let lx = LEFT + plot_w + 12.0;
            let _ = writeln!(
                out,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                colour(&s.name),
                lx + 24.0,
                ly + 4.0,
                esc(&s.name)
            );
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        height - 6.0,
        esc(x_label)
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_lines_marks_and_escaping() {
        let p = |t: &str, step| Panel {
            title: t.into(),
            unit: "s".into(),
            series: vec![
                Series {
                    name: "node <0>".into(),
                    points: vec![(-2.0, 0.0), (0.0, 1.0), (3.0, 1.0)],
                },
                Series {
                    name: "node 1".into(),
                    points: vec![(-2.0, 1.0), (1.0, 0.0)],
                },
            ],
            step,
        };
        let s = svg(
            "A & B",
            "seconds",
            &[p("one", true), p("two", false)],
            &[(0.0, "off")],
        );
        assert!(s.starts_with("<svg ") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 4);
        assert!(s.contains("A &amp; B") && s.contains("node &lt;0&gt;"));
        assert_eq!(s.matches("stroke-dasharray").count(), 2);
        assert_eq!(s.matches(">off<").count(), 1);
        // A step line has the extra corner points.
        let first = s.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(first.matches(',').count(), 5);
        assert_eq!(tick_step(10.0, 10.0), 1.0);
        assert_eq!(tick_step(26.0, 10.0), 2.0);
        assert_eq!(tick_step(0.04, 4.0), 0.01);
    }
}
