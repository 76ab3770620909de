//! Restart backoff for supervised daemons (pure: takes `now`, no clock).
//!
//! A daemon that crashes is restarted after `initial`, doubling up to `max`
//! for each crash that follows quickly; once it has run for `stable` without
//! crashing, the next crash is restarted after `initial` again. This keeps a
//! daemon that crashes at start from spinning, while a daemon that crashes once
//! a day comes back at once.

use std::time::{Duration, Instant};

/// The restart policy and its state for one daemon.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    stable: Duration,
    next: Duration,
    started: Option<Instant>,
}

impl Backoff {
    /// A policy: first delay `initial`, doubling up to `max`, reset after
    /// `stable` of uninterrupted running.
    pub fn new(initial: Duration, max: Duration, stable: Duration) -> Self {
        Backoff {
            initial,
            max,
            stable,
            next: initial,
            started: None,
        }
    }

    /// Records that the daemon was (re)started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// Records that the daemon exited at `now` and returns how long to wait
    /// before starting it again.
    pub fn exited(&mut self, now: Instant) -> Duration {
        let ran = self
            .started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        if ran >= self.stable {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        self.started = None;
        delay
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s, reset after 30 s of running.
    fn default() -> Self {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_crashes_double_up_to_max() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(500),
            Duration::from_secs(10),
        );
        let t = Instant::now();
        let mut delays = Vec::new();
        for i in 0..5 {
            b.started(t + Duration::from_secs(i));
            delays.push(b.exited(t + Duration::from_secs(i) + Duration::from_millis(10)));
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn a_stable_run_resets_the_delay() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Duration::from_secs(10),
        );
        let t = Instant::now();
        b.started(t);
        assert_eq!(b.exited(t), Duration::from_millis(100));
        b.started(t);
        assert_eq!(b.exited(t), Duration::from_millis(200));
        b.started(t);
        assert_eq!(
            b.exited(t + Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }
}
