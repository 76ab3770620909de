//! The dependency rules of DESIGN.md, as a test: daemons depend on
//! `transport`, `netlink`, `config` and `ipalloc`, never on each other; the
//! base crates depend on no daemon. Only masterd and tests may depend on
//! daemons; the `ipfailover` command (cli) links no daemon and no netlink,
//! nftables or packet crate, nor transportd's (snow) or the daemons'
//! (journald) dependencies; clusterd, failoverd and conntrackd link no snow.

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

/// The crates in `krate`'s dependency tree (normal and build edges, as
/// linked; `cargo tree` of the workspace itself, its features as that
/// package asks for them).
fn linked_crates(krate: &str) -> std::collections::BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            krate,
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {krate} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        crates.contains("transport"),
        "the tree of {krate} was not read: {crates:?}"
    );
    crates
}

/// The names of `forbidden` that `crates` holds.
fn found<'a>(crates: &std::collections::BTreeSet<String>, forbidden: &[&'a str]) -> Vec<&'a str> {
    forbidden
        .iter()
        .copied()
        .filter(|c| crates.contains(*c))
        .collect()
}

/// transportd's own dependencies (the Noise links) stay in transportd and
/// masterd (which runs it in process): the daemons' client side takes
/// `transport` with feature `daemon` only.
const TRANSPORTD_ONLY: &[&str] = &["snow"];
/// The daemon skeleton's logging: daemons only, never the CLI.
const DAEMON_ONLY: &[&str] = &["tracing-journald", "tracing-subscriber"];

/// The `ipfailover` command's dependency tree (normal and build edges, as
/// linked; `cargo tree` of the workspace itself) has no daemon and none of
/// the crates that talk to the kernel: it reaches the daemons over the
/// transport and runs the allocator from the pure `ipalloc` crate.
#[test]
fn the_cli_links_no_daemon_and_no_netlink_nftables_or_packet_crate() {
    let crates = linked_crates("cli");
    assert!(
        crates.contains("ipalloc"),
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
    let bad = found(&crates, &forbidden);
    assert!(bad.is_empty(), "the CLI links {bad:?}");
    let bad = found(&crates, &[TRANSPORTD_ONLY, DAEMON_ONLY].concat());
    assert!(
        bad.is_empty(),
        "the CLI links transportd's or the daemons' {bad:?}: take `transport` without features"
    );
}

/// The daemons other than masterd are transportd's clients: they link no
/// Noise (snow); they do link the daemon skeleton's logging.
#[test]
fn the_daemons_client_side_links_no_transportd_dependency() {
    for krate in ["clusterd", "failoverd", "conntrackd"] {
        let crates = linked_crates(krate);
        let bad = found(&crates, TRANSPORTD_ONLY);
        assert!(
            bad.is_empty(),
            "{krate} links transportd's {bad:?}: take `transport` with feature `daemon` only"
        );
        // The check can see a feature's dependency: the logging is there.
        assert!(
            crates.contains("tracing-journald"),
            "{krate}: the tree shows no tracing-journald, so it cannot show snow either"
        );
    }
    // And masterd, which runs transportd, does link it.
    assert!(linked_crates("masterd").contains("snow"));
}
