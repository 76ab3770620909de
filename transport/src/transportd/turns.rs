//! Fair turns on transportd's one thread.
//!
//! transportd runs on a current-thread runtime: while one reader routes a
//! burst, nothing else of transportd runs — not the other links' readers,
//! not the local clients' readers. Tokio's cooperative budget does not
//! help here: it counts socket reads (128 per turn), and one read of a
//! flooded connection can hold 64 KiB of frames, so a reader could route
//! millions of frames before anyone else ran. A peer flooding requests
//! that are refused (an error frame per request) kept node 0's transportd
//! busy for half a second in the floods test: heartbeats of the other
//! peer and the local lease news to failoverd waited behind it, and the
//! node lost its lease. Every reader therefore counts what it routes and
//! lets the others run after [`FAIR_SHARE`] units of work.

/// Units of work (a frame, or 4 KiB of its bytes) a reader does before it
/// yields: about a millisecond of routing in a release build, so a
/// heartbeat waits at most a few shares behind a flood on another
/// connection, and a reader that is alone pays one yield per thousand
/// frames.
pub const FAIR_SHARE: u64 = 1024;

/// Bytes that count as one unit of work.
const BYTES_PER_UNIT: u64 = 4096;

/// One reader's count since it last let the others run.
#[derive(Debug, Default)]
pub struct Turn {
    spent: u64,
}

impl Turn {
    /// Counts `frames` frames of `bytes` bytes routed; after
    /// [`FAIR_SHARE`] units since the last turn, lets every other ready
    /// task of the thread run first (`yield_now` puts this task behind
    /// them and polls the sockets before it resumes).
    pub async fn routed(&mut self, frames: usize, bytes: usize) {
        self.spent = self.spent.saturating_add(units(frames, bytes));
        if self.spent >= FAIR_SHARE {
            self.spent = 0;
            tokio::task::yield_now().await;
        }
    }
}

fn units(frames: usize, bytes: usize) -> u64 {
    let frames = u64::try_from(frames).unwrap_or(u64::MAX);
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    frames.saturating_add(bytes / BYTES_PER_UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A reader that routes without end lets another task of the same
    /// thread run once per share: without the turn, the other task would
    /// never run until the reader stops.
    #[test]
    fn a_busy_reader_lets_another_task_run_every_share() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let ran = Rc::new(Cell::new(0u32));
        let counted = Rc::clone(&ran);
        let seen = local.block_on(&rt, async move {
            let other = tokio::task::spawn_local(async move {
                loop {
                    counted.set(counted.get() + 1);
                    tokio::task::yield_now().await;
                }
            });
            // Let the other task start.
            tokio::task::yield_now().await;
            let start = ran.get();
            let mut turn = Turn::default();
            let mut seen_during = Vec::new();
            // Ten shares of one-frame batches, nothing else awaited.
            for _ in 0..10 * FAIR_SHARE {
                turn.routed(1, 64).await;
                seen_during.push(ran.get());
            }
            other.abort();
            (start, seen_during)
        });
        let (start, during) = seen;
        let last = *during.last().unwrap();
        assert!(
            last - start >= 9,
            "the other task ran {} times while the reader routed ten shares",
            last - start
        );
        // And not after every frame: within a share it did not run.
        assert_eq!(
            during[0], start,
            "the reader yielded before its share was spent"
        );
    }

    #[test]
    fn large_frames_count_by_their_bytes() {
        assert_eq!(units(1, 64), 1);
        assert_eq!(units(1, 64 * 1024), 17);
        assert_eq!(units(usize::MAX, usize::MAX), u64::MAX);
    }
}
