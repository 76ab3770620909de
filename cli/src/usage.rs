//! Argument errors as `ctdb` reports them: clap parses, this module turns
//! its errors into CTDB's messages and exit statuses, so a script written
//! against `ctdb` sees the same failure.
//!
//! | what | message (stream) | status |
//! |---|---|---|
//! | no command | the full usage (stdout) | 1 |
//! | unknown command | `Unknown command 'x'` (stderr) | 1 |
//! | missing or extra arguments | the command's usage (stdout) | 1 |
//! | unknown option | `Invalid option -q: unknown option` (stderr) | 1 |
//! | an address that is not one | `Invalid IP address x` (stderr) | 1 |
//! | a PNN that is not a number | `Invalid PNN x` (stderr) | 1 |
//! | any other bad value | clap's description, without its hints (stderr) | 1 |
//!
//! `--help` and `--version` print as clap does and exit 0.

use std::io::Write as _;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The options that take a value (their value is not a command name when
/// [`command_name`] looks for the command in the arguments).
const VALUE_OPTIONS: &[&str] = &[
    "-n",
    "--node",
    "-x",
    "--separator",
    "-t",
    "--timeout",
    "--timelimit",
    "-d",
    "--debug",
    "-T",
    "--maxruntime",
    "--run-dir",
];

/// What an argument error prints and the exit status it gives.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// For stdout (usage texts).
    pub stdout: String,
    /// For stderr (error messages).
    pub stderr: String,
    /// The exit status.
    pub status: u8,
}

/// Prints a clap error CTDB's way and gives the exit status.
pub fn report(err: &clap::Error, cmd: &clap::Command, args: &[String]) -> ExitCode {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        // Help and version are not errors: clap prints them (stdout).
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let out = outcome(err, cmd, args);
    // A closed stdout/stderr must not turn into a panic.
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    ExitCode::from(out.status)
}

/// The text and status of an argument error (see the module doc).
pub fn outcome(err: &clap::Error, cmd: &clap::Command, args: &[String]) -> Outcome {
    let usage_of = |name: Option<&str>| Outcome {
        stdout: usage(cmd, name),
        stderr: String::new(),
        status: 1,
    };
    let error = |text: String| Outcome {
        stdout: String::new(),
        stderr: format!("{text}\n"),
        status: 1,
    };
    let name = command_name(cmd, args);
    match err.kind() {
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            usage_of(None)
        }
        ErrorKind::InvalidSubcommand => {
            let what = context(err, ContextKind::InvalidSubcommand)
                .or(name.clone())
                .unwrap_or_default();
            error(format!("Unknown command '{what}'"))
        }
        ErrorKind::UnknownArgument => {
            let what = context(err, ContextKind::InvalidArg).unwrap_or_default();
            if what.starts_with('-') && what.len() > 1 {
                // popt's wording: the option as written, then why.
                let option = what.split('=').next().unwrap_or(&what).to_string();
                error(format!("Invalid option {option}: unknown option"))
            } else {
                // A stray word after the command's own arguments.
                usage_of(name.as_deref())
            }
        }
        ErrorKind::MissingRequiredArgument
        | ErrorKind::TooFewValues
        | ErrorKind::TooManyValues
        | ErrorKind::WrongNumberOfValues => usage_of(name.as_deref()),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let arg = context(err, ContextKind::InvalidArg).unwrap_or_default();
            let value = context(err, ContextKind::InvalidValue).unwrap_or_default();
            match arg.as_str() {
                "<IP>" => error(format!("Invalid IP address {value}")),
                "<PNN>" => error(format!("Invalid PNN {value}")),
                // ctdb answers a bad word with the command's usage.
                "<ROLE>" => usage_of(name.as_deref()),
                _ => error(plain(err)),
            }
        }
        _ => error(plain(err)),
    }
}

/// A context string of a clap error.
fn context(err: &clap::Error, kind: ContextKind) -> Option<String> {
    match err.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        other => Some(other.to_string()),
    }
}

/// clap's message without its `error: ` prefix, usage and hints.
fn plain(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first = text
        .split("\n\n")
        .next()
        .unwrap_or(&text)
        .trim_end()
        .to_string();
    first
        .strip_prefix("error: ")
        .map_or(first.clone(), str::to_string)
}

/// The command the arguments name (its canonical name), skipping options
/// and their values; `None` when there is no command word.
pub fn command_name(cmd: &clap::Command, args: &[String]) -> Option<String> {
    let mut words = args.iter();
    while let Some(a) = words.next() {
        if a == "--" {
            return words.next().map(|w| canonical(cmd, w));
        }
        if a.starts_with('-') && a.len() > 1 {
            // `-n 0` takes the next word; `-n0` and `--node=0` carry it.
            let takes_value = VALUE_OPTIONS.contains(&a.as_str());
            if takes_value {
                words.next();
            }
            continue;
        }
        return Some(canonical(cmd, a));
    }
    None
}

/// A subcommand's own name for a word (aliases resolved), or the word.
fn canonical(cmd: &clap::Command, word: &str) -> String {
    cmd.find_subcommand(word)
        .map_or_else(|| word.to_string(), |s| s.get_name().to_string())
}

/// CTDB's usage text: the options line, then every command (or only
/// `name`'s) as `  NAME  ARGS  WHAT`.
pub fn usage(cmd: &clap::Command, name: Option<&str>) -> String {
    // `ctdb` when called by that name (as_ctdb.rs).
    let mut out = format!(
        "Usage: {} [-n PNN|LIST|all] [-X|-Y] [-x SEP] [-j|--json] [-t SECONDS] \
         [-T SECONDS] [-d LEVEL] [--run-dir DIR] <command> [<args>]\n\nCommands:\n",
        cmd.get_name()
    );
    let chosen: Vec<&clap::Command> = match name.and_then(|n| cmd.find_subcommand(n)) {
        Some(one) => vec![one],
        None => cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            .collect(),
    };
    for sub in chosen {
        let args: Vec<String> = sub
            .get_positionals()
            .map(|a| {
                let id = a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map_or_else(|| a.get_id().as_str().to_lowercase(), |v| v.to_lowercase());
                if a.is_required_set() {
                    format!("<{id}>")
                } else {
                    format!("[<{id}>]")
                }
            })
            .collect();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let about = about.lines().next().unwrap_or("").trim_end_matches('.');
        out.push_str(&format!(
            "  {:<15} {:<27}  {about}\n",
            sub.get_name(),
            args.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct T {
        #[arg(short = 'n', global = true)]
        node: Option<String>,
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        /// Move an address.
        Moveip { ip: std::net::IpAddr, pnn: u32 },
        /// Run now.
        #[command(alias = "sync")]
        Ipreallocate,
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_string()).collect()
    }

    fn run(a: &[&str]) -> Outcome {
        use clap::{CommandFactory, Parser};
        let mut full = vec!["t"];
        full.extend_from_slice(a);
        let err = T::try_parse_from(full).expect_err("an argument error");
        outcome(&err, &T::command(), &args(a))
    }

    #[test]
    fn the_command_word_skips_options_and_their_values() {
        use clap::CommandFactory;
        let cmd = T::command();
        assert_eq!(
            command_name(&cmd, &args(&["-n", "1", "moveip"])),
            Some("moveip".into())
        );
        assert_eq!(
            command_name(&cmd, &args(&["-n1", "-X", "sync"])),
            Some("ipreallocate".into())
        );
        assert_eq!(command_name(&cmd, &args(&["-n", "1"])), None);
    }

    #[test]
    fn errors_read_as_ctdb_prints_them() {
        let e = run(&["frob"]);
        assert_eq!(
            (e.stderr.as_str(), e.status),
            ("Unknown command 'frob'\n", 1)
        );
        let e = run(&["moveip", "192.0.2"]);
        assert_eq!(e.stderr, "Invalid IP address 192.0.2\n");
        let e = run(&["moveip", "192.0.2.1", "x"]);
        assert_eq!(e.stderr, "Invalid PNN x\n");
        let e = run(&["-q", "moveip"]);
        assert_eq!(e.stderr, "Invalid option -q: unknown option\n");
        let e = run(&["-n", "1", "moveip", "192.0.2.1"]);
        assert!(e.stderr.is_empty());
        assert_eq!(e.status, 1);
        assert!(
            e.stdout.contains("\n  moveip          <ip> <pnn>  ")
                && e.stdout.contains("Move an address")
                && !e.stdout.contains("ipreallocate"),
            "{}",
            e.stdout
        );
        let e = run(&[]);
        assert!(e.stdout.contains("moveip") && e.stdout.contains("ipreallocate"));
        assert_eq!(e.status, 1);
    }
}
