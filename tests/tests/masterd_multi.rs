//! masterd in node namespaces: a bad configuration starts nothing; the
//! multi-process model starts the daemons, reports readiness to systemd,
//! restarts a killed daemon and reports it, and stops everything on
//! SIGTERM; masterd's death takes its daemons with it; the single-process
//! model starts every daemon in one process and reports readiness too.
//! tests/masterd_cluster.rs runs one whole-cluster test in both models.
//!
//! The multi-process daemons run are those built next to masterd.

mod masterd_support;

use std::time::Duration;

use masterd_support::{
    alive, available_daemons, ping_all, status, wait, write_config, Masterd, NotifySocket,
};
use tests::cluster::{bin_path, TestCluster};
use tests::netns::require_root;
use transport::msg::master::{DaemonState, Model};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn a_bad_configuration_exits_1_naming_file_and_line_and_starts_nothing() {
    let dir = std::env::temp_dir().join(format!("masterd-badcfg-{}", std::process::id()));
    let run = dir.join("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nodes"), "192.0.2.10\n").unwrap();
    std::fs::write(
        dir.join("ipfailover.toml"),
        format!(
            "[transport]\nrun_dir = \"{}\"\n\n[failover]\ngarp_cuont = 3\n",
            run.display()
        ),
    )
    .unwrap();
    let masterd = bin_path("masterd").unwrap();
    let out = std::process::Command::new(&masterd)
        .arg("--config-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ipfailover.toml:5"), "{err}");
    assert!(err.contains("garp_cuont"), "{err}");
    assert!(!run.exists(), "nothing may start: {} exists", run.display());

    // A bad public_addresses line, same rule. (pnn = 0: 192.0.2.10 is not
    // this host's, and masterd runs clusterd's check of which node it is.)
    std::fs::write(dir.join("ipfailover.toml"), "[cluster]\npnn = 0\n").unwrap();
    std::fs::write(
        dir.join("public_addresses"),
        "192.0.2.201/24 eth0\n192.0.2.202/33 eth0\n",
    )
    .unwrap();
    let out = std::process::Command::new(&masterd)
        .arg("--config-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("public_addresses:2"), "{err}");

    // A missing daemon binary.
    std::fs::remove_file(dir.join("public_addresses")).unwrap();
    let empty = dir.join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = std::process::Command::new(&masterd)
        .arg("--config-dir")
        .arg(&dir)
        .arg("--bin-dir")
        .arg(&empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("transportd: no executable"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn multi_process_ready_restart_and_sigterm() {
    require_root();
    let c = TestCluster::new("md-multi", 2).unwrap();
    for n in &c.nodes {
        write_config(n, None);
    }
    let daemons = available_daemons();
    let notify = NotifySocket::new(&c.scratch, "notify0");
    let log0 = c.scratch.join("masterd0.log");
    let mut m0 = Masterd::start(
        &c.nodes[0],
        &["--daemons", &daemons],
        Some(&notify.path),
        Some(&log0),
    );
    let mut m1 = Masterd::start(&c.nodes[1], &["--daemons", &daemons], None, None);

    let ready = notify.wait_for("READY=1", LIMIT);
    assert!(
        ready.is_some(),
        "no READY=1; log:\n{}",
        std::fs::read_to_string(&log0).unwrap_or_default()
    );
    let s = status(&c.nodes[0]).expect("masterd answers GET_STATUS");
    assert_eq!(s.model, Model::MultiProcess);
    assert!(s.ready);
    assert_eq!(s.pid, m0.pid);
    let names: Vec<&str> = s.daemons.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names.join(","), daemons);
    assert!(
        s.daemons.iter().all(|d| d.state == DaemonState::Running),
        "{s:?}"
    );
    wait("both nodes answer ping -n all", LIMIT, || {
        (ping_all(&c.nodes[0]) == 2).then_some(())
    });

    // Kill transportd: masterd restarts it, counts it, and the node comes back.
    let old = s.daemons[0].pid.expect("transportd pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(old).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let s = wait("transportd restarted", LIMIT, || {
        status(&c.nodes[0]).filter(|s| {
            let t = &s.daemons[0];
            t.restarts == 1 && t.state == DaemonState::Running && t.pid != Some(old)
        })
    });
    let last = s.daemons[0].last_exit.clone().unwrap_or_default();
    assert!(last.contains("SIGKILL") || last.contains('9'), "{last}");
    wait("cluster reconnected after the restart", LIMIT, || {
        (ping_all(&c.nodes[0]) == 2).then_some(())
    });
    let log = std::fs::read_to_string(&log0).unwrap_or_default();
    assert!(log.contains("restarted"), "{log}");

    // SIGTERM: every daemon stopped, masterd exits 0, socket gone.
    let pids: Vec<u32> = s.daemons.iter().filter_map(|d| d.pid).collect();
    let st = m0.terminate(LIMIT).expect("masterd exits after SIGTERM");
    assert!(st.success(), "{st:?}");
    for pid in pids {
        wait("daemon gone", Duration::from_secs(5), || {
            (!alive(pid)).then_some(())
        });
    }
    assert!(!c.nodes[0].run_dir.join("transport.sock").exists());
    assert_eq!(ping_all(&c.nodes[1]), 1, "node 1 still answers for itself");
    assert!(m1.terminate(LIMIT).expect("node 1 stops").success());
}

#[test]
fn killing_masterd_kills_its_daemons() {
    require_root();
    let c = TestCluster::new("md-kill", 1).unwrap();
    write_config(&c.nodes[0], None);
    let m = Masterd::start(
        &c.nodes[0],
        &["--daemons", &available_daemons()],
        None,
        None,
    );
    let s = wait("masterd ready", LIMIT, || {
        status(&c.nodes[0]).filter(|s| s.ready)
    });
    let pids: Vec<u32> = s.daemons.iter().filter_map(|d| d.pid).collect();
    assert!(!pids.is_empty());
    drop(m); // SIGKILL
    for pid in pids {
        wait("daemon died with masterd", Duration::from_secs(5), || {
            (!alive(pid)).then_some(())
        });
    }
}

#[test]
fn single_process_model_runs_the_same_cluster() {
    require_root();
    let c = TestCluster::new("md-single", 2).unwrap();
    for n in &c.nodes {
        write_config(n, None);
    }
    let notify = NotifySocket::new(&c.scratch, "notify-s");
    let log0 = c.scratch.join("single0.log");
    // Every daemon has an in-process entry point.
    let daemons = masterd::daemons::ALL
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(",");
    let mut m0 = Masterd::start(
        &c.nodes[0],
        &["--single-process", "--daemons", &daemons],
        Some(&notify.path),
        Some(&log0),
    );
    let mut m1 = Masterd::start(
        &c.nodes[1],
        &["--single-process", "--daemons", &daemons],
        None,
        None,
    );
    assert!(
        notify.wait_for("READY=1", LIMIT).is_some(),
        "no READY=1; log:\n{}",
        std::fs::read_to_string(&log0).unwrap_or_default()
    );
    let s = status(&c.nodes[0]).expect("status");
    assert_eq!(s.model, Model::SingleProcess);
    assert!(s.daemons.iter().all(|d| d.pid == Some(m0.pid)), "{s:?}");
    wait("both nodes answer ping -n all", LIMIT, || {
        (ping_all(&c.nodes[0]) == 2).then_some(())
    });
    assert!(m0.terminate(LIMIT).expect("stops").success());
    assert!(!c.nodes[0].run_dir.join("transport.sock").exists());
    assert!(m1.terminate(LIMIT).expect("stops").success());
}

/// With failoverd built: every public address gets hosted, and SIGTERM to
/// every masterd leaves no public address configured on any node.
#[test]
fn sigterm_leaves_no_public_address_behind() {
    require_root();
    if bin_path("failoverd").is_err() {
        eprintln!("failoverd is not built: nothing hosts addresses, test skipped");
        return;
    }
    let c = TestCluster::new("md-addr", 2).unwrap();
    let pa = "192.0.2.201/24 eth0\n192.0.2.202/24 eth0\n192.0.2.203/24 eth0\n";
    for n in &c.nodes {
        write_config(n, Some(pa));
    }
    let daemons = available_daemons();
    let mut ms: Vec<Masterd> = c
        .nodes
        .iter()
        .map(|n| Masterd::start(n, &["--daemons", &daemons], None, None))
        .collect();
    let hosted = |n: &tests::cluster::Node| -> usize {
        let text =
            n.ns.exec_ok("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
                .unwrap_or_default();
        ["192.0.2.201/", "192.0.2.202/", "192.0.2.203/"]
            .iter()
            .filter(|a| text.contains(*a))
            .count()
    };
    wait("every public address hosted", LIMIT, || {
        (c.nodes.iter().map(hosted).sum::<usize>() == 3).then_some(())
    });
    for m in &mut ms {
        let st = m.terminate(LIMIT).expect("masterd stops");
        assert!(st.success(), "{st:?}");
    }
    for n in &c.nodes {
        assert_eq!(hosted(n), 0, "node {} still has public addresses", n.pnn);
    }
}

/// The scheduling policy of a process (`SCHED_RESET_ON_FORK` masked off).
fn policy(pid: u32) -> i32 {
    // SAFETY: a plain system call on a pid.
    let p = unsafe { libc::sched_getscheduler(i32::try_from(pid).unwrap()) };
    p & !libc::SCHED_RESET_ON_FORK
}

/// (real-time priority, policy) of every thread of a process: fields 40
/// and 41 of /proc/PID/task/TID/stat.
fn thread_policies(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces) start
        // at field 3.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (Some(prio), Some(pol)) = (f.get(40 - 3), f.get(41 - 3)) else {
            continue;
        };
        out.push((
            e.file_name().to_string_lossy().into_owned(),
            prio.parse().unwrap_or(u32::MAX),
            pol.parse().unwrap_or(u32::MAX),
        ));
    }
    out
}

/// Locked memory of a process, in kB (`VmLck` of /proc/PID/status).
fn locked_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_lease_path_runs_at_real_time_priority_with_locked_memory_and_hooks_do_not() {
    require_root();
    let c = TestCluster::new("md-rt", 1).unwrap();
    let n = &c.nodes[0];
    write_config(n, Some("192.0.2.201/24 eth0\n"));
    let toml = n.config_dir.join("ipfailover.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}\n[cluster]\nrealtime_priority = 1\n")).unwrap();
    // A hook that records its own scheduling policy (field 41 of
    // /proc/self/stat: 0 normal, 2 SCHED_RR).
    let hooks = n.config_dir.join("events");
    std::fs::create_dir_all(&hooks).unwrap();
    let out = c.scratch.join("hook-policy");
    let hook = hooks.join("10.policy");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncut -d' ' -f41 /proc/$$/stat >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Masterd::start(n, &["--daemons", &available_daemons()], None, None);
    let s = wait("masterd ready", LIMIT, || status(n).filter(|s| s.ready));
    for d in &s.daemons {
        let pid = d.pid.expect("running");
        let rt = matches!(d.name.as_str(), "transportd" | "clusterd" | "failoverd");
        let want = if rt {
            libc::SCHED_RR
        } else {
            libc::SCHED_OTHER
        };
        assert_eq!(policy(pid), want, "{} (pid {pid})", d.name);
        if rt {
            assert!(locked_kb(pid) > 0, "{} locked no memory", d.name);
            // Every thread, not only the main one (SCHED_RESET_ON_FORK
            // resets threads too); clusterd and transportd one step above
            // failoverd.
            let want_prio = if d.name == "failoverd" { 1 } else { 2 };
            let threads = thread_policies(pid);
            assert!(!threads.is_empty(), "{}: no threads read", d.name);
            for (tid, prio, pol) in &threads {
                assert!(
                    *pol == 2 && *prio == want_prio,
                    "{} thread {tid}: policy {pol}, priority {prio} (want SCHED_RR, {want_prio}): {threads:?}",
                    d.name
                );
            }
        } else {
            assert_eq!(locked_kb(pid), 0, "{} locked memory", d.name);
        }
    }
    // The one-node cluster takes its address and runs the takeip hook.
    let policy_line = wait("the takeip hook ran", LIMIT, || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|t| !t.trim().is_empty())
    });
    assert!(
        policy_line.lines().all(|l| l.trim() == "0"),
        "hooks must run at normal priority: {policy_line}"
    );
    drop(m);
}
