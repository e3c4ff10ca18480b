//! Shell completions and man pages, written from the clap definition of the command by two hidden commands the package build runs (`xdp-ecmp completions SHELL`, `xdp-ecmp man-pages DIR`), kept out of that definition so that neither shows in the help, the completions or the man pages.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;

/// The package build's commands.
#[derive(Parser)]
#[command(name = "xdp-ecmp")]
enum Assets {
    /// Write the completion script for SHELL to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page for the command and one per subcommand into DIR
    /// (which must exist), and list them.
    ManPages { dir: PathBuf },
}

/// Whether the command line asks for one of these.
pub fn asked() -> bool {
    matches!(
        std::env::args_os()
            .nth(1)
            .as_deref()
            .and_then(|a| a.to_str()),
        Some("completions" | "man-pages")
    )
}

/// Runs the one asked for, over `cmd`, the command's definition.
pub fn run(cmd: clap::Command) -> Result<()> {
    match Assets::parse() {
        Assets::Completions { shell } => {
            completions(cmd, shell);
            Ok(())
        }
        Assets::ManPages { dir } => {
            for name in man_pages(cmd, &dir)? {
                println!("{}", dir.join(name).display());
            }
            Ok(())
        }
    }
}

/// Writes the completion script for `shell` to stdout.
fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// Writes a man page for the command and one per subcommand
/// (`xdp-ecmp-show-routes.1`, ...) into `dir`; returns the files written.
fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: create it first (the man pages are written into it)",
            dir.display()
        );
    }
    let name = cmd.get_name().to_string();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&name) && n.ends_with(".1"))
        .collect();
    pages.sort();
    Ok(pages)
}
