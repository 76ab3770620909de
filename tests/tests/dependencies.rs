//! The dependency rules of DESIGN.md, as a test: daemons depend on
//! `transport`, `netlink`, `config` and `ipalloc`, never on each other; the
//! base crates depend on no daemon. Only masterd and tests may depend on
//! daemons; the `ipfailover` command (cli) links no daemon and no netlink,
//! nftables or packet crate.

use std::collections::BTreeMap;
use std::path::Path;

const DAEMONS: &[&str] = &["clusterd", "failoverd", "conntrackd", "masterd"];
const BASE: &[&str] = &["transport", "netlink", "config", "ipalloc"];

fn internal_deps(krate: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(krate).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("reading {krate}/Cargo.toml: {e}"));
    let doc: toml::Table = toml::from_str(&text).expect("valid Cargo.toml");
    let mut deps = Vec::new();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(section).and_then(|v| v.as_table()) {
            for name in t.keys() {
                if DAEMONS.contains(&name.as_str()) || BASE.contains(&name.as_str()) {
                    deps.push(name.clone());
                }
            }
        }
    }
    deps
}

#[test]
fn no_daemon_depends_on_another_and_base_crates_on_none() {
    let mut bad = BTreeMap::new();
    for krate in ["clusterd", "failoverd", "conntrackd"] {
        let wrong: Vec<_> = internal_deps(krate)
            .into_iter()
            .filter(|d| DAEMONS.contains(&d.as_str()))
            .collect();
        if !wrong.is_empty() {
            bad.insert(krate, wrong);
        }
    }
    for krate in BASE {
        let wrong: Vec<_> = internal_deps(krate)
            .into_iter()
            .filter(|d| DAEMONS.contains(&d.as_str()))
            .collect();
        if !wrong.is_empty() {
            bad.insert(krate, wrong);
        }
    }
    assert!(bad.is_empty(), "forbidden dependencies: {bad:?}");
    // The check reads real manifests: masterd must see the daemons it runs.
    assert!(
        internal_deps("tests").contains(&"failoverd".to_string()),
        "the manifest reader found nothing"
    );
}

/// The `ipfailover` command's dependency tree (normal and build edges, as
/// linked; `cargo tree` of the workspace itself) has no daemon and none of
/// the crates that talk to the kernel: it reaches the daemons over the
/// transport and runs the allocator from the pure `ipalloc` crate.
#[test]
fn the_cli_links_no_daemon_and_no_netlink_nftables_or_packet_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "cli",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("running cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains("transport") && crates.contains("ipalloc"),
        "the tree was not read: {crates:?}"
    );
    let forbidden = [
        "clusterd",
        "failoverd",
        "conntrackd",
        "masterd",
        "netlink",
        "rtnetlink",
        "netlink-packet-route",
        "netlink-packet-netfilter",
        "nftnl",
        "nftnl-sys",
        "pnet",
        "pnet_packet",
        "pnet_datalink",
    ];
    let found: Vec<&str> = forbidden
        .iter()
        .copied()
        .filter(|c| crates.contains(c))
        .collect();
    assert!(found.is_empty(), "the CLI links {found:?}");
}
