//! The corpus of broken configuration files (tests/corpus/, described in
//! its README): every case, put into an otherwise valid configuration
//! directory, must be refused with exactly its `NAME.expected` message
//! (`FILE:LINE[:COL]: what`), both by the loader that masterd and the
//! daemons share ([`masterd::setup::load`]) and by the real `masterd
//! --check`, which must exit 1.
//!
//! `IPFAILOVER_CORPUS_BLESS=1` rewrites the `.expected` files from what the
//! loader says (then read every changed line in `git diff` before
//! committing: the expected text is the specification).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

/// The valid directory every case starts from: two nodes, this node named
/// (the corpus addresses are not this host's), one public address, a key.
const BASE: &[(&str, &str)] = &[
    ("nodes", "192.0.2.1\n192.0.2.2\n"),
    ("ipfailover.toml", "[cluster]\npnn = 0\n"),
    ("public_addresses", "192.0.2.101/24 eth0\n"),
    ("cluster.key", KEY),
];

/// At least this many cases (issue 14).
const MIN_CASES: usize = 40;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

/// One case: its name, the file it replaces, its bytes, its mode.
struct Case {
    name: String,
    target: &'static str,
    content: Vec<u8>,
    mode: u32,
    expected_file: PathBuf,
}

fn target_of(ext: &str) -> Option<&'static str> {
    match ext {
        "nodes" => Some("nodes"),
        "public_addresses" => Some("public_addresses"),
        "toml" => Some("ipfailover.toml"),
        "key" => Some("cluster.key"),
        _ => None,
    }
}

fn cases() -> Vec<Case> {
    let dir = corpus_dir();
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/corpus exists")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 name");
        let Some((name, ext)) = file_name.split_once('.') else {
            continue;
        };
        let Some(target) = target_of(ext) else {
            assert!(
                matches!(ext, "expected" | "mode" | "md"),
                "unknown corpus file {file_name}"
            );
            continue;
        };
        let mode_file = dir.join(format!("{name}.mode"));
        let mode = match std::fs::read_to_string(&mode_file) {
            Ok(m) => u32::from_str_radix(m.trim(), 8).expect("octal mode"),
            Err(_) if target == "cluster.key" => 0o600,
            Err(_) => 0o644,
        };
        out.push(Case {
            name: name.to_string(),
            target,
            content: std::fs::read(&path).expect("corpus file"),
            mode,
            expected_file: dir.join(format!("{name}.expected")),
        });
    }
    out
}

/// A configuration directory, removed on drop.
struct ConfigDir(PathBuf);

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn build_dir(tag: &str, case: Option<&Case>) -> ConfigDir {
    let dir = std::env::temp_dir().join(format!("masterd-corpus-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let guard = ConfigDir(dir.clone());
    for (name, text) in BASE {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("base file");
        let mode = if *name == "cluster.key" { 0o600 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    if let Some(case) = case {
        let p = dir.join(case.target);
        std::fs::write(&p, &case.content).expect("case file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(case.mode)).expect("chmod");
    }
    guard
}

fn expected(case: &Case, dir: &Path) -> String {
    let text = std::fs::read_to_string(&case.expected_file)
        .unwrap_or_else(|_| panic!("{}: no .expected file", case.name));
    text.trim_end_matches('\n')
        .replace("$DIR", &dir.display().to_string())
}

#[test]
fn the_base_directory_is_valid() {
    let d = build_dir("base", None);
    let cfg = masterd::setup::load(&d.0).expect("the corpus base directory loads");
    assert_eq!(cfg.public_addresses, 1);
    let out = run_masterd(&d.0, &["--single-process", "--check"]);
    assert_eq!(out.0, Some(0), "stderr: {}", out.2);
    assert!(out.1.contains("configuration OK"), "{}", out.1);
}

#[test]
fn every_corpus_case_is_refused_by_the_loader_with_its_message() {
    let bless = std::env::var_os("IPFAILOVER_CORPUS_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= MIN_CASES, "only {} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let d = build_dir(&case.name, Some(case));
        let got = match masterd::setup::load(&d.0) {
            Ok(_) => "(accepted)".to_string(),
            Err(e) => e.to_string(),
        };
        if bless {
            let generic = got.replace(&d.0.display().to_string(), "$DIR");
            std::fs::write(&case.expected_file, format!("{generic}\n")).expect("bless");
            continue;
        }
        let want = expected(case, &d.0);
        if got != want {
            wrong.push(format!("{}:\n  want {want}\n  got  {got}", case.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} case(s) differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn masterd_check_exits_1_with_the_message_for_every_case() {
    let cases = cases();
    assert!(cases.len() >= MIN_CASES, "only {} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let d = build_dir(&format!("bin-{}", case.name), Some(case));
        let want = format!("masterd: {}\n", expected(case, &d.0));
        let (status, stdout, stderr) = run_masterd(&d.0, &["--check"]);
        if status != Some(1) || stderr != want || !stdout.is_empty() {
            wrong.push(format!(
                "{}: exit {status:?}\n  want stderr {want:?}\n  got  stderr {stderr:?}\n  stdout {stdout:?}",
                case.name
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} case(s) differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Runs the real masterd on `dir` with `args`; (exit code, stdout, stderr).
/// It must finish within 10 s (it only reads files); else it is killed.
fn run_masterd(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_masterd"))
        .arg("--config-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("masterd starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            // Our own child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "masterd --check on {} did not finish in 10 s",
                dir.display()
            );
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
