//! What every benchmark prints its figures with: percentiles of measured durations and the
//! verdict against a limit.

use std::time::Duration;

/// The `p` percentile (0.0 to 1.0) of sorted durations, in milliseconds (0 when empty).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// `PASS` when a figure met its limit, else `FAIL`.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}
