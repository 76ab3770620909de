//! `ipfailover import-ctdb [DIR]`: reads a CTDB node's configuration
//! (`ctdb.conf`, `ctdb.tunables`, `nodes`, `public_addresses`, the cluster
//! lock, the enabled legacy event scripts and their options) and writes
//! the ipfailover configuration directory of that node, or prints it with
//! `--dry-run`, saying line by line what it mapped, what it ignored and
//! why (docs/migrating-from-ctdb.md).
//!
//! Every file is read and checked first: `nodes` and `public_addresses`
//! by the `config` crate's own readers (the ones every daemon uses), the
//! generated `ipfailover.toml` by `config::parse`; CTDB's own files as
//! ctdbd reads them ([`ini`], [`conf`], [`tunables`]). Any problem is
//! printed as `FILE:LINE: what` and nothing is written (exit status 1).
//! The directory is written whole or not at all ([`write`]); a cluster key
//! is written only when asked for (`--generate-key`, `--key FILE`) or kept
//! from the directory being replaced.

pub mod conf;
pub mod ini;
pub mod report;
pub mod scripts;
pub mod tunables;
pub mod write;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use config::nodes::NodesFile;
use report::{Line, Toml, Value};

/// ctdbd keeps CTDB's port when it runs beside ipfailover (Samba's
/// databases); ipfailover's links use this one then.
pub const PORT_BESIDE_CTDB: u64 = 4380;

/// Arguments of `ipfailover import-ctdb`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// CTDB's configuration directory.
    #[arg(value_name = "DIR", default_value = "/etc/ctdb")]
    pub dir: PathBuf,
    /// The ipfailover configuration directory to write.
    #[arg(long, value_name = "OUT", default_value = config::DEFAULT_CONFIG_DIR)]
    pub out: PathBuf,
    /// Print the report and the files; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace an OUT that holds files (it is kept as OUT.before-import).
    #[arg(long)]
    pub force: bool,
    /// Write a new random cluster key (do it on one node, then give every
    /// other node a copy with --key).
    #[arg(long, conflicts_with = "key")]
    pub generate_key: bool,
    /// Copy this cluster key (64 hex characters, mode 600) into OUT.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// This node's PNN, written as [cluster] pnn (default: ctdb.conf's
    /// `node address`, else found from the host's addresses at start).
    #[arg(long, value_name = "PNN")]
    pub pnn: Option<u32>,
    /// ctdbd will not run beside ipfailover: keep CTDB's port (4379) and its
    /// very cluster lock.
    #[arg(long)]
    pub no_ctdb: bool,
    /// Do not carry over ctdb.conf's `[failover] disabled = true` (set to
    /// hand the addresses from ctdbd to ipfailover).
    #[arg(long)]
    pub ignore_failover_disabled: bool,
}

/// A problem of one line of a CTDB file (the file is added by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

/// Why the import cannot be done; each names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A line of a CTDB file, or an argument, that cannot be imported.
    #[error("{}:{line}: {what}", file.display())]
    Input {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A file that is not acceptable text.
    #[error(transparent)]
    Text(#[from] config::text::TextError),
    /// The nodes file, as every ipfailover daemon reads it.
    #[error(transparent)]
    Nodes(#[from] config::nodes::NodesError),
    /// The public_addresses file, as failoverd reads it.
    #[error(transparent)]
    PublicAddresses(#[from] config::public_addresses::PublicAddressesError),
    /// The generated `ipfailover.toml` (a bug of the importer).
    #[error("the imported ipfailover.toml does not load (please report): {0}")]
    Config(#[from] config::ConfigError),
    /// A cluster key.
    #[error(transparent)]
    Key(#[from] transport::node_config::NodeConfigError),
    /// A file system error.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// OUT holds files and `--force` was not given.
    #[error("{}: not empty; nothing written (use --force to replace it: the old directory is kept as {}.before-import)", path.display(), path.display())]
    NotEmpty {
        /// OUT.
        path: PathBuf,
    },
}

/// Reads a CTDB file; `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, ImportError> {
    match config::text::read(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn problems(file: &Path, list: Vec<Problem>) -> Vec<ImportError> {
    list.into_iter()
        .map(|p| ImportError::Input {
            file: file.to_path_buf(),
            line: p.line,
            what: p.what,
        })
        .collect()
}

/// Everything the import produced, before anything is written.
#[derive(Debug, Default)]
pub struct Import {
    /// The report.
    pub lines: Vec<Line>,
    /// The files of OUT.
    pub files: Vec<write::File>,
}

/// Reads `args.dir` and works out OUT's files (pure apart from reading the
/// input files, OUT's old key and the key source).
///
/// # Errors
///
/// Every problem found, each naming file and line.
pub fn prepare(args: &ImportArgs, old_key: Option<&Path>) -> Result<Import, Vec<ImportError>> {
    let dir = &args.dir;
    let mut errors: Vec<ImportError> = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    let mut toml = Toml::default();
    if let Err(source) = std::fs::read_dir(dir) {
        return Err(vec![ImportError::Io {
            path: dir.clone(),
            what: "cannot read the CTDB configuration directory",
            source,
        }]);
    }

    // ctdb.conf
    let conf_path = dir.join("ctdb.conf");
    let etcd_config = match read_optional(&dir.join("etcd")) {
        Ok(t) => t,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let opts = conf::Options {
        ignore_failover_disabled: args.ignore_failover_disabled,
        no_ctdb: args.no_ctdb,
        out: std::path::absolute(&args.out)
            .unwrap_or_else(|_| args.out.clone())
            .display()
            .to_string(),
        etcd_config,
    };
    let mut conf = conf::Conf::default();
    match read_optional(&conf_path) {
        Ok(None) => lines.push(Line::ignored("ctdb.conf", "absent", "ctdbd's defaults")),
        Ok(Some(text)) => match config::text::lines(&text, &conf_path) {
            Ok(l) => {
                let (c, p) = conf::map(&ini::parse(&l), "ctdb.conf", &opts, &mut toml, &mut lines);
                conf = c;
                errors.extend(problems(&conf_path, p));
            }
            Err(e) => errors.push(e.into()),
        },
        Err(e) => errors.push(e),
    }
    if conf.lock.is_none() {
        lines.push(Line::mapped(
            "ctdb.conf",
            "no cluster lock",
            "no [cluster] cluster_lock: a partition needs a strict majority of the nodes to lead and host addresses",
        ));
    }
    if !args.no_ctdb {
        let v = Value::Int(PORT_BESIDE_CTDB);
        lines.push(Line::mapped(
            "ctdbd",
            "port 4379",
            format!(
                "{}: ctdbd keeps 4379 when it runs beside ipfailover for Samba's databases; allow TCP {PORT_BESIDE_CTDB} between the nodes (--no-ctdb keeps 4379)",
                Toml::describe("transport", "port", &v)
            ),
        ));
        toml.set(
            "transport",
            "port",
            v,
            "ctdbd keeps CTDB's port 4379 (import-ctdb without --no-ctdb)".into(),
        );
    }

    // ctdb.tunables
    let tun_path = dir.join("ctdb.tunables");
    match read_optional(&tun_path) {
        Ok(None) => lines.push(Line::ignored(
            "ctdb.tunables",
            "absent",
            "CTDB's defaults, which ipfailover's defaults match",
        )),
        Ok(Some(text)) => match config::text::lines(&text, &tun_path) {
            Ok(l) => {
                if let Err(p) =
                    tunables::map(&ini::parse(&l), "ctdb.tunables", &mut toml, &mut lines)
                {
                    errors.extend(problems(&tun_path, p));
                }
            }
            Err(e) => errors.push(e.into()),
        },
        Err(e) => errors.push(e),
    }

    // nodes
    let (nodes_path, nodes_label) = match &conf.nodes_list {
        Some((line, v)) if v.starts_with('!') => {
            errors.push(ImportError::Input {
                file: conf_path.clone(),
                line: *line,
                what: format!("nodes list = {v}: a command: ipfailover reads a nodes file; save the command's output as a file and name that file here"),
            });
            (dir.join("nodes"), "nodes".to_string())
        }
        Some((_, v)) => {
            let p = dir.join(v);
            (p, v.clone())
        }
        None => (dir.join("nodes"), "nodes".to_string()),
    };
    let mut nodes: Option<(NodesFile, Vec<u8>)> = None;
    match config::text::read(&nodes_path) {
        Ok(text) => match NodesFile::parse(&nodes_path, &text) {
            Ok(n) => {
                for e in &n.nodes {
                    let raw = text.lines().nth(e.line - 1).unwrap_or("").trim();
                    let to = match e.address {
                        Some(_) => format!("node {}", e.pnn),
                        None => format!(
                            "node {} (deleted: it keeps its number and runs nothing)",
                            e.pnn
                        ),
                    };
                    lines.push(Line::mapped(format!("{nodes_label}:{}", e.line), raw, to));
                }
                let link = std::fs::read_link(&nodes_path)
                    .map(|t| {
                        format!(
                            "; it was a link to {}: later edits there are not seen",
                            t.display()
                        )
                    })
                    .unwrap_or_default();
                lines.push(Line::mapped(
                    nodes_label.as_str(),
                    "the file",
                    format!("nodes (copied unchanged{link})"),
                ));
                nodes = Some((n, text.into_bytes()));
            }
            Err(e) => errors.push(e.into()),
        },
        Err(e) => errors.push(e.into()),
    }

    // This node's PNN.
    let mut pnn = None;
    if let Some((n, _)) = &nodes {
        if let Some((line, addr)) = conf.node_address {
            match n.pnn_of(addr) {
                Some(p) => pnn = Some((p, format!("ctdb.conf:{line}: node address = {addr}"))),
                None => errors.push(ImportError::Input {
                    file: conf_path.clone(),
                    line,
                    what: format!(
                        "node address = {addr}: not a node of {} (ctdbd would not start)",
                        nodes_path.display()
                    ),
                }),
            }
        }
        if let Some(p) = args.pnn {
            if !n.is_live(p) {
                errors.push(ImportError::Input {
                    file: nodes_path.clone(),
                    line: 1,
                    what: format!("--pnn {p}: not a node of this file ({} entries, numbered from 0; #deleted entries cannot run)", n.len()),
                });
            } else if pnn.as_ref().is_some_and(|(q, _)| *q != p) {
                errors.push(ImportError::Input {
                    file: conf_path.clone(),
                    line: conf.node_address.map_or(1, |(l, _)| l),
                    what: format!("--pnn {p} is not this node address's PNN"),
                });
            } else {
                pnn = Some((p, format!("--pnn {p}")));
            }
        }
    }
    match &pnn {
        Some((p, source)) => {
            let v = Value::Int(u64::from(*p));
            lines.push(Line::mapped("pnn", source.as_str(), Toml::describe("cluster", "pnn", &v)));
            toml.set("cluster", "pnn", v, source.clone());
        }
        None => lines.push(Line::mapped(
            "pnn",
            "not set",
            "no [cluster] pnn: each daemon finds this node by matching the host's addresses against nodes, as ctdbd does",
        )),
    }

    // public_addresses: this node's own list, as in CTDB.
    let pa_path = dir.join("public_addresses");
    let mut public_addresses = None;
    match read_optional(&pa_path) {
        Ok(None) => lines.push(Line::mapped(
            "public_addresses",
            "absent",
            "none: this node hosts no public address (as in CTDB)",
        )),
        Ok(Some(text)) => match config::public_addresses::parse(&text, &pa_path) {
            Ok(list) => {
                let entries = config::text::lines(&text, &pa_path)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, l)| {
                        let t = l.trim_start_matches([' ', '\t']);
                        !t.is_empty() && !t.starts_with('#')
                    });
                for ((line, raw), a) in entries.zip(&list) {
                    let to = if a.ifaces.len() > 1 {
                        format!(
                            "copied (interfaces in order of preference: {})",
                            a.ifaces.join(", ")
                        )
                    } else {
                        "copied".into()
                    };
                    lines.push(Line::mapped(
                        format!("public_addresses:{line}"),
                        raw.trim(),
                        to,
                    ));
                }
                let link = std::fs::read_link(&pa_path)
                    .map(|t| format!("; it was a link to {}", t.display()))
                    .unwrap_or_default();
                lines.push(Line::mapped(
                    "public_addresses",
                    "the file",
                    format!(
                        "public_addresses (copied unchanged{link}): the {} address(es) this node may host; the list is this node's own, as in CTDB: import on every node",
                        list.len()
                    ),
                ));
                public_addresses = Some(text.into_bytes());
            }
            Err(e) => errors.push(e.into()),
        },
        Err(e) => errors.push(e),
    }

    // Event scripts and their options.
    let hooks = match scripts::scan(dir, &mut lines) {
        Ok(h) => h,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    if let Err(e) = scripts::options(&dir.join("script.options"), "script.options", &mut lines) {
        errors.push(e);
    }

    // The cluster key.
    let live = nodes.as_ref().map_or(0, |(n, _)| n.configured());
    let key = if let Some(file) = &args.key {
        match transport::node_config::load_key(file) {
            Ok(k) => {
                lines.push(Line::mapped(
                    "cluster.key",
                    format!("--key {}", file.display()),
                    "cluster.key (mode 600)",
                ));
                Some(format!("{}\n", k.to_hex()).into_bytes())
            }
            Err(e) => {
                errors.push(e.into());
                None
            }
        }
    } else if args.generate_key {
        if args.dry_run {
            lines.push(Line::mapped(
                "cluster.key",
                "--generate-key",
                "a new random key would be written (mode 600)",
            ));
            None
        } else {
            match transport::transportd::key::random() {
                Ok(k) => {
                    lines.push(Line::mapped(
                        "cluster.key",
                        "--generate-key",
                        "a new random key (mode 600): give every other node a copy (import there with --key FILE)",
                    ));
                    Some(format!("{}\n", k.to_hex()).into_bytes())
                }
                Err(e) => {
                    errors.push(ImportError::Io {
                        path: PathBuf::from("/dev/urandom"),
                        what: "cannot make a key",
                        source: std::io::Error::other(e.to_string()),
                    });
                    None
                }
            }
        }
    } else if let Some(old) = old_key.filter(|p| p.exists()) {
        match transport::node_config::load_key(old) {
            Ok(k) => {
                lines.push(Line::mapped(
                    "cluster.key",
                    "the one in OUT",
                    "kept (mode 600)",
                ));
                Some(format!("{}\n", k.to_hex()).into_bytes())
            }
            Err(e) => {
                errors.push(e.into());
                None
            }
        }
    } else {
        if live > 1 {
            lines.push(Line::not_imported(
                "cluster.key",
                "none",
                "CTDB has no cluster key and none is invented: import with --generate-key on one node and with --key FILE (a copy of that node's cluster.key, mode 600) on the others; masterd refuses the directory until the key is there",
            ));
        } else {
            lines.push(Line::ignored(
                "cluster.key",
                "none",
                "one node needs no key",
            ));
        }
        None
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    let Some((nodes_file, nodes_bytes)) = nodes else {
        return Err(errors);
    };
    let text = toml.render(&dir.display().to_string());
    // The one loader must accept what we write (else it is our bug).
    if let Err(e) = config::parse(&text, &Path::new(&args.out).join(config::FILE_NAME)) {
        return Err(vec![e.into()]);
    }
    debug_assert!(pnn.as_ref().is_none_or(|(p, _)| nodes_file.is_live(*p)));
    let mut files = vec![
        write::File {
            name: config::FILE_NAME.into(),
            bytes: text.into_bytes(),
            mode: 0o644,
        },
        write::File {
            name: "nodes".into(),
            bytes: nodes_bytes,
            mode: 0o644,
        },
    ];
    if let Some(b) = public_addresses {
        files.push(write::File {
            name: "public_addresses".into(),
            bytes: b,
            mode: 0o644,
        });
    }
    if let Some(b) = key {
        files.push(write::File {
            name: "cluster.key".into(),
            bytes: b,
            mode: 0o600,
        });
    }
    for (name, bytes) in conf.files {
        // It may hold the etcd password.
        files.push(write::File {
            name,
            bytes,
            mode: 0o600,
        });
    }
    for h in hooks {
        files.push(write::File {
            name: format!("events/{}", h.name),
            bytes: h.bytes,
            mode: 0o644,
        });
    }
    Ok(Import { lines, files })
}

/// Checks a written directory with the loaders every daemon uses.
fn check(dir: &Path) -> Result<(), ImportError> {
    let loaded = config::load(dir)?;
    let nodes = NodesFile::load(&dir.join("nodes"))?;
    loaded.check_pnn(&nodes)?;
    let pa = dir.join("public_addresses");
    if pa.exists() {
        config::public_addresses::load(&pa)?;
    }
    let key = loaded.resolve(&loaded.config.transport.key_file);
    if key.exists() {
        transport::node_config::load_key(&key)?;
    }
    Ok(())
}

/// Runs `ipfailover import-ctdb`.
///
/// # Errors
///
/// Exit status 1 ([`crate::ctx::Exit`]) after printing every problem.
pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    let fail = |errors: Vec<ImportError>| -> anyhow::Result<()> {
        let mut err = std::io::stderr().lock();
        for e in errors {
            let _ = writeln!(err, "{e}");
        }
        Err(crate::ctx::Exit(1).into())
    };
    let before = if args.dry_run {
        None
    } else {
        match write::state(&args.out) {
            Ok(write::OutState::Occupied) if !args.force => {
                return fail(vec![ImportError::NotEmpty {
                    path: args.out.clone(),
                }])
            }
            Ok(s) => Some(s),
            Err(e) => return fail(vec![e]),
        }
    };
    let old_key = args.out.join("cluster.key");
    let import = match prepare(args, Some(&old_key)) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Importing the CTDB configuration in {} into {}{}\n",
        args.dir.display(),
        args.out.display(),
        if args.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        }
    ));
    for l in &import.lines {
        out.push_str(&format!("{l}\n"));
    }
    if let Some(before) = before {
        match write::commit(&args.out, &import.files, before, check) {
            Ok(backup) => {
                if let Some(b) = backup {
                    out.push_str(&format!(
                        "kept the previous {} as {}\n",
                        args.out.display(),
                        b.display()
                    ));
                }
                let names: Vec<&str> = import.files.iter().map(|f| f.name.as_str()).collect();
                out.push_str(&format!(
                    "wrote {}: {}\n",
                    args.out.display(),
                    names.join(", ")
                ));
                out.push_str(&format!(
                    "next: masterd --check --config-dir {} (docs/migrating-from-ctdb.md)\n",
                    args.out.display()
                ));
            }
            Err(e) => {
                print(&out);
                return fail(vec![e]);
            }
        }
    } else {
        for f in &import.files {
            out.push_str(&format!("\n--- {} (mode {:o}) ---\n", f.name, f.mode));
            if f.name == "cluster.key" {
                out.push_str("(the key: not shown)\n");
            } else {
                out.push_str(&String::from_utf8_lossy(&f.bytes));
                if !f.bytes.ends_with(b"\n") && !f.bytes.is_empty() {
                    out.push('\n');
                }
            }
        }
    }
    print(&out);
    Ok(())
}

/// Writes to stdout; a closed stdout ends quietly.
fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
