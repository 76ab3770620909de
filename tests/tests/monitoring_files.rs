//! The monitoring files shipped in packaging/monitoring (#18 item 3): the
//! alerting rules pass `promtool check rules`, and every query of the
//! Grafana dashboard is valid PromQL (each is checked by promtool as a
//! recording rule) and names only metrics that docs/observability.md
//! documents (so a renamed metric breaks this test, not an operator's
//! dashboard).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool_check_rules(file: &Path) {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "promtool check rules {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `ipfailover_*` metric name in `expr` (histogram series suffixes
/// removed).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("ipfailover_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(base.to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_alerting_rules_pass_promtool() {
    promtool_check_rules(&root().join("packaging/monitoring/ipfailover-alerts.yml"));
}

#[test]
fn every_dashboard_query_is_promql_over_documented_metrics() {
    let text =
        std::fs::read_to_string(root().join("packaging/monitoring/ipfailover-dashboard.json"))
            .expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let docs = std::fs::read_to_string(root().join("docs/observability.md")).expect("docs");
    let alerts =
        std::fs::read_to_string(root().join("packaging/monitoring/ipfailover-alerts.yml")).unwrap();
    let mut exprs: Vec<String> = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        // The dashboard's $job variable, as Grafana fills it in.
        let e = e.replace("$job", "ipfailover");
        rules.push_str(&format!(
            "      - record: ipfailover:dashboard_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = std::env::temp_dir().join(format!("ipf-monitoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    promtool_check_rules(&file);
    let _ = std::fs::remove_dir_all(&dir);
    for e in exprs
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(alerts.as_str()))
    {
        for m in metrics_in(e) {
            assert!(
                docs.contains(&format!("`{m}`")),
                "{m} (in {e:?}) is not in docs/observability.md"
            );
        }
    }
}
