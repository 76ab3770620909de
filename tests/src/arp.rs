//! An ARP prober for a client namespace: who answers for an address, and
//! when. It broadcasts an ARP request for every target each `every` and
//! records every reply with the round it answers, so that two hosts
//! answering for one address in one round — both configured and both not
//! blocked: a duplicate a client can reach — is seen directly, from the
//! wire, whatever the nodes' own state says.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pnet::datalink::{self, Channel, Config};

use crate::netns::NetNs;

/// One reply: to which probe round, for which address, from which MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The probe round (0, 1, ...) the reply arrived in.
    pub round: u64,
    /// Time since the prober started.
    pub at: Duration,
    /// The address asked for.
    pub target: Ipv4Addr,
    /// Who answered.
    pub mac: [u8; 6],
}

/// A running prober; [`ArpProber::finish`] stops it and returns the replies.
pub struct ArpProber {
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Reply>>>,
    thread: Option<JoinHandle<Result<()>>>,
    started: Instant,
}

/// 42-byte Ethernet + ARP request from `mac`/`ip` for `target`.
#[must_use]
pub fn request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]); // broadcast
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]); // Ethernet, IPv4, 6, 4
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target hardware address: zero
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The sender of an ARP reply frame: (its IPv4 address, its MAC); `None`
/// for anything else (bounds-checked).
#[must_use]
pub fn parse_reply(frame: &[u8]) -> Option<(Ipv4Addr, [u8; 6])> {
    let f = frame.get(..42)?;
    if f[12..14] != [0x08, 0x06] || f[14..20] != [0, 1, 8, 0, 6, 4] || f[20..22] != [0, 2] {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[22..28]);
    let ip = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
    Some((ip, mac))
}

impl ArpProber {
    /// Starts probing `targets` from interface `iface` (address `ip`) of
    /// namespace `ns`, one round every `every`, for at most `limit`.
    ///
    /// # Errors
    ///
    /// When the namespace, interface or packet socket cannot be opened.
    pub fn start(
        ns: &NetNs,
        iface: &str,
        ip: Ipv4Addr,
        targets: Vec<Ipv4Addr>,
        every: Duration,
        limit: Duration,
    ) -> Result<ArpProber> {
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let path = format!("/run/netns/{}", ns.name());
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let iface = iface.to_owned();
        let (s, r) = (Arc::clone(&stop), Arc::clone(&replies));
        let thread = std::thread::spawn(move || -> Result<()> {
            let setup = || -> Result<_> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns into the client namespace")?;
                let nic = datalink::interfaces()
                    .into_iter()
                    .find(|i| i.name == iface)
                    .with_context(|| format!("no interface {iface}"))?;
                let mac = nic.mac.context("interface without a MAC")?.octets();
                let config = Config {
                    read_timeout: Some(Duration::from_millis(1)),
                    ..Config::default()
                };
                match datalink::channel(&nic, config).context("packet socket")? {
                    Channel::Ethernet(tx, rx) => Ok((mac, tx, rx)),
                    _ => bail!("not an Ethernet channel"),
                }
            };
            let (mac, mut tx, mut rx) = match setup() {
                Ok(x) => {
                    let _ = ready_tx.send(Ok(()));
                    x
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            let frames: Vec<[u8; 42]> = targets.iter().map(|t| request(mac, ip, *t)).collect();
            let wanted: BTreeSet<Ipv4Addr> = targets.iter().copied().collect();
            let mut round = 0u64;
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) && started.elapsed() < limit {
                if Instant::now() >= next {
                    round += 1;
                    for f in &frames {
                        let _ = tx.send_to(f, None);
                    }
                    next += every;
                }
                // Read replies until the next round is due.
                while Instant::now() < next {
                    match rx.next() {
                        Ok(frame) => {
                            if let Some((from, mac)) = parse_reply(frame) {
                                if wanted.contains(&from) {
                                    r.lock().expect("replies").push(Reply {
                                        round,
                                        at: started.elapsed(),
                                        target: from,
                                        mac,
                                    });
                                }
                            }
                        }
                        Err(_) => break, // read timeout
                    }
                }
            }
            Ok(())
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the ARP prober did not start"),
        }
        Ok(ArpProber {
            stop,
            replies,
            thread: Some(thread),
            started,
        })
    }

    /// Time since the prober started (the clock of [`Reply::at`]).
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops probing and returns every reply.
    ///
    /// # Errors
    ///
    /// When the probing thread failed.
    pub fn finish(mut self) -> Result<Vec<Reply>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r?,
                Err(_) => bail!("the ARP prober panicked"),
            }
        }
        let replies = std::mem::take(&mut *self.replies.lock().expect("replies"));
        Ok(replies)
    }
}

impl Drop for ArpProber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Rounds in which two different MACs answered for one address:
/// (address, round, the MACs).
#[must_use]
pub fn duplicates(replies: &[Reply]) -> Vec<(Ipv4Addr, u64, Vec<[u8; 6]>)> {
    let mut by: BTreeMap<(Ipv4Addr, u64), BTreeSet<[u8; 6]>> = BTreeMap::new();
    for r in replies {
        by.entry((r.target, r.round)).or_default().insert(r.mac);
    }
    by.into_iter()
        .filter(|(_, macs)| macs.len() > 1)
        .map(|((a, round), macs)| (a, round, macs.into_iter().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_parses_as_no_reply_and_a_reply_parses() {
        let mac = [2, 0, 0, 0, 0, 1];
        let ip = Ipv4Addr::new(192, 0, 2, 100);
        let target = Ipv4Addr::new(192, 0, 2, 201);
        let mut f = request(mac, ip, target);
        assert_eq!(parse_reply(&f), None);
        f[21] = 2; // make it a reply from `ip`
        assert_eq!(parse_reply(&f), Some((ip, mac)));
        assert_eq!(parse_reply(&f[..41]), None);
    }

    #[test]
    fn two_macs_in_one_round_are_a_duplicate() {
        let a = Ipv4Addr::new(192, 0, 2, 201);
        let r = |round, m: u8| Reply {
            round,
            at: Duration::ZERO,
            target: a,
            mac: [m; 6],
        };
        // A move between rounds is fine; two answers in one round are not.
        assert!(duplicates(&[r(1, 1), r(2, 2), r(3, 2)]).is_empty());
        assert_eq!(
            duplicates(&[r(1, 1), r(2, 1), r(2, 2)]),
            vec![(a, 2, vec![[1; 6], [2; 6]])]
        );
    }
}
