//! `ipfailover generate man|completions DIR` (hidden): writes the man pages
//! (`ipfailover.1` and one `ipfailover-COMMAND.1` per command) or the bash,
//! zsh and fish completions, generated from the clap definitions, into DIR.
//! The Debian package build runs it (docs/packaging.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap_complete::Shell;

/// What to generate.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// Man pages (section 1).
    Man,
    /// Shell completions (bash, zsh, fish).
    Completions,
}

/// Arguments of `ipfailover generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Man pages or completions.
    #[arg(value_enum)]
    what: What,
    /// Output directory (created if missing).
    dir: PathBuf,
}

/// Writes the files for `cmd` (the whole `ipfailover` command).
///
/// # Errors
///
/// When the directory or a file cannot be written.
pub fn run(mut cmd: clap::Command, args: &GenerateArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    match args.what {
        What::Man => clap_mangen::generate_to(cmd, &args.dir)
            .with_context(|| format!("writing man pages to {}", args.dir.display()))?,
        What::Completions => {
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cmd, "ipfailover", &args.dir).with_context(
                    || format!("writing {shell} completions to {}", args.dir.display()),
                )?;
            }
        }
    }
    Ok(())
}
