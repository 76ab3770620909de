//! masterd's single-process model restarts a daemon by running its entry
//! point again in the same process, 100 ms after the old task ended (the
//! first delay of its backoff). The old instance must be gone from
//! transportd by then, even while tasks it spawned still hold handles of its
//! client. Finding 7 of docs/RELIABILITY.md: failoverd, ended by a SHUTDOWN
//! control and restarted, was refused by transportd ("service failoverd is
//! already registered") for up to 1.5 s, because its membership polls (and
//! other request tasks) kept the old registration alive.
//!
//! Everything runs as masterd's single-process model runs it: transportd's
//! library and failoverd's in-process entry point, on one runtime, in a
//! test namespace.

use std::time::Duration;

use tests::cluster::TestCluster;
use tests::netns::require_root;
use tokio::sync::watch;
use transport::client::{Client, ClientError};

/// masterd's first restart delay (`Backoff::default`).
const RESTART_DELAY: Duration = Duration::from_millis(100);

#[test]
fn in_process_failoverd_restarted_registers_at_once() {
    require_root();
    let c = TestCluster::new("ipr-fo", 1).unwrap();
    let node = &c.nodes[0];
    std::fs::write(
        node.config_dir.join("ipfailover.toml"),
        format!("[transport]\nrun_dir = \"{}\"\n", node.run_dir.display()),
    )
    .unwrap();
    // An address failoverd may host (it never will: no lease without
    // clusterd's word), so that its guard and lease tables are real.
    std::fs::write(
        node.config_dir.join("public_addresses"),
        "198.51.100.201/24 eth0\n",
    )
    .unwrap();
    let dir = node.config_dir.clone();
    let outcome = node
        .ns
        .block_on(move || async move {
            masterd::setup::load(&dir).map_err(|e| e.to_string())?;
            let settings = transport::transportd::entry::load(&dir)
                .map_err(|e| e.to_string())?
                .settings(None);
            let transportd = transport::transportd::Daemon::bind(settings)
                .await
                .map_err(|e| e.to_string())?;
            let socket = transportd.socket().to_path_buf();
            let transportd = tokio::spawn(transportd.run(std::future::pending()));
            // A clusterd that never answers: each of failoverd's membership
            // polls (every 250 ms) waits its whole time-out (1 s) holding a
            // handle of failoverd's client.
            let (clusterd, mut clusterd_in) = Client::connect_unix(&socket, "clusterd")
                .await
                .map_err(|e| format!("fake clusterd: {e}"))?;
            let silent = tokio::spawn(async move {
                let mut polls = 0u32;
                while clusterd_in.recv().await.is_some() {
                    polls += 1;
                }
                polls
            });
            let mut result = Ok(());
            for round in 1..=3 {
                let (stop, stop_rx) = watch::channel(false);
                let mut rx = stop_rx.clone();
                let dir = dir.clone();
                let task = tokio::spawn(async move {
                    failoverd::entry::run_in_process(&dir, transport::tdaemon::Env::bare(), async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await
                });
                // Polls in flight, as at any time in a running failoverd.
                tokio::time::sleep(Duration::from_millis(700)).await;
                if task.is_finished() {
                    result = Err(format!("round {round}: failoverd ended early: {:?}", task.await));
                    break;
                }
                stop.send_replace(true);
                match tokio::time::timeout(Duration::from_secs(10), task).await {
                    Ok(Ok(Ok(()))) => {}
                    other => {
                        result = Err(format!("round {round}: failoverd did not stop cleanly: {other:?}"));
                        break;
                    }
                }
                tokio::time::sleep(RESTART_DELAY).await;
                // What the restarted task does first: register.
                match Client::connect_unix(&socket, "failoverd").await {
                    Ok((client, _incoming)) => client.close(),
                    Err(ClientError::Register { error, .. }) => {
                        result = Err(format!(
                            "round {round}: the restarted failoverd is refused {RESTART_DELAY:?} after the old one ended: {error}"
                        ));
                        break;
                    }
                    // (transportd may close a refused connection before
                    // its answer is read.)
                    Err(e) => {
                        result = Err(format!(
                            "round {round}: the restarted failoverd cannot register {RESTART_DELAY:?} after the old one ended: {e}"
                        ));
                        break;
                    }
                }
            }
            clusterd.close();
            let polls = tokio::time::timeout(Duration::from_secs(5), silent)
                .await
                .map_err(|_| "the fake clusterd did not end".to_owned())?
                .map_err(|e| e.to_string())?;
            transportd.abort();
            result?;
            Ok::<_, String>(polls)
        })
        .unwrap();
    match outcome {
        // The test only means something if the polls were in flight.
        Ok(polls) => assert!(polls >= 3, "failoverd polled clusterd {polls} times"),
        Err(e) => panic!("{e}"),
    }
}
