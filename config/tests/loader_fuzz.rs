//! Fuzzing of the configuration loaders, as an ordinary test: `nodes`,
//! `public_addresses` and `ipfailover.toml`, each from raw bytes through the
//! same steps as loading a file (UTF-8 check, line rules, parser). Seeds:
//! valid files, the example `ipfailover.toml` and every broken file of
//! tests/corpus/. Random bytes and mutations (truncations, inserted bytes,
//! spliced files, bit flips). Checks: no panic, no hang, allocation within
//! the stated bound, every error names the file (`FILE:LINE...`), and every
//! valid `nodes` and `public_addresses` file, written back in the file's own
//! format, parses to the same entries. The harness is transport's
//! (transport/tests/fuzz/mod.rs).
//!
//! Short run: `cargo test -p config --test loader_fuzz`; long run with
//! `FUZZ_CASES=10000000` (docs/RELIABILITY.md, "Fuzzing").

#[path = "../../transport/tests/fuzz/mod.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

use config::nodes::NodesFile;
use config::{public_addresses, text};
use fuzz::{run, Counting, Outcome, Target};

#[global_allocator]
static GLOBAL: Counting = Counting;

const SHORT: u64 = 50_000;

/// Line-based files: the line list (24 bytes per line, a line per byte at
/// most), the entries and their strings, the error message.
fn text_bound(len: usize) -> usize {
    64 * len + 4096
}

/// `ipfailover.toml`: the toml crate's document tree, spans and the
/// deserialized values.
fn toml_bound(len: usize) -> usize {
    256 * len + 64 * 1024
}

fn corpus(ext: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/corpus exists")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file readable"))
        .collect();
    assert!(
        seeds.len() >= 10,
        "few .{ext} corpus files in {}",
        dir.display()
    );
    seeds
}

/// An error must say which file, first (`FILE:LINE[:COL]: what`).
fn names_the_file(msg: &str, file: &Path) {
    let prefix = format!("{}:", file.display());
    assert!(msg.starts_with(&prefix), "error without FILE: {msg}");
}

#[test]
fn nodes_file() {
    let file = Path::new("/fuzz/nodes");
    let mut seeds = vec![
        b"192.0.2.1\n192.0.2.2\n".to_vec(),
        b"# comment\n2001:db8::1\n#deleted\n  192.0.2.3  \r\n".to_vec(),
    ];
    seeds.extend(corpus("nodes"));
    let mut decode = |b: &[u8]| {
        let parsed = text::decode(b.to_vec(), file)
            .map_err(|e| e.to_string())
            .and_then(|t| NodesFile::parse(file, &t).map_err(|e| e.to_string()));
        match parsed {
            Ok(nodes) => {
                // Written back: one line per entry, `#` for a deleted one.
                let back: String = nodes
                    .nodes
                    .iter()
                    .map(|n| n.address.map_or("#deleted\n".into(), |a| format!("{a}\n")))
                    .collect();
                let again = NodesFile::parse(file, &back).expect("written-back nodes parse");
                let key = |f: &NodesFile| -> Vec<_> {
                    f.nodes.iter().map(|n| (n.pnn, n.address)).collect()
                };
                assert_eq!(key(&again), key(&nodes), "nodes round trip");
                Outcome::Valid
            }
            Err(msg) => {
                names_the_file(&msg, file);
                Outcome::Invalid
            }
        }
    };
    run(Target {
        name: "nodes",
        seeds,
        default_cases: SHORT,
        alloc_bound: text_bound,
        mutate: None,
        decode: &mut decode,
    });
}

#[test]
fn public_addresses_file() {
    let file = Path::new("/fuzz/public_addresses");
    let mut seeds = vec![
        b"192.0.2.101/24 eth0\n".to_vec(),
        b"# public\n203.0.113.10/24 eth0,eth1\n2001:db8::10/64\tbond0 # comment\n".to_vec(),
    ];
    seeds.extend(corpus("public_addresses"));
    let mut decode = |b: &[u8]| {
        let parsed = text::decode(b.to_vec(), file)
            .map_err(|e| e.to_string())
            .and_then(|t| public_addresses::parse(&t, file).map_err(|e| e.to_string()));
        match parsed {
            Ok(entries) => {
                let back: String = entries.iter().map(|e| format!("{e}\n")).collect();
                let again =
                    public_addresses::parse(&back, file).expect("written-back entries parse");
                assert_eq!(again, entries, "public_addresses round trip");
                Outcome::Valid
            }
            Err(msg) => {
                names_the_file(&msg, file);
                Outcome::Invalid
            }
        }
    };
    run(Target {
        name: "public_addresses",
        seeds,
        default_cases: SHORT,
        alloc_bound: text_bound,
        mutate: None,
        decode: &mut decode,
    });
}

#[test]
fn ipfailover_toml() {
    let file = Path::new("/fuzz/ipfailover.toml");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/ipfailover.toml");
    let mut seeds = vec![
        std::fs::read(&example).expect("the example ipfailover.toml"),
        b"[cluster]\npnn = 0\n".to_vec(),
        Vec::new(),
    ];
    seeds.extend(corpus("toml"));
    let mut decode = |b: &[u8]| {
        let parsed = text::decode(b.to_vec(), file)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                config::parse(&t, file)
                    .map(|(c, w)| (format!("{c:?}"), w))
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok((config, warnings)) => {
                // No writer for the TOML file: parsing is at least a
                // function of the bytes (same input, same result).
                let t = std::str::from_utf8(b).expect("decoded above");
                let (again, w2) = config::parse(t, file).expect("parses again");
                assert_eq!(format!("{again:?}"), config);
                assert_eq!(w2, warnings);
                Outcome::Valid
            }
            Err(msg) => {
                names_the_file(&msg, file);
                Outcome::Invalid
            }
        }
    };
    run(Target {
        name: "ipfailover.toml",
        seeds,
        default_cases: SHORT,
        alloc_bound: toml_bound,
        mutate: None,
        decode: &mut decode,
    });
}
