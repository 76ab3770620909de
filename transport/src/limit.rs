//! Bounds on what a peer or a local client can make a daemon hold (#14
//! item 2), written once for every daemon.
//!
//! * [`InFlight`]: requests being served at the same time, in total and per
//!   client (the source [`Address`] transportd stamped on the frame). A
//!   request over either limit is refused at once — never queued, never
//!   waited for: a daemon that waited would stop reading, and transportd
//!   disconnects a daemon that does not read.
//! * [`Refusals`]: counts refusals for the STATISTICS control and logs
//!   them without flooding the log: the first [`LOG_FIRST`] one by one,
//!   then one line per [`LOG_EVERY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::proto::Address;

/// How many refusals of one kind are logged one by one.
pub const LOG_FIRST: u64 = 8;
/// After [`LOG_FIRST`], one refusal in this many is logged.
pub const LOG_EVERY: u64 = 1000;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    bytes: usize,
    per: HashMap<Address, usize>,
}

/// A limit on requests in flight, in total and per client (see the module
/// docs). Cloning shares the counts.
#[derive(Debug, Clone)]
pub struct InFlight {
    counts: Arc<Mutex<Counts>>,
    total: usize,
    per_client: usize,
    bytes: usize,
}

/// Why [`InFlight::try_acquire`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// The daemon serves its limit of requests.
    #[error("{limit} requests are in flight, the daemon's limit")]
    Total {
        /// The limit.
        limit: usize,
    },
    /// This client has its limit of requests in flight.
    #[error("{limit} requests of this client are in flight, the limit per client")]
    Client {
        /// The limit.
        limit: usize,
    },
    /// The requests in flight hold the daemon's limit of payload bytes.
    #[error("the requests in flight hold {held} payload bytes; with {more} more the daemon's limit of {limit} would be passed")]
    Bytes {
        /// Bytes held now.
        held: usize,
        /// This request's bytes.
        more: usize,
        /// The limit.
        limit: usize,
    },
}

/// One admitted request: dropping it frees its place.
#[derive(Debug)]
#[must_use = "the request's place is freed when the permit is dropped"]
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    who: Address,
    bytes: usize,
}

fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Plain counts: a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl InFlight {
    /// At most `total` requests at once, `per_client` of one client.
    #[must_use]
    pub fn new(total: usize, per_client: usize) -> Self {
        InFlight {
            counts: Arc::new(Mutex::new(Counts::default())),
            total,
            per_client,
            bytes: usize::MAX,
        }
    }

    /// And at most `bytes` of payload held by the requests in flight (a
    /// request larger than that alone is still admitted when none is in
    /// flight, so every valid request can be served).
    #[must_use]
    pub fn with_bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    /// A place for a request of `who` with `bytes` of payload, if the
    /// limits allow.
    ///
    /// # Errors
    /// [`Busy`] naming the limit that is reached.
    pub fn try_acquire(&self, who: Address, bytes: usize) -> Result<Permit, Busy> {
        let mut c = lock(&self.counts);
        if c.total >= self.total {
            return Err(Busy::Total { limit: self.total });
        }
        if c.total > 0 && c.bytes.saturating_add(bytes) > self.bytes {
            return Err(Busy::Bytes {
                held: c.bytes,
                more: bytes,
                limit: self.bytes,
            });
        }
        let mine = c.per.entry(who).or_insert(0);
        if *mine >= self.per_client {
            return Err(Busy::Client {
                limit: self.per_client,
            });
        }
        *mine += 1;
        c.total += 1;
        c.bytes = c.bytes.saturating_add(bytes);
        Ok(Permit {
            counts: Arc::clone(&self.counts),
            who,
            bytes,
        })
    }

    /// Requests in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        c.bytes = c.bytes.saturating_sub(self.bytes);
        if let Some(n) = c.per.get_mut(&self.who) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per.remove(&self.who);
            }
        }
    }
}

/// A counter of refusals of one kind, with a log that does not flood.
#[derive(Debug, Default)]
pub struct Refusals {
    count: AtomicU64,
}

impl Refusals {
    /// A counter at zero.
    #[must_use]
    pub const fn new() -> Self {
        Refusals {
            count: AtomicU64::new(0),
        }
    }

    /// Counts one refusal; returns true when this one should be logged
    /// (the first [`LOG_FIRST`], then every [`LOG_EVERY`]th).
    pub fn note(&self) -> bool {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        should_log(n)
    }

    /// Refusals so far.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The rate limit of refusal logs: the `n`th refusal (from 1) is logged
/// when it is one of the first [`LOG_FIRST`] or a multiple of
/// [`LOG_EVERY`].
#[must_use]
pub fn should_log(n: u64) -> bool {
    n <= LOG_FIRST || n % LOG_EVERY == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_total_and_per_client_and_places_come_back() {
        let l = InFlight::new(3, 2).with_bytes(100);
        let a = Address::new(0, 100);
        let b = Address::new(1, 100);
        let a1 = l.try_acquire(a, 10).unwrap();
        let a2 = l.try_acquire(a, 10).unwrap();
        assert_eq!(l.try_acquire(a, 10).unwrap_err(), Busy::Client { limit: 2 });
        assert!(matches!(
            l.try_acquire(b, 81),
            Err(Busy::Bytes { held: 20, .. })
        ));
        let b1 = l.try_acquire(b, 80).unwrap();
        assert_eq!(l.try_acquire(b, 0).unwrap_err(), Busy::Total { limit: 3 });
        assert_eq!(l.in_flight(), 3);
        drop(a1);
        let b2 = l.try_acquire(b, 10).unwrap();
        drop((a2, b1, b2));
        assert_eq!(l.in_flight(), 0);
        let c = lock(&l.counts);
        assert!(c.per.is_empty(), "no entry per client left");
        assert_eq!(c.bytes, 0);
        drop(c);
        let big = l.try_acquire(a, 1000).unwrap();
        drop(big);
    }

    #[test]
    fn refusals_log_the_first_then_one_per_thousand() {
        let r = Refusals::new();
        let logged = (0..5000).filter(|_| r.note()).count();
        assert_eq!(logged, 8 + 5);
        assert_eq!(r.get(), 5000);
    }
}
