//! `xdp-ecmp top`: a live view of the rates (per next hop and egress port, per verdict), each group's balance and the daemon's sync activity, or with `--once` one sample as text or JSON.

pub mod balance;
mod draw;
#[cfg(test)]
mod fixture;
mod live;
pub mod sample;
mod source;
mod text;
mod view;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use sample::Sampler;
use source::Source;
use text::Meta;
use view::{Filter, SortBy, View};

/// What `top` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds between the two reads of a sample.
    pub interval: f64,
    /// One sample, printed, then exit.
    pub once: bool,
    /// With `once`: as JSON.
    pub json: bool,
    /// A prefix, an address or a port (see [`Filter`]).
    pub filter: Option<String>,
    /// pps, bps or id.
    pub sort: String,
}

/// `--interval`: seconds, from 0.1 to an hour.
pub fn parse_interval(s: &str) -> Result<f64> {
    let v: f64 = s
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&v) {
        bail!("give 0.1 to 3600 seconds");
    }
    Ok(v)
}

pub fn run(pin_dir: &Path, opts: &Options) -> Result<()> {
    let filter = opts
        .filter
        .as_deref()
        .map(|t| Filter::parse(t).map(|f| (t.to_string(), f)))
        .transpose()?;
    let view = View::new(SortBy::parse(&opts.sort)?, filter);
    let interval = Duration::from_secs_f64(opts.interval);
    // No maps pinned: the error names the pin directory and what to run.
    let mut source = Source::open(pin_dir)?;
    let pins = pin_dir.display().to_string();
    if !opts.once {
        return live::run(source, view, pins, interval);
    }
    let mut sampler = Sampler::default();
    sampler.push(source.read()?, source.structure());
    std::thread::sleep(interval);
    let Some(s) = sampler.push(source.read()?, source.structure()) else {
        bail!("two readings gave no sample");
    };
    let s = view.shown(&s);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let meta = Meta {
            pin_dir: pins,
            interval: opts.interval,
            now_ms: s.taken_ms,
            problem: None,
        };
        println!("{}", text::plain(&s, &meta, &view));
    }
    Ok(())
}
