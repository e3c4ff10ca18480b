//! What the live view shows and how keys change it, pure: the sort, the filter (a prefix, an address's route or a port), freezing, the pane; and a sample cut to what they select.

use anyhow::{bail, Result};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::sample::Sample;
use crate::config::parse_prefix;
use crate::state::{contains, Prefix};

/// The order of the next hops, ports and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Packets per second, highest first.
    Pps,
    /// Bits per second, highest first.
    Bps,
    /// Id (ports: name), lowest first.
    Id,
}

impl SortBy {
    pub fn parse(s: &str) -> Result<SortBy> {
        Ok(match s {
            "pps" => SortBy::Pps,
            "bps" => SortBy::Bps,
            "id" => SortBy::Id,
            _ => bail!("sort by {s:?}: give pps, bps or id"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SortBy::Pps => "pps",
            SortBy::Bps => "bps",
            SortBy::Id => "id",
        }
    }

    fn next(self) -> SortBy {
        match self {
            SortBy::Pps => SortBy::Bps,
            SortBy::Bps => SortBy::Id,
            SortBy::Id => SortBy::Pps,
        }
    }
}

/// What fills the screen: everything, or one part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    All,
    Nexthops,
    Groups,
    Verdicts,
}

impl Pane {
    const ORDER: [Pane; 4] = [Pane::All, Pane::Nexthops, Pane::Groups, Pane::Verdicts];

    fn step(self, by: usize) -> Pane {
        let i = Self::ORDER.iter().position(|p| *p == self).unwrap_or(0);
        Self::ORDER[(i + by) % Self::ORDER.len()]
    }

    pub fn name(self) -> &'static str {
        match self {
            Pane::All => "all",
            Pane::Nexthops => "next hops and ports",
            Pane::Groups => "groups",
            Pane::Verdicts => "verdicts",
        }
    }
}

/// What the filter selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// The routes inside a prefix (`10.0.0.0/8`), their groups and next hops.
    Prefix(Prefix),
    /// The route an address takes (its longest match), its group and next hops.
    Address(Prefix),
    /// The next hops out of a port (named exactly, else every port whose
    /// name holds the text), their groups.
    Port(String),
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter> {
        let text = text.trim();
        if text.is_empty() {
            bail!("an empty filter");
        }
        if text.parse::<std::net::IpAddr>().is_ok() {
            return Ok(Filter::Address(parse_prefix(text)?));
        }
        let before_slash = text.split_once('/').map(|(a, _)| a);
        if before_slash.is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok()) {
            return Ok(Filter::Prefix(parse_prefix(text)?));
        }
        Ok(Filter::Port(text.to_string()))
    }

    /// `s` cut to what the filter selects (the verdicts and totals stay:
    /// they are not counted per route or port).
    pub fn apply(&self, s: &mut Sample) {
        let groups: Vec<u32> = match self {
            Filter::Prefix(p) => s
                .groups
                .iter()
                .filter(|g| g.routes.iter().any(|r| within(p, r)))
                .map(|g| g.id)
                .collect(),
            Filter::Address(a) => longest_match(s, a).into_iter().collect(),
            Filter::Port(name) => {
                let devs = ports_named(s, name);
                s.nexthops.retain(|n| devs.contains(&n.dev));
                s.ports.retain(|p| devs.contains(&p.dev));
                s.groups
                    .retain(|g| g.members.iter().any(|m| devs.contains(&m.dev)));
                return;
            }
        };
        s.groups.retain(|g| groups.contains(&g.id));
        s.nexthops
            .retain(|n| n.groups.iter().any(|g| groups.contains(g)));
        let devs: Vec<String> = s.nexthops.iter().map(|n| n.dev.clone()).collect();
        s.ports.retain(|p| devs.contains(&p.dev));
    }
}

/// `route` (as the maps list it) lies inside `p`.
fn within(p: &Prefix, route: &str) -> bool {
    parse_prefix(route).is_ok_and(|r| contains(p, &r))
}

/// The group of the longest route holding `a`.
fn longest_match(s: &Sample, a: &Prefix) -> Option<u32> {
    s.groups
        .iter()
        .flat_map(|g| g.routes.iter().map(move |r| (g.id, r)))
        .filter_map(|(g, r)| {
            let r = parse_prefix(r).ok()?;
            contains(&r, a).then_some((r.len, g))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, g)| g)
}

/// The ports named `name`, else those whose name holds it.
fn ports_named(s: &Sample, name: &str) -> Vec<String> {
    let devs = s.nexthops.iter().map(|n| n.dev.as_str());
    if devs.clone().any(|d| d == name) {
        return vec![name.to_string()];
    }
    let set: std::collections::BTreeSet<&str> = devs.filter(|d| d.contains(name)).collect();
    set.into_iter().map(String::from).collect()
}

/// What a key asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Redraw,
}

/// The live view's state: everything the keys change.
#[derive(Debug, Clone)]
pub struct View {
    pub sort: SortBy,
    pub filter: Option<(String, Filter)>,
    /// The sample shown stops changing.
    pub frozen: bool,
    pub pane: Pane,
    /// The filter being typed, while the prompt is open.
    pub prompt: Option<String>,
    /// Why the last filter typed was not taken.
    pub error: Option<String>,
}

impl View {
    pub fn new(sort: SortBy, filter: Option<(String, Filter)>) -> View {
        View {
            sort,
            filter,
            frozen: false,
            pane: Pane::All,
            prompt: None,
            error: None,
        }
    }

    /// q or Esc quits (Ctrl-C too); s cycles the sort; / opens the filter
    /// prompt (Enter applies, Esc clears the filter); space or f freezes and
    /// unfreezes; Tab (Shift-Tab) shows the next (previous) pane.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = &mut self.prompt {
            match k.code {
                KeyCode::Enter => match Filter::parse(text) {
                    Ok(f) => {
                        self.filter = Some((text.trim().to_string(), f));
                        self.prompt = None;
                        self.error = None;
                    }
                    Err(e) => self.error = Some(format!("{e:#}")),
                },
                KeyCode::Esc => {
                    self.filter = None;
                    self.prompt = None;
                    self.error = None;
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return Action::Redraw;
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('/') => {
                self.prompt = Some(String::new());
                self.error = None;
            }
            KeyCode::Char(' ') | KeyCode::Char('f') => self.frozen = !self.frozen,
            KeyCode::Tab => self.pane = self.pane.step(1),
            KeyCode::BackTab => self.pane = self.pane.step(Pane::ORDER.len() - 1),
            _ => {}
        }
        Action::Redraw
    }

    /// `s` filtered and sorted as this view says.
    pub fn shown(&self, s: &Sample) -> Sample {
        let mut s = s.clone();
        if let Some((_, f)) = &self.filter {
            f.apply(&mut s);
        }
        sort(&mut s, self.sort);
        s
    }
}

/// Sorts next hops, ports and groups (ties by id, which also orders `Id`).
pub fn sort(s: &mut Sample, by: SortBy) {
    use std::cmp::Ordering;
    let key = |pps: f64, bps: f64| match by {
        SortBy::Pps => pps,
        SortBy::Bps => bps,
        SortBy::Id => 0.0,
    };
    let desc = |a: f64, b: f64| b.partial_cmp(&a).unwrap_or(Ordering::Equal);
    s.nexthops.sort_by(|a, b| {
        desc(
            key(a.rate.pps_or_zero(), a.rate.bps_or_zero()),
            key(b.rate.pps_or_zero(), b.rate.bps_or_zero()),
        )
        .then(a.id.cmp(&b.id))
    });
    s.ports.sort_by(|a, b| {
        desc(
            key(a.rate.pps_or_zero(), a.rate.bps_or_zero()),
            key(b.rate.pps_or_zero(), b.rate.bps_or_zero()),
        )
        .then(a.dev.cmp(&b.dev))
    });
    s.groups.sort_by(|a, b| {
        desc(
            key(a.rate.pps_or_zero(), a.rate.bps_or_zero()),
            key(b.rate.pps_or_zero(), b.rate.bps_or_zero()),
        )
        .then(a.id.cmp(&b.id))
    });
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
