//! The live view's loop: the terminal in raw mode on the alternate screen, a sample every interval, keys in between; the terminal restored however it ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use super::draw::draw;
use super::sample::{Sample, Sampler};
use super::source::Source;
use super::text::Meta;
use super::view::{Action, View};
use crate::status::unix_ms;

/// Leaves raw mode and the alternate screen when dropped (an error return
/// included; ratatui's panic hook covers a panic).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn run(mut source: Source, mut view: View, pin_dir: String, interval: Duration) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("`top` draws on a terminal; for a script use `xdp-ecmp top --once` (with --json)");
    }
    let mut sampler = Sampler::default();
    sampler.push(source.read()?, source.structure());
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let _restore = Restore;
    let mut latest: Option<Sample> = None;
    let mut shown: Option<Sample> = None;
    let mut problem: Option<String> = None;
    let mut next = Instant::now() + interval;
    loop {
        let meta = Meta {
            pin_dir: pin_dir.clone(),
            interval: interval.as_secs_f64(),
            now_ms: unix_ms(),
            problem: problem.clone(),
        };
        let cut = shown.as_ref().map(|s| view.shown(s));
        terminal.draw(|f| draw(f, &view, &meta, cut.as_ref()))?;
        if event::poll(next.saturating_duration_since(Instant::now()))? {
            if let Event::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press && view.key(k) == Action::Quit {
                    return Ok(());
                }
                if !view.frozen {
                    shown.clone_from(&latest);
                }
            }
        }
        if Instant::now() < next {
            continue;
        }
        next += interval;
        if next < Instant::now() {
            next = Instant::now() + interval;
        }
        // A failed read (the pins went away) is said in the footer; the
        // next interval tries again.
        let read = source.refresh_if_due(interval).and_then(|()| source.read());
        match read {
            Ok(r) => {
                problem = None;
                if let Some(s) = sampler.push(r, source.structure()) {
                    latest = Some(s);
                    if !view.frozen {
                        shown.clone_from(&latest);
                    }
                }
            }
            Err(e) => problem = Some(format!("reading the maps: {e:#}")),
        }
    }
}
