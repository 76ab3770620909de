//! A small seeded fuzzing harness that runs as an ordinary test (stable
//! Rust, no cargo-fuzz): random bytes and structure-aware mutations of valid
//! encodings through one decoder, checking for panics, hangs and
//! allocations beyond a stated bound. Shared by the fuzz tests of several
//! crates (`#[path]`-included), so it depends on std and `alloccount` only.
//!
//! * `FUZZ_CASES=<n>`: inputs per target (default: the target's short-run
//!   count, a fixed number so that CI is deterministic).
//! * `FUZZ_SEED=<n>`: the generator's seed (default fixed). A failure names
//!   the target, the case number and the seed, and prints the input.
//!
//! Every decoded input (the decoder says "valid") joins the target's corpus
//! (up to [`MAX_CORPUS`] entries), so mutations of valid encodings keep
//! reaching past the first checks even for deeply nested formats.

#![allow(dead_code)] // not every including test uses every helper

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most corpus entries a target keeps.
pub const MAX_CORPUS: usize = 512;
/// Longest generated input.
pub const MAX_INPUT: usize = 64 * 1024;
/// One input taking longer than this aborts the run as a hang.
pub const HANG_LIMIT: Duration = Duration::from_secs(5);

/// The workspace's counting allocator (per-thread peaks, so tests running
/// in parallel in one binary do not disturb each other); install it in a
/// test binary with `#[global_allocator]`.
pub use alloccount::{peak_of, Counting};

/// xorshift64*: tiny, seeded, good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        usize::try_from(self.next() % n).unwrap_or(0)
    }

    pub fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// What a decoder made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded (and, where the format allows, round-tripped): joins the corpus.
    Valid,
    /// Refused with an error.
    Invalid,
}

/// A format-aware mutation.
pub type Mutator<'a> = &'a dyn Fn(&mut Rng, &mut Vec<u8>);

/// One fuzz target.
pub struct Target<'a> {
    /// Named in failures and in the summary.
    pub name: &'static str,
    /// Valid encodings to mutate (at least one).
    pub seeds: Vec<Vec<u8>>,
    /// Inputs per run unless `FUZZ_CASES` says otherwise.
    pub default_cases: u64,
    /// The most bytes decoding an input of `len` bytes may hold at once.
    pub alloc_bound: fn(usize) -> usize,
    /// Extra, format-aware mutation (forged lengths, opcodes, counts);
    /// called for about a quarter of the mutated inputs.
    pub mutate: Option<Mutator<'a>>,
    /// Decodes one input and checks what the format promises (round
    /// trips); panics on a broken promise.
    pub decode: &'a mut dyn FnMut(&[u8]) -> Outcome,
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    pub name: &'static str,
    pub cases: u64,
    pub valid: u64,
    pub invalid: u64,
    pub worst_peak: usize,
    pub worst_peak_len: usize,
    pub slowest: Duration,
    pub elapsed: Duration,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    v.trim().replace('_', "").parse().ok()
}

/// Integers that break length checks: zero, one, around powers of two,
/// the input's own length and its neighbours, the maxima.
fn interesting(rng: &mut Rng, len: usize) -> u64 {
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => len.wrapping_sub(1),
        3 => len,
        4 => len + 1,
        5 => u64::from(u16::MAX),
        6 => u64::from(u32::MAX),
        7 => u64::MAX,
        8 => 1 << rng.below(63),
        9 => (1 << rng.below(63)) - 1,
        10 => u64::from(rng.byte()),
        _ => rng.next(),
    }
}

/// A postcard/LEB128 varint of `v`.
pub fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = v.to_le_bytes()[0] & 0x7F;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// One generic mutation of `buf` (`other` is a second corpus entry, for
/// splicing).
pub fn mutate_once(rng: &mut Rng, buf: &mut Vec<u8>, other: &[u8]) {
    let len = buf.len();
    match rng.below(11) {
        0 if len > 0 => {
            let i = rng.below(len);
            buf[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            buf[i] = [0, 1, 0x7F, 0x80, 0xFF, rng.byte()][rng.below(6)];
        }
        2 => buf.truncate(rng.below(len + 1)),
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            buf.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(32));
            buf.drain(at..at + n);
        }
        5 if len > 0 => {
            // Duplicate a chunk (repeated elements, nested attributes).
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let chunk = buf[at..at + n].to_vec();
            let to = rng.below(len + 1);
            buf.splice(to..to, chunk);
        }
        6 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let keep = rng.below(len + 1);
            let from = rng.below(other.len());
            buf.truncate(keep);
            buf.extend_from_slice(&other[from..]);
        }
        7 if len > 0 => {
            // An interesting integer as u16/u32/u64, either byte order.
            let v = interesting(rng, len);
            let width = [2usize, 4, 8][rng.below(3)];
            let at = rng.below(len);
            let bytes = if rng.chance(2) {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let bytes = if bytes[0] == 0 && width < 8 && rng.chance(2) {
                // to_be_bytes puts the low bytes last.
                &bytes[8 - width..]
            } else {
                &bytes[..width]
            };
            for (i, b) in bytes.iter().enumerate() {
                if let Some(slot) = buf.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        8 if len > 0 => {
            // A varint count or length (postcard): huge, zero or off by one.
            let at = rng.below(len);
            let v = varint(interesting(rng, len));
            let old = (1 + rng.below(2)).min(len - at);
            buf.splice(at..at + old, v);
        }
        9 if len > 1 => {
            // Swap two bytes.
            let (a, b) = (rng.below(len), rng.below(len));
            buf.swap(a, b);
        }
        _ => {
            let n = rng.below(8);
            buf.extend((0..n).map(|_| rng.byte()));
        }
    }
    buf.truncate(MAX_INPUT);
}

/// Builds the next input: random bytes (1 in 8), else a corpus entry with
/// one to four mutations.
fn next_input(rng: &mut Rng, corpus: &[Vec<u8>], t: &Target<'_>, buf: &mut Vec<u8>) {
    buf.clear();
    if rng.chance(8) {
        let max = if rng.chance(4) { 4096 } else { 64 };
        let n = rng.below(max);
        buf.extend((0..n).map(|_| rng.byte()));
        return;
    }
    buf.extend_from_slice(&corpus[rng.below(corpus.len())]);
    let other = &corpus[rng.below(corpus.len())];
    for _ in 0..=rng.below(4) {
        match t.mutate {
            Some(m) if rng.chance(4) => m(rng, buf),
            _ => mutate_once(rng, buf, other),
        }
    }
    buf.truncate(MAX_INPUT);
}

/// Runs one target: every seed, then the configured number of generated
/// inputs. Panics (naming the case and seed) on a decoder panic, a broken
/// round trip, an allocation over the bound or a hang.
pub fn run(mut t: Target<'_>) -> Report {
    assert!(!t.seeds.is_empty(), "{}: no seeds", t.name);
    let cases = env_u64("FUZZ_CASES").unwrap_or(t.default_cases);
    let seed = env_u64("FUZZ_SEED").unwrap_or(0x1FF0_2026);
    let mut rng = Rng::new(seed ^ u64::try_from(t.name.len()).unwrap_or(0));

    // A watchdog: if the case counter stops moving, print where and abort
    // (a hang never returns to be caught otherwise).
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (progress, done, name) = (progress.clone(), done.clone(), t.name);
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            let mut since = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let now = progress.load(Ordering::Relaxed);
                if now != last {
                    last = now;
                    since = Instant::now();
                } else if since.elapsed() > HANG_LIMIT {
                    eprintln!(
                        "fuzz {name}: case {now} (FUZZ_SEED={seed}) ran over {HANG_LIMIT:?}: hang"
                    );
                    std::process::abort();
                }
            }
        })
    };

    let mut corpus = t.seeds.clone();
    let mut report = Report {
        name: t.name,
        cases: 0,
        valid: 0,
        invalid: 0,
        worst_peak: 0,
        worst_peak_len: 0,
        slowest: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    let started = Instant::now();
    let mut input = Vec::with_capacity(MAX_INPUT);
    let seeds = t.seeds.clone();
    let total = cases + u64::try_from(seeds.len()).unwrap_or(0);
    for case in 0..total {
        progress.store(case, Ordering::Relaxed);
        if let Some(s) = usize::try_from(case).ok().and_then(|i| seeds.get(i)) {
            input.clear();
            input.extend_from_slice(s);
        } else {
            next_input(&mut rng, &corpus, &t, &mut input);
        }
        let one = Instant::now();
        let decode = &mut t.decode;
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| peak_of(|| decode(&input))));
        let took = one.elapsed();
        let (outcome, peak) = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "fuzz {}: case {case} (FUZZ_SEED={seed}) panicked on {} bytes: {:02x?}",
                    t.name,
                    input.len(),
                    input
                );
                std::panic::resume_unwind(e);
            }
        };
        let bound = (t.alloc_bound)(input.len());
        assert!(
            peak <= bound,
            "fuzz {}: case {case} (FUZZ_SEED={seed}): decoding {} bytes held {peak} bytes \
             at once, over the bound of {bound}: {:02x?}",
            t.name,
            input.len(),
            input
        );
        if peak > report.worst_peak {
            report.worst_peak = peak;
            report.worst_peak_len = input.len();
        }
        report.slowest = report.slowest.max(took);
        match outcome {
            Outcome::Valid => {
                report.valid += 1;
                if corpus.len() < MAX_CORPUS {
                    corpus.push(input.clone());
                } else if rng.chance(16) {
                    let i = rng.below(corpus.len());
                    corpus[i] = input.clone();
                }
            }
            Outcome::Invalid => report.invalid += 1,
        }
        report.cases += 1;
    }
    report.elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    eprintln!(
        "fuzz {}: {} inputs in {:.2?} ({:.0}/s), {} valid, {} invalid; worst peak {} bytes \
         (input of {} bytes); slowest input {:.2?}",
        report.name,
        report.cases,
        report.elapsed,
        report.per_second(),
        report.valid,
        report.invalid,
        report.worst_peak,
        report.worst_peak_len,
        report.slowest
    );
    // A generator that never reaches valid inputs, or never invalid ones,
    // proves little.
    assert!(report.valid > 0, "{}: no valid input", t.name);
    assert!(report.invalid > 0, "{}: no invalid input", t.name);
    report
}
