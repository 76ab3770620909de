//! Logging under systemd: when `$JOURNAL_STREAM` names a process's stderr
//! (as systemd sets it for `StandardError=journal`), masterd and the daemons
//! it starts write to the journal's native socket, with `PRIORITY` and
//! `SYSLOG_IDENTIFIER`, and not to stderr; when it names another file, or
//! the journal cannot be reached, they write plain text to stderr.
//!
//! The journal is a datagram socket of the test, bound inside a private
//! mount namespace at `/run/systemd/journal/socket` (a tmpfs over `/run`
//! that only masterd's process tree sees), in a node namespace of its own.

mod masterd_support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use masterd_support::write_config;
use tests::cluster::{bin_path, TestCluster};
use tests::netns::require_root;

const LIMIT: Duration = Duration::from_secs(20);

/// Starts masterd (multi-process, transportd only) in `node`'s namespace
/// and in a private mount namespace where `journal_dir` is mounted at
/// /run/systemd/journal (when given), with stderr to `stderr` and
/// `JOURNAL_STREAM` set to `journal_stream`.
fn start(
    c: &TestCluster,
    journal_dir: Option<&Path>,
    stderr: &Path,
    journal_stream: &str,
) -> Child {
    let masterd = bin_path("masterd").unwrap();
    let node = &c.nodes[0];
    let mount = match journal_dir {
        Some(d) => format!(
            "mount -t tmpfs none /run && mkdir -p /run/systemd/journal && mount --bind '{}' /run/systemd/journal && ",
            d.display()
        ),
        None => "mount -t tmpfs none /run && ".to_owned(),
    };
    let script = format!(
        "{mount}exec '{}' --config-dir '{}' --daemons transportd",
        masterd.display(),
        node.config_dir.display()
    );
    let mut cmd = node.ns.command("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("JOURNAL_STREAM", journal_stream)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap());
    cmd.spawn().unwrap()
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    );
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Journal datagrams received within `limit` until `done` says enough.
fn receive(
    sock: &UnixDatagram,
    limit: Duration,
    done: impl Fn(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < limit && !done(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            if n > 0 {
                got.push(buf[..n].to_vec());
            }
        }
    }
    got
}

/// A field of a journal native-protocol entry: `NAME=value\n`, or
/// `NAME\n` + 64-bit little-endian length + value + `\n`.
fn field(bytes: &[u8], name: &str) -> Option<String> {
    let mut at = 0;
    while at < bytes.len() {
        let line_end = bytes[at..].iter().position(|&b| b == b'\n')? + at;
        let line = &bytes[at..line_end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            if &line[..eq] == name.as_bytes() {
                return Some(String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            }
            at = line_end + 1;
        } else {
            let len_at = line_end + 1;
            let len = u64::from_le_bytes(bytes.get(len_at..len_at + 8)?.try_into().ok()?);
            let start = len_at + 8;
            let end = start + usize::try_from(len).ok()?;
            if line == name.as_bytes() {
                return Some(String::from_utf8_lossy(bytes.get(start..end)?).into_owned());
            }
            at = end + 1;
        }
    }
    None
}

/// Does the entry contain `text`?
fn has(entry: &[u8], text: &str) -> bool {
    entry.windows(text.len()).any(|w| w == text.as_bytes())
}

fn show(entry: &[u8]) -> String {
    String::from_utf8_lossy(entry).into_owned()
}

fn stream_of(path: &Path) -> String {
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

#[test]
fn under_systemd_masterd_and_its_daemons_log_to_the_journal() {
    require_root();
    let c = TestCluster::new("md-jrnl", 1).unwrap();
    write_config(&c.nodes[0], None);
    let journal = c.scratch.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let sock = UnixDatagram::bind(journal.join("socket")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stderr = c.scratch.join("stderr");
    std::fs::write(&stderr, "").unwrap();

    let child = start(&c, Some(&journal), &stderr, &stream_of(&stderr));
    let entries = receive(&sock, LIMIT, |got| {
        got.iter().any(|e| has(e, "masterd starting"))
            && got.iter().any(|e| has(e, "transportd running"))
    });
    stop(child);
    let masterd = entries
        .iter()
        .find(|e| has(e, "masterd starting"))
        .unwrap_or_else(|| panic!("no masterd entry in the journal: {}", entries.len()));
    assert_eq!(
        field(masterd, "PRIORITY").as_deref(),
        Some("6"),
        "{}",
        show(masterd)
    );
    assert_eq!(
        field(masterd, "SYSLOG_IDENTIFIER").as_deref(),
        Some("masterd"),
        "{}",
        show(masterd)
    );
    let transportd = entries
        .iter()
        .find(|e| has(e, "transportd running"))
        .unwrap_or_else(|| panic!("no transportd entry in the journal: {}", entries.len()));
    assert_eq!(
        field(transportd, "SYSLOG_IDENTIFIER").as_deref(),
        Some("transportd"),
        "{}",
        show(transportd)
    );
    let text = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        !text.contains("masterd starting") && !text.contains("transportd running"),
        "logged to stderr as well:\n{text}"
    );
}

#[test]
fn outside_systemd_or_without_a_journal_logs_are_plain_text_on_stderr() {
    require_root();
    let c = TestCluster::new("md-jtxt", 1).unwrap();
    write_config(&c.nodes[0], None);
    let journal = c.scratch.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let sock = UnixDatagram::bind(journal.join("socket")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stderr = c.scratch.join("stderr");
    let other = c.scratch.join("other");
    std::fs::write(&stderr, "").unwrap();
    std::fs::write(&other, "").unwrap();

    // JOURNAL_STREAM names another file: stderr is not the journal.
    let child = start(&c, Some(&journal), &stderr, &stream_of(&other));
    let wrote = tests::netns::wait_for(
        "plain text on stderr",
        LIMIT,
        Duration::from_millis(50),
        || {
            let t = std::fs::read_to_string(&stderr).unwrap_or_default();
            (t.contains("masterd starting") && t.contains("transportd running")).then_some(())
        },
    );
    stop(child);
    wrote.unwrap();
    let entries = receive(&sock, Duration::from_millis(300), |_| false);
    assert!(
        entries.is_empty(),
        "journal got entries: {:?}",
        entries.iter().map(|e| show(e)).collect::<Vec<_>>()
    );

    // JOURNAL_STREAM names stderr but no journal listens: stderr, with a warning.
    std::fs::write(&stderr, "").unwrap();
    let child = start(&c, None, &stderr, &stream_of(&stderr));
    let wrote = tests::netns::wait_for(
        "fallback to stderr",
        LIMIT,
        Duration::from_millis(50),
        || {
            let t = std::fs::read_to_string(&stderr).unwrap_or_default();
            (t.contains("masterd starting") && t.contains("cannot reach the systemd journal"))
                .then_some(())
        },
    );
    stop(child);
    wrote.unwrap();
}
