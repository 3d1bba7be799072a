//! A small SVG chart of latency distributions: one row per backend and
//! kind (ember invocation, cold start), on a log-scale millisecond axis, with
//! the p50-p90 box, p99 and max whiskers. Below it, groups of plain bars
//! for figures that are not latencies (throughput, CPU per invocation),
//! each group on its own linear axis.

use crate::stats::Summary;

pub struct Row {
    pub label: String,
    pub summary: Summary,
    /// Hot-swap rows and cold-start rows get different colours.
    pub hot: bool,
}

/// One bar of a group.
pub struct Bar {
    pub label: String,
    pub value: f64,
}

/// Bars on one linear axis, under a title that names the unit.
pub struct BarGroup {
    pub title: String,
    pub unit: String,
    pub bars: Vec<Bar>,
}

const BAR_H: f64 = 22.0;
/// Room kept right of the longest bar for its value.
const LABEL_W: f64 = 100.0;

/// A group's SVG, starting at `top`, and its height.
fn bar_group(g: &BarGroup, top: f64, left: f64, width: f64) -> (String, f64) {
    let most = g
        .bars
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // The longest bar leaves room for its value after it.
    let scale = if most > 0.0 {
        (width - LABEL_W) / most
    } else {
        0.0
    };
    let mut s = format!(
        "<text x=\"10\" y=\"{:.1}\" font-size=\"14\">{}</text>\n",
        top + 16.0,
        g.title
    );
    for (i, b) in g.bars.iter().enumerate() {
        let y = top + 26.0 + BAR_H * i as f64;
        let w = if b.value.is_finite() {
            (b.value * scale).max(1.0)
        } else {
            0.0
        };
        s.push_str(&format!(
            "<text x=\"10\" y=\"{:.1}\">{}</text>\n\
             <rect x=\"{left}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"15\" fill=\"#2b8a3e\" fill-opacity=\"0.6\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{:.0} {}</text>\n",
            y + 12.0,
            b.label,
            left + w + 4.0,
            y + 12.0,
            b.value,
            g.unit
        ));
    }
    (s, 36.0 + BAR_H * g.bars.len() as f64)
}

fn x_of(ms: f64, lo: f64, hi: f64, left: f64, width: f64) -> f64 {
    let ms = ms.clamp(lo, hi);
    left + (ms.log10() - lo.log10()) / (hi.log10() - lo.log10()) * width
}

pub fn render(title: &str, rows: &[Row], groups: &[BarGroup]) -> String {
    let (left, width, row_h, top) = (260.0, 620.0, 34.0, 50.0);
    let lo = rows
        .iter()
        .map(|r| r.summary.min_ms)
        .fold(f64::INFINITY, f64::min)
        .max(0.01);
    let hi = rows
        .iter()
        .map(|r| r.summary.max_ms)
        .fold(0.0, f64::max)
        .max(lo * 10.0);
    // No rows (nothing measured): any finite axis will do.
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (1.0, 10.0)
    };
    let (lo, hi) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil()),
    );
    let height = top + row_h * rows.len() as f64 + 50.0;
    let mut bars = String::new();
    let mut bars_h = 0.0;
    for g in groups {
        let (svg, h) = bar_group(g, height + bars_h, left, width);
        bars.push_str(&svg);
        bars_h += h;
    }
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">{title}</text>\n",
        left + width + 30.0,
        height + bars_h
    );
    // Decades on the axis.
    let mut d = lo;
    while d <= hi * 1.0001 {
        let x = x_of(d, lo, hi, left, width);
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} ms</text>\n",
            height - 40.0,
            height - 25.0,
            if d < 1.0 {
                format!("{d}")
            } else {
                format!("{d:.0}")
            }
        ));
        d *= 10.0;
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * i as f64 + row_h / 2.0;
        let colour = if r.hot { "#d9480f" } else { "#1c7ed6" };
        let x = |ms| x_of(ms, lo, hi, left, width);
        let sm = &r.summary;
        s.push_str(&format!(
            "<text x=\"10\" y=\"{:.1}\">{}</text>\n\
             <line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\"/>\n\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{colour}\" fill-opacity=\"0.35\" stroke=\"{colour}\"/>\n\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/>\n\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">p50 {:.2}</text>\n",
            y + 4.0,
            r.label,
            x(sm.min_ms),
            x(sm.max_ms),
            x(sm.p50_ms).min(x(sm.p90_ms)),
            y - 7.0,
            (x(sm.p90_ms) - x(sm.p50_ms)).max(1.0),
            x(sm.p50_ms),
            y - 9.0,
            x(sm.p50_ms),
            y + 9.0,
            x(sm.p99_ms),
            y - 6.0,
            x(sm.p99_ms),
            y + 6.0,
            x(sm.max_ms) + 4.0,
            y + 4.0,
            sm.p50_ms
        ));
    }
    s.push_str(&format!(
        "<text x=\"10\" y=\"{:.1}\" fill=\"#555\">box: p50-p90, thick mark: p50, tick: p99, line: min-max; orange: ember, blue: cold start</text>\n",
        height - 6.0
    ));
    s.push_str(&bars);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;

    #[test]
    fn renders_one_row_per_summary_on_a_log_axis() {
        let rows = vec![
            Row {
                label: "runc hot".into(),
                summary: summarize(&[1.0, 1.5, 2.0]),
                hot: true,
            },
            Row {
                label: "runc cold".into(),
                summary: summarize(&[40.0, 50.0, 90.0]),
                hot: false,
            },
        ];
        let svg = render("t", &rows, &[]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("runc cold") && svg.contains("p50 50.00"));
        assert!(svg.contains(">1 ms<") && svg.contains(">100 ms<"));
    }

    #[test]
    fn bar_groups_go_below_the_rows_on_their_own_scale() {
        let rows = vec![Row {
            label: "runc hot".into(),
            summary: summarize(&[1.0, 2.0]),
            hot: true,
        }];
        let groups = [BarGroup {
            title: "throughput".into(),
            unit: "inv/s".into(),
            bars: vec![
                Bar {
                    label: "fork, 8 clients".into(),
                    value: 1200.0,
                },
                Bar {
                    label: "specialized, 8 clients".into(),
                    value: 2400.0,
                },
            ],
        }];
        let svg = render("t", &rows, &groups);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">throughput<") && svg.contains(">1200 inv/s<"));
        // The longest bar spans the axis but for its value; the other is
        // half of it.
        assert!(svg.contains("width=\"520.0\" height=\"15\""));
        assert!(svg.contains("width=\"260.0\" height=\"15\""));
        let height = |s: &str| {
            let at = s.find("height=\"").unwrap() + 8;
            s[at..].split('"').next().unwrap().parse::<f64>().unwrap()
        };
        assert!(height(&svg) > height(&render("t", &rows, &[])));
    }
}
