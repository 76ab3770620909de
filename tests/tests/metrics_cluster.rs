//! masterd's Prometheus endpoint on a real cluster, scraped by a real
//! Prometheus server (Debian's `prometheus`, installed by scripts/setup.sh)
//! through a failover.
//!
//! Three nodes in network namespaces, each run by masterd with every
//! daemon and `[metrics] listen = "0.0.0.0:9379"`; three public addresses.
//! The test scrapes node 0's `/metrics` from inside its namespace and runs
//! `promtool check metrics` on it; runs `ipfailover -n all -X statistics`;
//! then starts Prometheus in the client namespace scraping the three nodes
//! every second, powers off the node hosting 192.0.2.201 (cable cut,
//! masterd and its daemons killed) and checks through Prometheus's HTTP
//! query API that the failover shows: the address's hosted gauge moved to
//! a survivor, the survivors' takeover-run counters and duration
//! histograms grew, the new host's take histogram and announcements grew
//! and a survivor led a run (failoverd's own counters), the dead node's
//! target is down, no address stays unhosted, the survivors measured
//! heartbeat round trips to the victim before and count its heartbeats
//! missing after, and conntrack replication between them is current.
//! Last, it plots what Prometheus recorded around the power-off (raw
//! samples through the query API) as an SVG: in the scratch directory, and
//! at `$IPFAILOVER_PLOT` when set (docs/observability-failover.svg).

mod masterd_support;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use masterd_support::{available_daemons, status, wait, Masterd};
use tests::cluster::{bin_path, Node, TestCluster};
use tests::netns::{require_root, NetNs};

const LIMIT: Duration = Duration::from_secs(30);
const PORT: u16 = 9379;
const PROMETHEUS: &str = "127.0.0.1:9090";

/// One HTTP/1.0 GET (no chunked encoding, the server closes) from inside
/// `ns`: `(status, body)`, or `None` when nothing answers.
fn http_get(ns: &NetNs, addr: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = addr.parse().unwrap();
    let path = path.to_string();
    ns.run(move || -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    })
    .ok()
    .flatten()
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An instant query through Prometheus's HTTP API: each series' labels and
/// value; `None` when Prometheus does not answer (yet).
fn query(client: &NetNs, expr: &str) -> Option<Vec<(BTreeMap<String, String>, f64)>> {
    let (code, body) = http_get(
        client,
        PROMETHEUS,
        &format!("/api/v1/query?query={}", encode(expr)),
    )?;
    // 503 while Prometheus is still starting (its TSDB not open yet): not
    // an answer yet (seen once under load, right after the start).
    if code == 503 {
        return None;
    }
    assert_eq!(code, 200, "query {expr}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{body}");
    let out = v["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (labels, value)
        })
        .collect();
    Some(out)
}

/// The raw samples of a range-vector query (`expr[Ns]`): each series'
/// labels and `(unix seconds, value)` points.
type Matrix = Vec<(BTreeMap<String, String>, Vec<(f64, f64)>)>;

fn query_matrix(client: &NetNs, expr: &str) -> Matrix {
    let Some((code, body)) = http_get(
        client,
        PROMETHEUS,
        &format!("/api/v1/query?query={}", encode(expr)),
    ) else {
        return Vec::new();
    };
    assert_eq!(code, 200, "query {expr}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{body}");
    v["data"]["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let labels = r["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let points = r["values"]
                        .as_array()
                        .map(|vs| {
                            vs.iter()
                                .filter_map(|p| {
                                    Some((p[0].as_f64()?, p[1].as_str()?.parse::<f64>().ok()?))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (labels, points)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The picture of the failover in docs/observability.md, from what
/// Prometheus recorded: written to the scratch directory, and to
/// `$IPFAILOVER_PLOT` when set (docs/observability-failover.svg is made
/// that way).
fn plot_failover(c: &TestCluster, victim: usize, off: f64) {
    use tests::plot::{svg, Panel, Series};
    let window = (unix_now() - off + 8.0).ceil();
    let node_of = |labels: &BTreeMap<String, String>| {
        let i = labels.get("instance").cloned().unwrap_or_default();
        c.nodes
            .iter()
            .find(|n| instance(n) == i)
            .map_or(i, |n| format!("node {}", n.pnn))
    };
    let panel = |title: &str, unit: &str, expr: &str, step: bool| {
        let mut series: Vec<Series> = query_matrix(&c.client, &format!("{expr}[{window}s]"))
            .into_iter()
            .map(|(labels, points)| Series {
                name: node_of(&labels),
                points: points.into_iter().map(|(t, v)| (t - off, v)).collect(),
            })
            .collect();
        series.sort_by(|a, b| a.name.cmp(&b.name));
        Panel {
            title: title.to_string(),
            unit: unit.to_string(),
            series,
            step,
        }
    };
    let panels = [
        panel(
            "Who hosts 192.0.2.201, as each node sees it: ipfailover_address_owner",
            "PNN, -1: nobody",
            "ipfailover_address_owner{address=\"192.0.2.201\"}",
            true,
        ),
        panel(
            "Addresses no node hosts: ipfailover_addresses_unhosted",
            "addresses",
            "ipfailover_addresses_unhosted",
            true,
        ),
        panel(
            &format!("Silence of node {victim}'s heartbeats: ipfailover_heartbeat_silence_seconds{{peer=\"{victim}\"}}"),
            "s",
            &format!("ipfailover_heartbeat_silence_seconds{{peer=\"{victim}\"}}"),
            false,
        ),
        panel(
            "Takeover runs ended: ipfailover_takeover_runs_total",
            "runs",
            "ipfailover_takeover_runs_total",
            true,
        ),
    ];
    for p in &panels {
        assert!(!p.series.is_empty(), "nothing recorded for {}", p.title);
    }
    let text = svg(
        &format!("A failover as Prometheus recorded it: node {victim} powered off at 0 s (three nodes, scraped every second)"),
        "seconds since the power-off",
        &panels,
        &[(0.0, "power off")],
    );
    let path = c.scratch.join("failover.svg");
    std::fs::write(&path, &text).unwrap();
    if let Ok(dest) = std::env::var("IPFAILOVER_PLOT") {
        std::fs::write(&dest, &text).unwrap();
        println!("failover picture written to {dest}");
    }
}

/// The value per `instance` of an instant query.
fn by_instance(client: &NetNs, expr: &str) -> BTreeMap<String, f64> {
    query(client, expr)
        .unwrap_or_default()
        .into_iter()
        .map(|(l, v)| (l.get("instance").cloned().unwrap_or_default(), v))
        .collect()
}

fn instance(n: &Node) -> String {
    format!("{}:{PORT}", n.addr)
}

/// The value of the sample `line` starts with (`name{labels} `) in a
/// scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn scrape(n: &Node) -> Option<String> {
    let (code, body) = http_get(&n.ns, &format!("127.0.0.1:{PORT}"), "/metrics")?;
    (code == 200).then_some(body)
}

fn promtool_check(text: &str) -> Output {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("needs promtool: apt-get install prometheus (scripts/setup.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn start_prometheus(c: &TestCluster, dir: &Path) -> u32 {
    std::fs::create_dir_all(dir).unwrap();
    let targets: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", instance(n)))
        .collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: ipfailover\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let mut cmd = c.client.command("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap());
    c.client
        .spawn(cmd)
        .expect("needs prometheus: apt-get install prometheus (scripts/setup.sh does)")
}

#[test]
fn prometheus_sees_a_failover() {
    require_root();
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "needs prometheus and promtool: apt-get install prometheus (scripts/setup.sh does)"
    );
    assert!(
        bin_path("failoverd").is_ok(),
        "needs every daemon built: cargo build --workspace --bins"
    );
    let c = TestCluster::new("metrics", 3).unwrap();
    let pa = "192.0.2.201/24 eth0\n192.0.2.202/24 eth0\n192.0.2.203/24 eth0\n";
    for n in &c.nodes {
        std::fs::write(
            n.config_dir.join("ipfailover.toml"),
            format!(
                "[transport]\nrun_dir = \"{}\"\n\n[metrics]\nlisten = \"0.0.0.0:{PORT}\"\n",
                n.run_dir.display()
            ),
        )
        .unwrap();
        std::fs::write(n.config_dir.join("public_addresses"), pa).unwrap();
    }
    let daemons = available_daemons();
    let mut masterds: Vec<Masterd> = c
        .nodes
        .iter()
        .map(|n| {
            let log = c.scratch.join(format!("node{}-masterd.log", n.pnn));
            Masterd::start(n, &["--daemons", &daemons], None, Some(&log))
        })
        .collect();
    for n in &c.nodes {
        wait("masterd ready", LIMIT, || status(n).filter(|s| s.ready));
    }

    // Node 0's own endpoint, from inside its namespace: every address
    // hosted somewhere, every daemon up, and promtool is happy with it.
    let n0 = &c.nodes[0];
    let text = wait("node 0 sees all 3 addresses hosted", LIMIT, || {
        let t = scrape(n0)?;
        let ok = sample(&t, "ipfailover_addresses_unhosted") == Some(0.0)
            && sample(&t, "ipfailover_address_lists_answered") == Some(3.0);
        ok.then_some(t)
    });
    for d in [
        "masterd",
        "transportd",
        "clusterd",
        "conntrackd",
        "failoverd",
    ] {
        assert_eq!(
            sample(&text, &format!("ipfailover_daemon_up{{daemon=\"{d}\"}}")),
            Some(1.0),
            "{d} not up in\n{text}"
        );
    }
    assert_eq!(sample(&text, "ipfailover_lease_valid"), Some(1.0), "{text}");
    // transportd's traffic per peer and per service (heartbeats flow).
    for series in [
        "ipfailover_transport_peer_frames_total{direction=\"in\",peer=\"1\"}",
        "ipfailover_transport_peer_bytes_total{direction=\"out\",peer=\"2\"}",
        "ipfailover_transport_service_frames_total{direction=\"in\",service=\"clusterd\"}",
    ] {
        assert!(
            sample(&text, series).is_some_and(|v| v > 0.0),
            "{series} in\n{text}"
        );
    }
    assert_eq!(sample(&text, "ipfailover_public_addresses"), Some(3.0));
    let out = promtool_check(&text);
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _) = http_get(&n0.ns, &format!("127.0.0.1:{PORT}"), "/nothing").unwrap();
    assert_eq!(code, 404);

    // ipfailover statistics reaches every daemon of every node.
    let bin = bin_path("ipfailover").unwrap();
    let out = n0
        .ns
        .command(bin.to_str().unwrap())
        .arg("--run-dir")
        .arg(&n0.run_dir)
        .args(["-n", "all", "-X", "statistics"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.starts_with("|PNN|Daemon|Counter|Value|\n"), "{table}");
    for pnn in 0..3 {
        for d in [
            "transportd",
            "clusterd",
            "conntrackd",
            "failoverd",
            "masterd",
        ] {
            let row = format!("|{pnn}|{d}|");
            assert!(table.contains(&row), "no {row} in\n{table}");
        }
    }

    // Prometheus in the client namespace scrapes the three nodes.
    let _prometheus = start_prometheus(&c, &c.scratch.join("prometheus"));
    wait("Prometheus scrapes all 3 nodes", LIMIT, || {
        let up = by_instance(&c.client, "up");
        (up.len() == 3 && up.values().all(|v| *v == 1.0)).then_some(())
    });
    let hosts = wait("Prometheus knows who hosts 192.0.2.201", LIMIT, || {
        let h = by_instance(
            &c.client,
            "ipfailover_address_hosted{address=\"192.0.2.201\"} == 1",
        );
        (h.len() == 1).then_some(h)
    });
    let victim_instance = hosts.keys().next().unwrap().clone();
    let victim = c
        .nodes
        .iter()
        .position(|n| instance(n) == victim_instance)
        .unwrap();
    let survivors: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| instance(n) != victim_instance)
        .map(instance)
        .collect();
    let runs_before = by_instance(&c.client, "ipfailover_takeover_runs_total");
    let takes_before = by_instance(&c.client, "ipfailover_address_take_duration_seconds_count");
    let led_query = format!(
        "sum(ipfailover_takeover_runs_led_total{{instance=~\"{}\"}})",
        survivors.join("|")
    );
    let led_before = query(&c.client, &led_query)
        .and_then(|r| r.first().map(|(_, v)| *v))
        .unwrap_or(0.0);
    let timed_before = by_instance(&c.client, "ipfailover_takeover_run_duration_seconds_count");

    // clusterd's per-peer heartbeat metrics: round trips measured to
    // every peer, nothing missed yet worth a failover.
    wait("heartbeat round trips recorded", LIMIT, || {
        let rtt = by_instance(
            &c.client,
            &format!("ipfailover_heartbeat_round_trip_seconds_count{{peer=\"{victim}\"}} > 0"),
        );
        (survivors.iter().all(|i| rtt.contains_key(i))).then_some(())
    });
    let missed_before = by_instance(
        &c.client,
        &format!("ipfailover_heartbeats_missed_total{{peer=\"{victim}\"}}"),
    );

    // Some seconds of the settled cluster for the picture.
    std::thread::sleep(Duration::from_secs(8));
    // Power the victim off: cable cut, masterd and its daemons killed.
    let off = unix_now();
    c.power_off(victim).unwrap();
    let _ = masterds[victim].child.kill();
    let _ = masterds[victim].child.wait();

    let new_host = wait(
        "Prometheus sees 192.0.2.201 hosted by a survivor",
        LIMIT,
        || {
            let h = by_instance(
                &c.client,
                "ipfailover_address_hosted{address=\"192.0.2.201\"} == 1",
            );
            h.keys().find(|i| survivors.contains(i)).cloned()
        },
    );
    wait(
        "the survivors' takeover runs and durations grow",
        LIMIT,
        || {
            let runs = by_instance(&c.client, "ipfailover_takeover_runs_total");
            let timed = by_instance(&c.client, "ipfailover_takeover_run_duration_seconds_count");
            let grew = |now: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, i: &String| {
                now.get(i).copied().unwrap_or(0.0) > before.get(i).copied().unwrap_or(0.0)
            };
            survivors
                .iter()
                .all(|i| grew(&runs, &runs_before, i) && grew(&timed, &timed_before, i))
                .then_some(())
        },
    );
    // The histogram holds the failover's duration: a non-empty bucket
    // below the top one on the new host (a failover takes seconds, not a
    // minute).
    let buckets = query(
        &c.client,
        &format!(
            "ipfailover_takeover_run_duration_seconds_bucket{{instance=\"{new_host}\",le=\"30\"}}"
        ),
    )
    .unwrap();
    assert!(
        buckets.first().is_some_and(|(_, v)| *v >= 1.0),
        "{buckets:?}"
    );
    wait("the victim's target is down", LIMIT, || {
        let up = by_instance(&c.client, "up");
        (up.get(&victim_instance) == Some(&0.0)).then_some(())
    });
    wait("no address unhosted", LIMIT, || {
        let u = by_instance(&c.client, "ipfailover_addresses_unhosted");
        (survivors.iter().all(|i| u.get(i) == Some(&0.0))).then_some(())
    });
    // failoverd's own counters: the new host timed its take and announced
    // the address; a survivor led the run (the leader may have died).
    wait("failoverd's take and run counters grow", LIMIT, || {
        let takes = by_instance(&c.client, "ipfailover_address_take_duration_seconds_count");
        let announced = by_instance(&c.client, "ipfailover_announcements_sent_total");
        let led = query(&c.client, &led_query)?.first().map(|(_, v)| *v)?;
        (takes.get(&new_host).copied().unwrap_or(0.0)
            > takes_before.get(&new_host).copied().unwrap_or(0.0)
            && announced.get(&new_host).is_some_and(|v| *v >= 1.0)
            && led > led_before)
            .then_some(())
    });
    let moved = by_instance(&c.client, "ipfailover_addresses_taken_total");
    assert!(moved.get(&new_host).is_some_and(|v| *v >= 1.0), "{moved:?}");
    // The survivors count the victim's missing heartbeats and its silence.
    wait("the victim's heartbeats counted missing", LIMIT, || {
        let missed = by_instance(
            &c.client,
            &format!("ipfailover_heartbeats_missed_total{{peer=\"{victim}\"}}"),
        );
        let silent = by_instance(
            &c.client,
            &format!("ipfailover_heartbeat_silence_seconds{{peer=\"{victim}\"}} > 1"),
        );
        survivors
            .iter()
            .all(|i| {
                missed.get(i).copied().unwrap_or(0.0)
                    >= missed_before.get(i).copied().unwrap_or(0.0) + 5.0
                    && silent.contains_key(i)
            })
            .then_some(())
    });
    // Replication between the survivors' conntrackds is current.
    wait("conntrack replication between the survivors", LIMIT, || {
        let age = query(
            &c.client,
            "ipfailover_conntrack_replication_lag_seconds == 0",
        )?;
        (!age.is_empty()).then_some(())
    });
    // The picture: 8 s before the power-off to 15 s after.
    let after = 15.0 - (unix_now() - off);
    if after > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(after));
    }
    plot_failover(&c, victim, off);
}

/// The default `[metrics]` (127.0.0.1:9379) in the single-process model,
/// where failoverd's counters live in masterd's own process, and
/// `listen = ""`, which serves nothing.
#[test]
fn single_process_serves_the_default_and_empty_listen_serves_nothing() {
    require_root();
    assert!(
        bin_path("failoverd").is_ok(),
        "needs every daemon built: cargo build --workspace --bins"
    );
    let c = TestCluster::new("metsp", 2).unwrap();
    for n in &c.nodes {
        let metrics = if n.pnn == 1 {
            "\n[metrics]\nlisten = \"\"\n"
        } else {
            ""
        };
        std::fs::write(
            n.config_dir.join("ipfailover.toml"),
            format!(
                "[transport]\nrun_dir = \"{}\"\n{metrics}",
                n.run_dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            n.config_dir.join("public_addresses"),
            "192.0.2.201/24 eth0\n",
        )
        .unwrap();
    }
    let daemons = available_daemons();
    let _m0 = Masterd::start(
        &c.nodes[0],
        &["--daemons", &daemons, "--single-process"],
        None,
        Some(&c.scratch.join("node0-masterd.log")),
    );
    let _m1 = Masterd::start(&c.nodes[1], &["--daemons", &daemons], None, None);
    for n in &c.nodes {
        wait("masterd ready", LIMIT, || status(n).filter(|s| s.ready));
    }
    let text = wait("node 0 serves the address's take", LIMIT, || {
        let t = scrape(&c.nodes[0])?;
        let ok = sample(&t, "ipfailover_addresses_unhosted") == Some(0.0)
            && sample(&t, "ipfailover_address_lists_answered") == Some(2.0);
        ok.then_some(t)
    });
    for d in [
        "masterd",
        "transportd",
        "clusterd",
        "conntrackd",
        "failoverd",
    ] {
        assert_eq!(
            sample(&text, &format!("ipfailover_daemon_up{{daemon=\"{d}\"}}")),
            Some(1.0),
            "{d} not up in\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE ipfailover_address_take_duration_seconds histogram"),
        "{text}"
    );
    let out = promtool_check(&text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Node 1 serves nothing on 9379, on loopback or anywhere else.
    assert_eq!(scrape(&c.nodes[1]), None);
    assert_eq!(
        http_get(
            &c.nodes[0].ns,
            &format!("{}:{PORT}", c.nodes[1].addr),
            "/metrics"
        ),
        None
    );
}
