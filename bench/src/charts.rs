//! PNG charts of the report: packet rate (median bars, min-max whiskers) and flow disruption (each scheme next to the ideal).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::Table;

/// One bar series: a name and, per group, (low, value, high).
struct Series {
    name: String,
    values: Vec<(f64, f64, f64)>,
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(127, 127, 127),
    RGBColor(255, 127, 14),
];

fn grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[Series],
    whiskers: bool,
) -> Result<()> {
    let ymax = series
        .iter()
        .flat_map(|s| s.values.iter().map(|v| v.2.max(v.1)))
        .fold(0.0, f64::max)
        * 1.35
        + 1e-9;
    let root = BitMapBackend::new(path, (1100, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let labels = groups.to_vec();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let g = x.floor();
            if (x - g - 0.5).abs() < 0.01 {
                labels.get(g as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 14))
        .y_desc(y_desc)
        .y_label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let width = 0.8 / series.len() as f64;
    for (si, s) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let x0 = |g: usize| g as f64 + 0.1 + si as f64 * width;
        chart
            .draw_series(s.values.iter().enumerate().map(|(g, v)| {
                Rectangle::new([(x0(g), 0.0), (x0(g) + width * 0.9, v.1)], color.filled())
            }))
            .map_err(|e| anyhow!("{e}"))?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        if whiskers {
            chart
                .draw_series(s.values.iter().enumerate().map(|(g, v)| {
                    ErrorBar::new_vertical(x0(g) + width * 0.45, v.0, v.1, v.2, BLACK.filled(), 8)
                }))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// packet_rate.png from the packet-rate table; returns the file name.
pub fn packet_rate(dir: &Path, t: &Table) -> Result<String> {
    let mut layouts: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for r in &t.rows {
        if !layouts.contains(&r[0].text) {
            layouts.push(r[0].text.clone());
        }
        if !names.contains(&r[1].text) {
            names.push(r[1].text.clone());
        }
    }
    let series: Vec<Series> = names
        .iter()
        .map(|n| Series {
            name: n.clone(),
            values: layouts
                .iter()
                .map(|l| {
                    let row = (0..t.rows.len())
                        .find(|&r| &t.rows[r][0].text == l && &t.rows[r][1].text == n);
                    let v = |c| row.and_then(|r| t.value(r, c)).unwrap_or(0.0);
                    (v("min Mpps"), v("median Mpps"), v("max Mpps"))
                })
                .collect(),
        })
        .collect();
    let file = "packet_rate.png";
    grouped_bars(
        &dir.join(file),
        "packet rate through veth, 64-byte IPv4 UDP (median, min-max)",
        "Mpps at the sinks",
        &layouts,
        &series,
        true,
    )?;
    Ok(file.into())
}

/// disruption.png from the disruption table; returns the file name.
pub fn disruption(dir: &Path, t: &Table) -> Result<String> {
    let groups: Vec<String> = t
        .rows
        .iter()
        .map(|r| {
            format!(
                "N={} {}",
                r[0].text,
                r[1].text.trim_start_matches("1 ").replace("it ", "")
            )
        })
        .collect();
    let series: Vec<Series> = t.columns[2..]
        .iter()
        .map(|c| Series {
            name: c.clone(),
            values: (0..t.rows.len())
                .map(|r| {
                    let v = t.value(r, c).unwrap_or(0.0);
                    (v, v, v)
                })
                .collect(),
        })
        .collect();
    let file = "disruption.png";
    grouped_bars(
        &dir.join(file),
        "flows moved when 1 of N members fails / returns (lower is better; ideal in grey)",
        "% of flows moved",
        &groups,
        &series,
        false,
    )?;
    Ok(file.into())
}
