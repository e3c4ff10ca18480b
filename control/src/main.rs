//! The `xdp-ecmp` command: the daemon (`run`), attach/detach, `show`, `calc`, `stats` and `doctor`.

mod cli;
mod doctor;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};
use cli::args::{Cli, Cmd};
use control::inspect;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if cli::assets::asked() {
        return cli::assets::run(Cli::command());
    }
    // The long version probes the kernel: only when it is asked for.
    let mut command = Cli::command();
    if std::env::args_os().any(|a| a == "--version") {
        command = command.long_version(String::leak(cli::version::long()) as &str);
    }
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    if !matches!(cli.cmd, Cmd::Run(_)) {
        // A listing piped into `head` ends quietly when the reader goes,
        // as other tools' do (Rust ignores SIGPIPE and println! panics).
        // SAFETY: restores the default disposition; no handler runs.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match &cli.cmd {
        Cmd::Run(args) => cli::run::run_cmd(&cli, args),
        Cmd::Show { what, json } => cli::show::show(&cli, what, *json),
        Cmd::Calc {
            proto,
            src,
            dst,
            sport,
            dport,
            in_port,
            hash_seed,
            pcap,
            json,
        } => cli::calc::calc(
            &cli,
            proto,
            *src,
            *dst,
            *sport,
            *dport,
            in_port.as_deref(),
            *hash_seed,
            pcap.as_deref(),
            *json,
        ),
        Cmd::Attach {
            ports,
            mode,
            hash_seed,
            hash_policy,
            symmetric,
        } => cli::ports::attach(&cli, ports, *mode, *hash_seed, *hash_policy, *symmetric),
        Cmd::Detach { ports } => cli::ports::detach(&cli, ports),
        Cmd::Stats { json } => cli::show::stats(&cli, *json),
        Cmd::Top {
            interval,
            once,
            json,
            filter,
            sort,
        } => control::top::run(
            &cli.pin_dir,
            &control::top::Options {
                interval: *interval,
                once: *once,
                json: *json,
                filter: filter.clone(),
                sort: sort.clone(),
            },
        ),
        Cmd::FlushFlows { prefix } => {
            let within = prefix
                .as_deref()
                .map(control::config::parse_prefix)
                .transpose()?;
            let dp = inspect::open(&cli.pin_dir)?;
            let n = control::flows::flush(&dp, within)?;
            println!("flushed {n} flows");
            Ok(())
        }
        Cmd::Doctor {
            ports,
            config,
            frr_conf,
        } => cli::run::doctor_cmd(&cli, ports, config.as_deref(), frr_conf),
    }
}
