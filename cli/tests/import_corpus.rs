//! `ipfailover import-ctdb` against a corpus of CTDB configurations
//! (tests/import-corpus/, described in its README): the real binary runs on
//! each case's `ctdb/` directory, and its exit status, stdout and stderr
//! must equal the case's `expected`, and the directory it wrote the
//! case's `out/` (file names, contents, modes). For a case marked
//! `masterd-check`, the real `masterd --check` (from the same target
//! directory: `cargo build -p masterd` first) must accept what was written.
//! A case that fails must leave nothing behind.
//!
//! `IPFAILOVER_IMPORT_BLESS=1` rewrites `expected` and `out/` from what the
//! binary does (then read every changed line in `git diff`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

/// At least this many cases, and this many checked by masterd (issue 17).
const MIN_CASES: usize = 17;
const MIN_MASTERD: usize = 8;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/import-corpus")
        .canonicalize()
        .expect("tests/import-corpus exists")
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ipf-import-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn key(&self) -> PathBuf {
        let p = self.0.join("test.key");
        if !p.exists() {
            std::fs::write(&p, KEY).expect("key");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `bin` with `args`; (exit code, stdout, stderr). Killed after 10 s.
fn run(bin: &Path, args: &[String]) -> (Option<i32>, String, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {args:?} did not finish in 10 s", bin.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ipfailover() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfailover"))
}

fn masterd() -> PathBuf {
    let p = ipfailover().with_file_name("masterd");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p masterd, same CARGO_TARGET_DIR)",
        p.display()
    );
    p
}

/// Every file under `dir` as (relative path, mode, bytes), sorted.
fn tree(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let e = e.expect("entry");
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            if meta.is_dir() {
                assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{}", p.display());
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("inside").display().to_string();
                out.push((
                    rel,
                    meta.permissions().mode() & 0o777,
                    std::fs::read(&p).expect("read"),
                ));
            }
        }
    }
    out.sort();
    out
}

fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus())
        .expect("corpus")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    names.sort();
    names
}

struct Outcome {
    status: Option<i32>,
    text: String,
    /// The case's input directory, replaced by `$CTDB` in what is compared.
    ctdb: String,
}

/// Runs one case into `out`; the normalised golden text.
fn import(case: &str, out: &Path, scratch: &Scratch) -> Outcome {
    let dir = corpus().join(case);
    let ctdb = dir.join("ctdb");
    let mut args = vec![
        "import-ctdb".to_string(),
        ctdb.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Ok(extra) = std::fs::read_to_string(dir.join("args")) {
        for a in extra.lines().filter(|l| !l.is_empty()) {
            args.push(a.replace("$KEY", &scratch.key().display().to_string()));
        }
    }
    let (status, stdout, stderr) = run(&ipfailover(), &args);
    let norm = |s: &str| {
        s.replace(&ctdb.display().to_string(), "$CTDB")
            .replace(&out.display().to_string(), "$OUT")
            .replace(&scratch.key().display().to_string(), "$KEY")
    };
    Outcome {
        status,
        text: format!(
            "exit status: {}\n--- stdout\n{}--- stderr\n{}",
            status.map_or_else(|| "signal".into(), |c| c.to_string()),
            norm(&stdout),
            norm(&stderr)
        ),
        ctdb: ctdb.display().to_string(),
    }
}

#[test]
fn every_case_gives_its_expected_report_and_directory() {
    let bless = std::env::var_os("IPFAILOVER_IMPORT_BLESS").is_some();
    let scratch = Scratch::new("corpus");
    let names = case_names();
    assert!(names.len() >= MIN_CASES, "only {} cases", names.len());
    let mut wrong = Vec::new();
    let mut checked = 0;
    for case in &names {
        let dir = corpus().join(case);
        let out = scratch.0.join(format!("out-{case}"));
        let got = import(case, &out, &scratch);
        let generated =
            std::fs::read_to_string(dir.join("args")).is_ok_and(|a| a.contains("--generate-key"));
        let mut files = if got.status == Some(0) {
            tree(&out)
        } else {
            Vec::new()
        };
        for f in &mut files {
            if f.0 != "cluster.key" {
                f.2 = String::from_utf8_lossy(&f.2)
                    .replace(&got.ctdb, "$CTDB")
                    .replace(&out.display().to_string(), "$OUT")
                    .into_bytes();
            }
            if f.0 == "cluster.key" && generated {
                let text = String::from_utf8_lossy(&f.2).into_owned();
                assert!(
                    text.len() == 65 && text.trim_end().chars().all(|c| c.is_ascii_hexdigit()),
                    "{case}: generated key {text:?}"
                );
                f.2 = b"GENERATED\n".to_vec();
            }
        }
        if bless {
            std::fs::write(dir.join("expected"), &got.text).expect("bless");
            let _ = std::fs::remove_dir_all(dir.join("out"));
            for (name, _, bytes) in &files {
                let p = dir.join("out").join(name);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                std::fs::write(p, bytes).expect("bless");
            }
            continue;
        }
        let want = std::fs::read_to_string(dir.join("expected")).unwrap_or_default();
        if got.text != want {
            wrong.push(format!(
                "{case}: report differs:\n--- want\n{want}\n--- got\n{}",
                got.text
            ));
            continue;
        }
        if got.status != Some(0) {
            // Nothing written, no temporary directory left.
            let left: Vec<String> = std::fs::read_dir(&scratch.0)
                .expect("scratch")
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(case.as_str()))
                .collect();
            if !left.is_empty() {
                wrong.push(format!("{case}: failed but left {left:?}"));
            }
            continue;
        }
        let want_files: Vec<(String, Vec<u8>)> = if dir.join("out").exists() {
            tree(&dir.join("out"))
                .into_iter()
                .map(|(n, _, b)| (n, b))
                .collect()
        } else {
            Vec::new()
        };
        let got_files: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, _, b)| (n.clone(), b.clone()))
            .collect();
        if got_files != want_files {
            let names = |v: &[(String, Vec<u8>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
            let diff: Vec<String> = got_files
                .iter()
                .filter(|f| !want_files.contains(f))
                .map(|(n, b)| format!("--- got {n}\n{}", String::from_utf8_lossy(b)))
                .collect();
            wrong.push(format!(
                "{case}: files differ: want {:?} got {:?}\n{}",
                names(&want_files),
                names(&got_files),
                diff.join("\n")
            ));
            continue;
        }
        for (name, mode, _) in &files {
            let want_mode = if name == "cluster.key" || name == "ctdb_etcd_lock.conf" {
                0o600
            } else {
                0o644
            };
            if *mode != want_mode {
                wrong.push(format!(
                    "{case}: {name} has mode {mode:o}, want {want_mode:o}"
                ));
            }
        }
        if dir.join("masterd-check").exists() {
            checked += 1;
            let (status, stdout, stderr) = run(
                &masterd(),
                &[
                    "--check".into(),
                    "--config-dir".into(),
                    out.display().to_string(),
                ],
            );
            if status != Some(0) || !stdout.contains("configuration OK") {
                wrong.push(format!(
                    "{case}: masterd --check: exit {status:?}\n{stdout}{stderr}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} case(s) wrong:\n{}",
        wrong.len(),
        wrong.join("\n\n")
    );
    if !bless {
        assert!(
            checked >= MIN_MASTERD,
            "only {checked} cases checked by masterd"
        );
    }
}

#[test]
fn dry_run_prints_the_files_and_writes_nothing() {
    let scratch = Scratch::new("dry");
    let out = scratch.0.join("out");
    let (status, stdout, stderr) = run(
        &ipfailover(),
        &[
            "import-ctdb".into(),
            corpus().join("debian-example/ctdb").display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--dry-run".into(),
            "--generate-key".into(),
        ],
    );
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.contains("(dry run: nothing is written)"), "{stdout}");
    assert!(
        stdout.contains("\n--- ipfailover.toml (mode 644) ---\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cluster_lock = \"/shared/cluster.lock.ipfailover\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n--- nodes (mode 644) ---\n192.0.2.1\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a new random key would be written"),
        "{stdout}"
    );
    assert!(!out.exists(), "a dry run wrote {}", out.display());
}

fn import_into(out: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec![
        "import-ctdb".to_string(),
        corpus().join("per-node-0/ctdb").display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_string()));
    run(&ipfailover(), &args)
}

#[test]
fn a_directory_with_files_is_replaced_only_with_force_and_kept() {
    let scratch = Scratch::new("force");
    let out = scratch.0.join("ipfailover");
    std::fs::create_dir_all(out.join("events")).expect("mkdir");
    std::fs::write(out.join("nodes"), "192.0.2.200\n").expect("old nodes");
    std::fs::write(out.join("cluster.key"), KEY).expect("old key");
    std::fs::set_permissions(
        out.join("cluster.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");

    let (status, stdout, stderr) = import_into(&out, &[]);
    assert_eq!(status, Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}: not empty; nothing written (use --force to replace it: the old directory is kept as {}.before-import)\n",
            out.display(),
            out.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(out.join("nodes")).expect("kept"),
        "192.0.2.200\n"
    );

    let (status, stdout, stderr) = import_into(&out, &["--force"]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let backup = scratch.0.join("ipfailover.before-import");
    assert!(
        stdout.contains(&format!(
            "kept the previous {} as {}",
            out.display(),
            backup.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("cluster.key: the one in OUT -> kept (mode 600)"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(backup.join("nodes")).expect("backup"),
        "192.0.2.200\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("nodes")).expect("new"),
        "192.0.2.51\n192.0.2.52\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("cluster.key")).expect("key"),
        KEY
    );

    // Again: a second backup name, never an overwrite.
    let (status, _, stderr) = import_into(&out, &["--force"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(scratch.0.join("ipfailover.before-import.1").exists());
}

#[test]
fn the_packages_untouched_examples_are_replaced_without_force() {
    let scratch = Scratch::new("pristine");
    let out = scratch.0.join("ipfailover");
    std::fs::create_dir_all(out.join("events")).expect("mkdir");
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc");
    std::fs::copy(
        packaging.join("ipfailover.toml"),
        out.join("ipfailover.toml"),
    )
    .expect("copy");
    std::fs::copy(packaging.join("events/README"), out.join("events/README")).expect("copy");
    let (status, stdout, stderr) = import_into(&out, &[]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("kept the previous"), "{stdout}");
    assert!(!out.join("events/README").exists());
    assert!(out.join("public_addresses").exists());

    // An edited example is the operator's: refused without --force.
    std::fs::write(out.join("ipfailover.toml"), "[cluster]\npnn = 0\n").expect("edit");
    std::fs::remove_file(out.join("public_addresses")).expect("rm");
    std::fs::remove_file(out.join("nodes")).expect("rm");
    let (status, _, _) = import_into(&out, &[]);
    assert_eq!(status, Some(1));
}

#[test]
fn a_key_others_may_read_is_refused_and_nothing_written() {
    let scratch = Scratch::new("badkey");
    let key = scratch.0.join("open.key");
    std::fs::write(&key, KEY).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = scratch.0.join("out");
    let (status, stdout, stderr) = import_into(&out, &["--key", &key.display().to_string()]);
    assert_eq!(status, Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("readable by other users"), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:1: ", key.display())),
        "{stderr}"
    );
    assert!(!out.exists());
}
