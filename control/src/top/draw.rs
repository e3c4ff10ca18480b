//! The live view drawn with ratatui: a header (engine, daemon, interval, sync activity, totals), the next hops, egress ports, verdicts and groups, and a footer with the keys or the filter prompt.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::sample::Sample;
use super::text::{self, Cells, Meta};
use super::view::{Pane, View};

const KEYS: &str =
    "q quit | s sort (pps, bps, id) | / filter (prefix, address or port) | space freeze | tab pane";

pub fn draw(f: &mut Frame, view: &View, meta: &Meta, sample: Option<&Sample>) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::styled(text::title(sample, meta, view), bold)];
    match sample {
        Some(s) => {
            lines.push(Line::raw(text::sync_line(s, meta)));
            lines.push(Line::raw(text::totals_line(s)));
            lines.extend(s.note.as_deref().map(Line::raw));
        }
        None => lines.push(Line::raw(format!(
            "taking the first sample: a rate needs two reads {:.1} s apart",
            meta.interval
        ))),
    }
    f.render_widget(Paragraph::new(lines), head);
    if let Some(s) = sample {
        draw_body(f, body, view.pane, s);
    }
    let footer = match (&view.prompt, &view.error) {
        (Some(p), Some(e)) => format!("filter: {p}_   ({e}; Enter applies, Esc clears)"),
        (Some(p), None) => {
            format!("filter (a prefix, an address or a port): {p}_   Enter applies, Esc clears")
        }
        (None, _) => match &meta.problem {
            Some(p) => format!("{p} | {KEYS}"),
            None => format!("{KEYS} | pane: {}", view.pane.name()),
        },
    };
    f.render_widget(Paragraph::new(Line::styled(footer, bold)), foot);
}

fn draw_body(f: &mut Frame, area: Rect, pane: Pane, s: &Sample) {
    let nexthops = || table(text::nexthops(s), "Next hops: forwarded to each");
    let ports = || {
        table(
            text::ports(s),
            "Egress ports: their next hops summed (nothing counts per ingress port)",
        )
    };
    let verdicts = || {
        table(
            text::verdicts(s),
            "Verdicts (all ports): where packets go, why",
        )
    };
    match pane {
        Pane::All => {
            // Each part as tall as its rows (a border and a heading more),
            // the groups taking what is left.
            let rows = s.nexthops.len().max(text::verdicts(s).rows.len()) as u16;
            let top_height = (rows + 3).min(area.height * 45 / 100).max(5);
            let ports_height = (s.ports.len() as u16 + 3).min(8);
            let [top, middle, bottom] = Layout::vertical([
                Constraint::Length(top_height),
                Constraint::Length(ports_height),
                Constraint::Min(4),
            ])
            .areas(area);
            let [left, right] =
                Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(top);
            f.render_widget(nexthops(), left);
            f.render_widget(verdicts(), right);
            f.render_widget(ports(), middle);
            f.render_widget(groups(s), bottom);
        }
        Pane::Nexthops => {
            let [top, bottom] =
                Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)])
                    .areas(area);
            f.render_widget(nexthops(), top);
            f.render_widget(ports(), bottom);
        }
        Pane::Groups => f.render_widget(groups(s), area),
        Pane::Verdicts => f.render_widget(verdicts(), area),
    }
}

/// Cells as a bordered table, each column as wide as its widest cell but
/// the last, which takes what is left (and is cut first).
fn table(c: Cells, title: &str) -> Table<'static> {
    let mut widths: Vec<u16> = c.header.iter().map(|h| h.len() as u16).collect();
    for r in &c.rows {
        for (w, x) in widths.iter_mut().zip(r) {
            *w = (*w).max(x.chars().count() as u16);
        }
    }
    let last = widths.len().saturating_sub(1);
    let constraints: Vec<Constraint> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == last {
                Constraint::Fill(1)
            } else {
                Constraint::Length(*w)
            }
        })
        .collect();
    let right = c.right.clone();
    let row = move |cells: Vec<String>| {
        Row::new(cells.into_iter().enumerate().map(|(i, x)| {
            let l = Line::raw(x);
            Cell::from(if right.contains(&i) {
                l.right_aligned()
            } else {
                l
            })
        }))
    };
    let header = row(c.header.iter().map(|h| h.to_string()).collect())
        .style(Style::new().add_modifier(Modifier::BOLD));
    Table::new(c.rows.into_iter().map(row), constraints)
        .header(header)
        .block(Block::bordered().title(title.to_string()))
}

/// The groups as aligned lines (a group's title spans its line).
fn groups(s: &Sample) -> Paragraph<'static> {
    let mut lines: Vec<Line> = text::columns(&text::groups(s))
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 || !l.starts_with(' ') {
                Line::styled(l, Style::new().add_modifier(Modifier::BOLD))
            } else {
                Line::raw(l)
            }
        })
        .collect();
    lines.push(Line::raw(text::GROUPS_LEGEND));
    Paragraph::new(lines).wrap(Wrap { trim: false }).block(
        Block::bordered()
            .title("Groups: each member's share of buckets and of traffic against its weight"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::fixture;
    use crate::top::view::SortBy;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(view: &View, s: Option<&Sample>, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        let meta = Meta {
            pin_dir: "/sys/fs/bpf/x".into(),
            interval: 1.0,
            now_ms: 12_000,
            problem: None,
        };
        t.draw(|f| draw(f, view, &meta, s)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_screen_shows_each_next_hop_with_its_rate_and_the_frozen_header() {
        let s = fixture::sample();
        let mut view = View::new(SortBy::Pps, None);
        let text = screen(&view, Some(&s), 160, 50);
        let row = text
            .lines()
            .find(|l| l.contains("10.0.0.2") && l.contains("xe-o0") && !l.contains("dev"))
            .unwrap_or_else(|| panic!("no next-hop row:\n{text}"));
        assert!(row.contains("1.00k"), "{row}");
        assert!(text.contains("group 7 resilient 8 buckets"), "{text}");
        assert!(text.contains("pass-ttl"), "{text}");
        assert!(!text.contains("FROZEN"));
        view.frozen = true;
        let text = screen(&view, Some(&s), 160, 50);
        assert!(
            text.lines().next().unwrap().contains("FROZEN (2 s old)"),
            "{text}"
        );
    }

    #[test]
    fn before_the_first_sample_and_on_a_small_terminal_it_still_draws() {
        let view = View::new(SortBy::Id, None);
        let text = screen(&view, None, 80, 24);
        assert!(text.contains("taking the first sample"), "{text}");
        let s = fixture::sample();
        let text = screen(&view, Some(&s), 40, 10);
        assert!(text.starts_with("xdp-ecmp top"), "{text}");
    }
}
