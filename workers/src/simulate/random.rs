//! The simulators' randomness: one seeded generator per sequence, so the same seed gives
//! the same data and the same changes, and injected request failures.

use std::time::Duration;

/// How long a "stalled" request hangs before it answers.
pub const STALL: Duration = Duration::from_secs(30);

/// SplitMix64: small, fast, and the same sequence for the same seed on every platform.
#[derive(Debug, Clone)]
pub struct Random(pub u64);

impl Random {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in [0, bound).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// One of `names`.
    pub fn pick<'a>(&mut self, names: &[&'a str]) -> &'a str {
        names[self.below(names.len() as u64) as usize]
    }

    /// A number in [0, 1).
    pub fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What an injected request failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer 500.
    ServerError,
    /// Hang for [`STALL`] first.
    Stall,
    /// Cut the body in half (truncated JSON).
    Truncate,
}

/// Injected request failures at a rate: the generator of their own never shifts a
/// simulator's data sequence.
#[derive(Debug)]
pub struct Failures {
    rate: f64,
    kinds: &'static [Failure],
    random: std::sync::Mutex<Random>,
}

impl Failures {
    /// Fails a `rate` fraction of requests, each way in `kinds` equally often.
    pub fn new(rate: f64, kinds: &'static [Failure], seed: u64) -> Self {
        Self {
            rate,
            kinds,
            random: std::sync::Mutex::new(Random(seed ^ 0xE770_2E77)),
        }
    }

    /// The failure of the next request, if it is to fail.
    pub fn next(&self) -> Option<Failure> {
        if self.rate <= 0.0 || self.kinds.is_empty() {
            return None;
        }
        let mut random = self
            .random
            .lock()
            .expect("never poisoned: no panics while held");
        (random.fraction() < self.rate)
            .then(|| self.kinds[random.below(self.kinds.len() as u64) as usize])
    }
}
