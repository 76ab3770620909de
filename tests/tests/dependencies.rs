//! The dependency rules of DESIGN.md, as a test: daemons depend on
//! `transport`, `netlink` and `config`, never on each other; the base crates
//! depend on no daemon. Only masterd, cli and tests may depend on daemons.

use std::collections::BTreeMap;
use std::path::Path;

const DAEMONS: &[&str] = &["clusterd", "failoverd", "conntrackd", "masterd"];
const BASE: &[&str] = &["transport", "netlink", "config"];

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
