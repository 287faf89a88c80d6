//! What every benchmark prints its figures with: percentiles of measured durations, the CPU
//! a process spent, and the verdict against a limit.

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

/// Clock ticks a second in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The parent and the CPU ticks (user + system) of process `pid`, from `/proc/<pid>/stat`;
/// `None` once it is gone.
pub fn parent_and_cpu_ticks(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state, ppid, ... utime is the 12th field, stime the 13th.
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |index: usize| fields.get(index)?.parse::<u64>().ok();
    Some((u32::try_from(number(1)?).ok()?, number(11)? + number(12)?))
}

/// The CPU time (user + system) process `pid` has spent, in seconds (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    parent_and_cpu_ticks(pid).map_or(0.0, |(_, ticks)| ticks as f64 / TICKS_PER_SECOND)
}
