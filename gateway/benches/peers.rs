//! `make bench`: the gateway beside PostGraphile 4, the peer a team would pick instead,
//! on the same database and data, loaded the same way (wrk, 64 connections, 2 threads,
//! 10 s per query after a 3 s warm-up), one server at a time.
//!
//! Three queries: one customer by id, a page of 20 customers, 20 orders with their
//! customer (PostGraphile reaches it through a computed column, one SQL statement). For
//! each: requests per second and the CPU the server's processes spent per request
//! (`/proc`, user + system, the whole process tree), ours, theirs and the ratios, checked
//! against the goals: our CPU per request at most 1/3 of theirs (1/2 for the nested
//! orders), and our throughput ahead. `pgbench -S` on the same machine prints the
//! database's own ceiling. Both servers reach PostgreSQL over TCP without TLS (node-postgres's
//! default; the gateway's URL says `sslmode=disable`). PostGraphile is installed from `tests/postgraphile`'s lockfile
//! (`npm ci`); where it cannot be, the benchmark says so and prints ours alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::measure::{parent_and_cpu_ticks, verdict, TICKS_PER_SECOND};

const CONNECTIONS: &str = "64";
const WARM_UP: &str = "3s";
const DURATION: &str = "10s";
const SHOP_CUSTOMERS: i64 = 1_000;
const ORDERS: i64 = 20_000;
/// The `application_name` both servers connect to PostgreSQL with.
const SERVER_APPLICATION: &str = "hub-bench-server";

/// One query, as each server spells it, and the CPU ratio it must reach.
struct Case {
    name: &'static str,
    ours: String,
    theirs: &'static str,
    cpu_ratio_goal: f64,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "one customer by id",
            ours: format!(
                "{{ customer(id: \"{}\") {{ id firstName lastName emails }} }}",
                testkit::customer_id("SHOP", "5")
            ),
            theirs: "{ customer(id: \"5\") { id firstName lastName emails } }",
            cpu_ratio_goal: 1.0 / 3.0,
        },
        Case {
            name: "20 customers of a connection",
            ours: "{ customers(first: 20) { edges { node { id firstName lastName emails } } } }"
                .into(),
            theirs: "{ customers(first: 20) { edges { node { id firstName lastName emails } } } }",
            cpu_ratio_goal: 1.0 / 3.0,
        },
        Case {
            name: "20 orders with their customer",
            ours: "{ orders(first: 20) { edges { node { id productName price customer { firstName lastName } } } } }"
                .into(),
            theirs: "{ orders(first: 20, orderBy: ID_DESC) { edges { node { id productName price customer { firstName lastName } } } } }",
            cpu_ratio_goal: 0.5,
        },
    ]
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// CPU ticks (user + system) of `root` and every process under it.
fn tree_cpu_ticks(root: u32) -> u64 {
    let mut parents: HashMap<u32, u32> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((parent, spent)) = parent_and_cpu_ticks(pid) {
            parents.insert(pid, parent);
            ticks.insert(pid, spent);
        }
    }
    let in_tree = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match parents.get(&pid) {
            Some(&parent) if parent != 0 && parent != pid => pid = parent,
            _ => return false,
        }
    };
    ticks
        .iter()
        .filter(|(pid, _)| in_tree(**pid))
        .map(|(_, ticks)| ticks)
        .sum()
}

/// What one wrk run measured.
struct Run {
    requests_per_second: f64,
    p99_ms: f64,
    non_2xx: u64,
    cpu_ms_per_request: f64,
}

/// Runs wrk against `url` posting `query`, measuring the CPU of the process tree `pid`.
fn load(url: &str, query: &str, pid: u32, script_dir: &Path) -> Run {
    let body = serde_json::json!({ "query": query }).to_string();
    let script = script_dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = {}\n",
            lua_string(&body)
        ),
    )
    .expect("the wrk script");
    let wrk = |duration: &str| {
        let output = Command::new("wrk")
            .args(["-t2", "-c", CONNECTIONS, "-d", duration, "--latency", "-s"])
            .arg(&script)
            .arg(url)
            .output()
            .expect("wrk runs (make bench installs it)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    wrk(WARM_UP);
    let ticks_before = tree_cpu_ticks(pid);
    let report = wrk(DURATION);
    let ticks = tree_cpu_ticks(pid) - ticks_before;
    let requests = report
        .lines()
        .find_map(|line| {
            let line = line.trim();
            line.split_once(" requests in ")
                .and_then(|(count, _)| count.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let requests_per_second = field_after(&report, "Requests/sec:").unwrap_or(0.0);
    let p99_ms = report
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("99%")
                .map(str::trim)
                .map(duration_ms)
        })
        .unwrap_or(f64::NAN);
    let non_2xx = field_after(&report, "Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    Run {
        requests_per_second,
        p99_ms,
        non_2xx,
        cpu_ms_per_request: ticks as f64 / TICKS_PER_SECOND * 1e3 / requests.max(1.0),
    }
}

fn field_after(report: &str, label: &str) -> Option<f64> {
    report.lines().find_map(|line| {
        line.trim()
            .strip_prefix(label)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// wrk's "1.23ms", "456.00us" or "1.02s" in milliseconds.
fn duration_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(us) = text.strip_suffix("us") {
        (us, 1e-3)
    } else if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1e3)
    } else {
        (text, f64::NAN)
    };
    number
        .parse::<f64>()
        .map_or(f64::NAN, |number| number * factor)
}

fn lua_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The data both servers read: shop customers and their orders, and the computed column
/// through which PostGraphile finds an order's customer.
async fn seed(pool: &sqlx::PgPool) {
    for statement in [
        format!(
            "INSERT INTO customers (source, external_id, first_name, last_name, emails) \
             SELECT 'SHOP', g::text, 'First' || g, 'Last' || g, ARRAY['c' || g || '@example.com'] \
             FROM generate_series(1, {SHOP_CUSTOMERS}) g ON CONFLICT DO NOTHING"
        ),
        format!(
            "INSERT INTO orders (customer_id, product_name, quantity, price, status) \
             SELECT 1 + (g * 7919) % {SHOP_CUSTOMERS}, 'Product ' || g, 1 + g % 5, (g % 100) + 0.99, 'pending' \
             FROM generate_series(1, {ORDERS}) g"
        ),
        "CREATE OR REPLACE FUNCTION orders_customer(o orders) RETURNS customers LANGUAGE sql STABLE AS \
         $$ SELECT * FROM customers WHERE source = 'SHOP' AND external_id = o.customer_id::text $$"
            .into(),
        "ANALYZE".into(),
    ] {
        sqlx::query(&statement)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// PostGraphile 4 with two workers, installed from the lockfile; `Err` says why not.
fn start_postgraphile(database_url: &str, port: u16) -> Result<Child, String> {
    let directory = repository().join("tests/postgraphile");
    let installed = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&directory)
        .status()
        .map_err(|error| format!("npm does not run: {error}"))?;
    if !installed.success() {
        return Err(format!("npm ci in {} failed", directory.display()));
    }
    Command::new("node")
        .arg(directory.join("node_modules/postgraphile/cli.js"))
        .args([
            "--connection",
            database_url,
            "--schema",
            "public",
            "--host",
            "127.0.0.1",
        ])
        .args(["--port", &port.to_string(), "--cluster-workers", "2"])
        .args([
            "--append-plugins",
            "@graphile-contrib/pg-simplify-inflector",
        ])
        .arg("--disable-query-log")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("node does not run PostGraphile: {error}"))
}

async fn wait_for_graphql(url: &str) -> bool {
    let client = reqwest::Client::new();
    for _ in 0..120 {
        let answered = client
            .post(url)
            .json(&serde_json::json!({"query": "{ __typename }"}))
            .send()
            .await;
        if answered.is_ok_and(|response| response.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// `pgbench -S` (select-only, 64 clients, 2 threads, 10 s) on its own database: tps.
async fn pgbench_select_only() -> Option<f64> {
    let database = testkit::fresh_database("hub_bench_pgbench", 2).await;
    let initialised = Command::new("pgbench")
        .args(["-i", "-q", "-s", "10", &database.url])
        .output()
        .ok()?;
    if !initialised.status.success() {
        return None;
    }
    let run = Command::new("pgbench")
        .args([
            "-S",
            "-n",
            "-c",
            CONNECTIONS,
            "-j",
            "2",
            "-T",
            "10",
            &database.url,
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&run.stdout)
        .lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

#[tokio::main]
async fn main() {
    println!(
        "The gateway beside PostGraphile 4 (2 workers): wrk -t2 -c{CONNECTIONS}, {DURATION} per query, \
         {SHOP_CUSTOMERS} shop customers, {ORDERS} orders"
    );
    let database = testkit::fresh_database("hub_bench_peers", 4).await;
    // Both servers talk to PostgreSQL without TLS, as PostGraphile (node-postgres) does by
    // default; sqlx would otherwise negotiate it (`sslmode=prefer`) where the server offers it.
    let server_url = format!(
        "{}?sslmode=disable&application_name={SERVER_APPLICATION}",
        database.url
    );
    let gateway = testkit::spawn_gateway(&server_url, &[]).await;
    seed(&database.pool).await;
    let gateway_pid = gateway.pid().expect("the gateway runs");
    let gateway_url = gateway.url("/graphql");
    let scratch = std::env::temp_dir().join(testkit::unique("hub-bench-peers"));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");

    let port = testkit::free_port();
    let peer_url = format!("http://127.0.0.1:{port}/graphql");
    let mut peer = match start_postgraphile(&server_url, port) {
        Ok(child) if wait_for_graphql(&peer_url).await => Some(child),
        Ok(mut child) => {
            println!("  PostGraphile did not answer on {peer_url} within 30 s: ours alone");
            let _ = child.kill();
            None
        }
        Err(why) => {
            println!("  PostGraphile cannot run here ({why}): ours alone");
            None
        }
    };

    let mut ok = true;
    for case in cases() {
        let ours = load(&gateway_url, &case.ours, gateway_pid, &scratch);
        print!(
            "  {}: ours {:.0} req/s, p99 {:.1} ms, {:.3} ms CPU/request{}",
            case.name,
            ours.requests_per_second,
            ours.p99_ms,
            ours.cpu_ms_per_request,
            if ours.non_2xx > 0 {
                format!(", {} non-2xx", ours.non_2xx)
            } else {
                String::new()
            }
        );
        let Some(child) = &peer else {
            println!();
            continue;
        };
        let theirs = load(&peer_url, case.theirs, child.id(), &scratch);
        let throughput = ours.requests_per_second / theirs.requests_per_second.max(1e-9);
        let cpu = ours.cpu_ms_per_request / theirs.cpu_ms_per_request.max(1e-9);
        let case_ok = throughput > 1.0 && cpu <= case.cpu_ratio_goal && ours.non_2xx == 0;
        ok &= case_ok;
        println!(
            "; PostGraphile {:.0} req/s, p99 {:.1} ms, {:.3} ms CPU/request{}: throughput {throughput:.2}x \
             (goal > 1), CPU {cpu:.2}x (goal <= {:.2}) -> {}",
            theirs.requests_per_second,
            theirs.p99_ms,
            theirs.cpu_ms_per_request,
            if theirs.non_2xx > 0 { format!(", {} non-2xx", theirs.non_2xx) } else { String::new() },
            case.cpu_ratio_goal,
            verdict(case_ok)
        );
    }
    // What the two servers' connections negotiated.
    let (encrypted, connections): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
    )
    .bind(SERVER_APPLICATION)
    .fetch_one(&database.pool)
    .await
    .unwrap_or((-1, -1));
    println!("  the servers' connections to PostgreSQL over TLS: {encrypted} of {connections}");
    if let Some(child) = &mut peer {
        // Its workers first (SIGTERM), then the master.
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &child.id().to_string()])
            .status();
        let _ = child.kill();
        let _ = child.wait();
    }
    match pgbench_select_only().await {
        Some(tps) => {
            println!("  pgbench -S (the database's own ceiling), 64 clients: {tps:.0} tps")
        }
        None => println!("  pgbench -S did not run"),
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if !ok {
        eprintln!("some figures missed their goal");
    }
    drop(gateway);
}
