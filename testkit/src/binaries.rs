//! Our two binaries started the way production starts them, for tests and benches that
//! must not link them (the workers' tests drive the real `gateway`): configured through
//! environment variables (see the README's configuration table), listening on a free port,
//! ready once `/healthz` answers, stopped on drop.
//!
//! - `gateway`: `GATEWAY_ADDR` on a free port.
//! - `workers <command>` (relay, consume, index...): `--admin-addr` on a free port.

use crate::process::{Launch, Process};

/// How the gateway would be started over `database_url`, listening on a free port
/// (`GATEWAY_ADDR`): add variables or a `ready_path()`, then `start()`.
pub fn gateway_launch(database_url: &str) -> Launch {
    Launch::binary("gateway")
        .env("DATABASE_URL", database_url)
        .listen_env("GATEWAY_ADDR")
}

/// Starts the gateway over `database_url` with `env` (e.g. `[("ORDERS_EXCHANGE", name)]`)
/// and waits until it answers `/healthz`; `.base()` is its URL.
pub async fn spawn_gateway(database_url: &str, env: &[(&str, &str)]) -> Process {
    gateway_launch(database_url).envs(env).start().await
}

/// How `workers <args>` would be started over `database_url`, its admin server
/// (`/metrics`, `/healthz`) on a free port (`--admin-addr`, appended after `args`).
pub fn workers_launch(database_url: &str, args: &[&str]) -> Launch {
    Launch::binary("workers")
        .args(args.iter().copied())
        .env("DATABASE_URL", database_url)
        .listen_arg("--admin-addr")
}

/// Starts `workers <args>` (e.g. `["relay", "--exchange", name]`) over `database_url` and
/// waits until its admin server answers `/healthz`. `crash_and_restart()` SIGKILLs and
/// starts it again.
pub async fn spawn_workers(database_url: &str, args: &[&str]) -> Process {
    workers_launch(database_url, args).start().await
}
