//! The one backoff every retry loop uses: exponential, capped, with jitter so that many
//! clients recovering together do not retry in lockstep.

use std::time::Duration;

/// The wait before retry number `attempt` (1-based): `initial` doubled per attempt, capped
/// at `max`, then scaled by a random factor in [0.5, 1.5).
pub fn delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let doubled = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    doubled.min(max).mul_f64(0.5 + jitter_fraction())
}

/// The wait before reconnect attempt `failures` (1-based) to a database or broker that
/// went away: 250 ms doubling to 30 s, jittered.
pub fn reconnect(failures: u32) -> Duration {
    delay(
        failures,
        Duration::from_millis(250),
        Duration::from_secs(30),
    )
}

/// The failure count after a connection that lasted `ran_for` was lost: one that held for
/// more than 30 s starts the count over, so an occasional drop waits briefly, while a
/// connection that keeps failing at once backs off further each time.
pub fn failures_after(previous: u32, ran_for: Duration) -> u32 {
    if ran_for > Duration::from_secs(30) {
        1
    } else {
        previous.saturating_add(1)
    }
}

/// A number in [0, 1) that differs between calls and processes; not cryptographic.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_stay_capped_and_jitter() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 1..40 {
            let nominal = (100u64 << (attempt - 1).min(20)).min(1_000);
            let wait = delay(attempt, initial, max).as_millis() as u64;
            assert!(
                wait >= nominal / 2 && wait < nominal * 3 / 2 + 1,
                "{attempt}: {wait}"
            );
        }
        let samples: std::collections::HashSet<_> =
            (0..20).map(|_| delay(3, initial, max)).collect();
        assert!(samples.len() > 1, "no jitter");
    }
}
