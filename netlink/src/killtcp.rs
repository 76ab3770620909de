//! killtcp: reset established TCP connections of this host without their
//! sockets' cooperation, as CTDB's `ctdb_killtcp` does on release.
//!
//! For each connection and direction, send a tickle ACK (seq 0, ack 0,
//! window 1234) *pretending to be one end*; the other end's kernel answers
//! with an ACK carrying its real sequence numbers; one capture socket on the
//! interface sees that answer; then send the reset that end accepts:
//! RST|ACK with `seq = answer.ack` and `ack = answer.seq`. Our own packets
//! are told apart by CTDB's test (window 1234 and RST or seq 0).
//!
//! Directions: *server side* (tickle from the client to our local socket,
//! answer goes out from us, RST kills our socket) and, unless
//! [`KillTcp::one_way`], *client side* (tickle from us to the client, its
//! answer comes in, RST kills the client's socket, so it reconnects at once).
//!
//! The decision logic is the pure [`KillState`] (no I/O, no clock);
//! [`KillTcp::execute`] drives it with bounded rounds ([`KillTcp::attempts`]
//! rounds, [`KillTcp::interval`] apart) and an overall [`KillTcp::timeout`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::packet::sender::{Capture, CaptureMode, SegmentSender, SendError};
use crate::packet::{parse_tcp, TcpInfo, TcpSegment};

/// The connection type shared with [`crate::sockdiag`]: `local` is this
/// host's end (public IP and service port), `remote` the client.
pub use crate::sockdiag::Connection;

/// Errors of killtcp.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KillError {
    /// The capture or send sockets failed.
    #[error("killtcp on {interface}: {source}")]
    Socket {
        /// The interface.
        interface: String,
        /// The cause.
        #[source]
        source: SendError,
    },
}

/// The outcome: which connections were reset, which were not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillReport {
    /// Every wanted direction of these was reset.
    pub killed: Vec<Connection>,
    /// These were not (no answer seen before the attempts ran out).
    pub remaining: Vec<Connection>,
}

/// The pure part of killtcp: pending directions and what to send next.
#[derive(Debug)]
pub struct KillState {
    conns: Vec<Connection>,
    /// Directions still waiting for an answer, keyed by the answer's
    /// (source, destination); the value is the connection index.
    pending: HashMap<(SocketAddr, SocketAddr), usize>,
    /// Directions still pending per connection.
    left: Vec<u8>,
}

impl KillState {
    /// Starts with every direction of every connection pending. Duplicates
    /// are dropped; mixed-family pairs cannot be reset and stay remaining.
    pub fn new(conns: &[Connection], both_ends: bool) -> KillState {
        let mut state = KillState {
            conns: Vec::with_capacity(conns.len()),
            pending: HashMap::with_capacity(conns.len() * 2),
            left: Vec::with_capacity(conns.len()),
        };
        let mut seen = HashSet::with_capacity(conns.len());
        for c in conns {
            if !seen.insert(*c) {
                continue;
            }
            if c.local.is_ipv4() != c.remote.is_ipv4() {
                // Cannot be reset: reported as remaining.
                state.conns.push(*c);
                state.left.push(1);
                continue;
            }
            let i = state.conns.len();
            state.conns.push(*c);
            // Server side: the answer goes from local to remote.
            state.pending.insert((c.local, c.remote), i);
            let mut n = 1;
            if both_ends {
                // Client side: the answer comes from remote to local.
                state.pending.insert((c.remote, c.local), i);
                n = 2;
            }
            state.left.push(n);
        }
        state
    }

    /// True when nothing is pending.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// The tickles to send this round: for each pending direction, from the
    /// answer's destination to its source.
    pub fn tickles(&self) -> Vec<TcpSegment> {
        self.pending
            .keys()
            .map(|(answer_src, answer_dst)| TcpSegment::tickle(*answer_dst, *answer_src))
            .collect()
    }

    /// Feeds one captured TCP packet; returns the reset to send when it is
    /// the answer of a pending direction.
    pub fn on_packet(&mut self, p: &TcpInfo) -> Option<TcpSegment> {
        if p.is_ours() {
            return None;
        }
        let i = self.pending.remove(&(p.src, p.dst))?;
        if let Some(n) = self.left.get_mut(i) {
            *n = n.saturating_sub(1);
        }
        Some(TcpSegment::reset(p.dst, p.src, p.ack, p.seq))
    }

    /// Splits the connections into killed and remaining.
    pub fn report(&self) -> KillReport {
        let mut r = KillReport::default();
        for (c, n) in self.conns.iter().zip(&self.left) {
            if *n == 0 {
                r.killed.push(*c);
            } else {
                r.remaining.push(*c);
            }
        }
        r
    }
}

/// A killtcp request on one interface; run it with [`KillTcp::execute`].
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until executed"]
pub struct KillTcp {
    interface: String,
    attempts: u32,
    interval: Duration,
    timeout: Duration,
    both_ends: bool,
}

impl KillTcp {
    /// Defaults: 50 rounds 50 ms apart, 5 s overall, both ends.
    pub fn new(interface: &str) -> KillTcp {
        KillTcp {
            interface: interface.into(),
            attempts: 50,
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            both_ends: true,
        }
    }

    /// Rounds of tickles at most (at least 1).
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// Time between rounds.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Overall time limit.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Reset only our own (server) side, as CTDB does for SMB ports.
    pub fn one_way(mut self, yes: bool) -> Self {
        self.both_ends = !yes;
        self
    }

    /// Resets the connections; returns which were killed.
    ///
    /// # Errors
    ///
    /// [`KillError::Socket`] when the capture or raw sockets cannot be
    /// opened (missing interface, no permission) or fail.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn execute(&self, conns: &[Connection]) -> Result<KillReport, KillError> {
        let err = |source| KillError::Socket {
            interface: self.interface.clone(),
            source,
        };
        let mut state = KillState::new(conns, self.both_ends);
        if state.is_done() {
            return Ok(state.report());
        }
        let capture = Capture::open(&self.interface, CaptureMode::Packets).map_err(err)?;
        capture.tcp_only().map_err(err)?;
        let sender = SegmentSender::open().map_err(err)?;
        let end = Instant::now() + self.timeout;
        let mut buf = vec![0u8; 2048];
        let mut resets = Vec::new();
        for _ in 0..self.attempts {
            if state.is_done() || Instant::now() >= end {
                break;
            }
            sender.send(&state.tickles()).await.map_err(err)?;
            let round_end = (Instant::now() + self.interval).min(end);
            // Bounded: each iteration either consumes a packet or hits the
            // round's deadline.
            while !state.is_done() {
                let got = tokio::time::timeout_at(round_end, capture.recv(&mut buf)).await;
                let Ok(got) = got else { break };
                let mut next = Some(got.map_err(err)?);
                // Drain what is already queued without waiting (bounded),
                // then send the resets it produced in one batch.
                for _ in 0..4096 {
                    let Some(c) = next else { break };
                    if let Some(rst) = buf
                        .get(..c.len)
                        .and_then(parse_tcp)
                        .and_then(|p| state.on_packet(&p))
                    {
                        resets.push(rst);
                    }
                    next = capture.try_recv(&mut buf).map_err(err)?;
                }
                if !resets.is_empty() {
                    sender.send(&resets).await.map_err(err)?;
                    resets.clear();
                }
            }
            if !resets.is_empty() {
                sender.send(&resets).await.map_err(err)?;
                resets.clear();
            }
        }
        let report = state.report();
        tracing::debug!(
            interface = %self.interface,
            killed = report.killed.len(),
            remaining = report.remaining.len(),
            "killtcp done"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::TCP_ACK;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn conn() -> Connection {
        Connection {
            local: sa("192.0.2.10:445"),
            remote: sa("198.51.100.7:50000"),
        }
    }

    fn answer(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32) -> TcpInfo {
        TcpInfo {
            src,
            dst,
            seq,
            ack,
            flags: TCP_ACK,
            window: 502,
        }
    }

    #[test]
    fn both_directions_are_tickled_and_reset_with_the_answers_numbers() {
        let c = conn();
        let mut st = KillState::new(&[c, c], true);
        let mut t = st.tickles();
        t.sort_by_key(|s| s.src);
        assert_eq!(t.len(), 2, "duplicates dropped, two directions");
        assert!(t.contains(&TcpSegment::tickle(c.remote, c.local)));
        assert!(t.contains(&TcpSegment::tickle(c.local, c.remote)));

        // Our own tickle seen on the wire is ignored.
        let ours = TcpInfo {
            window: crate::packet::TICKLE_WINDOW,
            seq: 0,
            ..answer(c.local, c.remote, 0, 0)
        };
        assert_eq!(st.on_packet(&ours), None);

        // The server's answer: reset our socket as the client would.
        let rst = st
            .on_packet(&answer(c.local, c.remote, 1000, 2000))
            .unwrap();
        assert_eq!(rst, TcpSegment::reset(c.remote, c.local, 2000, 1000));
        assert_eq!(st.report().remaining, vec![c]);
        // A second answer for the same direction does nothing.
        assert_eq!(st.on_packet(&answer(c.local, c.remote, 1, 2)), None);

        // The client's answer: reset the client as the server would.
        let rst = st.on_packet(&answer(c.remote, c.local, 7, 9)).unwrap();
        assert_eq!(rst, TcpSegment::reset(c.local, c.remote, 9, 7));
        assert!(st.is_done());
        assert_eq!(
            st.report(),
            KillReport {
                killed: vec![c],
                remaining: vec![]
            }
        );
    }

    #[test]
    fn one_way_needs_only_the_server_answer_and_unrelated_packets_are_ignored() {
        let c = conn();
        let mut st = KillState::new(&[c], false);
        assert_eq!(st.tickles(), vec![TcpSegment::tickle(c.remote, c.local)]);
        assert_eq!(st.on_packet(&answer(c.remote, c.local, 1, 1)), None);
        let other = answer(sa("192.0.2.10:445"), sa("198.51.100.8:1"), 1, 1);
        assert_eq!(st.on_packet(&other), None);
        assert!(st.on_packet(&answer(c.local, c.remote, 5, 6)).is_some());
        assert!(st.is_done());
        assert_eq!(st.report().killed, vec![c]);
    }

    #[test]
    fn mixed_families_are_reported_remaining() {
        let bad = Connection {
            local: sa("192.0.2.10:445"),
            remote: sa("[2001:db8::1]:5"),
        };
        let st = KillState::new(&[bad], true);
        assert!(st.is_done());
        assert_eq!(st.report().remaining, vec![bad]);
    }
}
