//! `make bench`: what the GraphQL limits cost and what they protect, on this machine.
//!
//! 1. `/healthz` p99 through the release gateway binary while 8 clients send the worst
//!    documents back to back (a fragment DAG of 3 billion expanded fields, a batch of 1,000
//!    operations, 600 aliases, two documents just under every limit); target: p99
//!    under 50 ms.
//! 2. The checks' own cost on a normal query (`customers(first: 20)` with names), in this
//!    process: measuring a parsed document against the time the whole operation takes;
//!    target: under 5%.

use std::time::{Duration, Instant};
use testkit::measure::{percentile_ms, verdict};

use async_graphql::Request;
use gateway::config::GatewayConfig;
use gateway::graphql::limits::check_request;
use gateway::AppState;
use serde_json::json;

const HOSTILE_CLIENTS: usize = 8;
const ATTACK: Duration = Duration::from_secs(10);
const HEALTHZ_P99_LIMIT_MS: f64 = 50.0;
const CHECK_SHARE_LIMIT: f64 = 0.05;
const NORMAL: &str = "{ customers(first: 20) { totalCount edges { cursor node { id source externalId firstName lastName emails } } } }";

/// The bodies an attacker would send, each refused by a limit.
fn hostile_bodies() -> Vec<String> {
    let dag = json!({"query": testkit::documents::fragment_dag(30)}).to_string();
    let one = json!({"query": "{ customers(first: 1) { totalCount } }"});
    let batch = serde_json::Value::Array(vec![one; 1_000]).to_string();
    let aliases: String = (0..600)
        .map(|index| format!("a{index}: customers(first: 1) {{ totalCount }} "))
        .collect();
    let aliases = json!({"query": format!("{{ {aliases} }}")}).to_string();
    // Within every limit, so validated and run: 100 customers of 97 fields each (complexity
    // 9,901), and one customer with 9,990 same-named fields (validation compares them).
    let wide_page = json!({"query": format!(
        "{{ customers(first: 100) {{ edges {{ node {{ {} }} }} }} }}",
        vec!["id"; 97].join(" ")
    )})
    .to_string();
    let wide_object = json!({"query": format!(
        "{{ customer(id: \"Q3VzdG9tZXI6U0hPUDox\") {{ {} }} }}",
        vec!["id"; 9_990].join(" ")
    )})
    .to_string();
    vec![dag, batch, aliases, wide_page, wide_object]
}

async fn bench_healthz_under_attack(database_url: &str) -> bool {
    let gateway = testkit::spawn_gateway(database_url, &[("RUST_LOG", "warn")]).await;
    let base = gateway.base();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + ATTACK;
    let bodies = hostile_bodies();
    let mut attackers = tokio::task::JoinSet::new();
    for worker in 0..HOSTILE_CLIENTS {
        let (client, url, bodies) = (client.clone(), format!("{base}/graphql"), bodies.clone());
        attackers.spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let body = bodies[(worker + sent as usize) % bodies.len()].clone();
                let answered = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if let Ok(response) = answered {
                    let _ = response.bytes().await;
                }
                sent += 1;
            }
            sent
        });
    }
    let mut latencies = Vec::new();
    let healthz = format!("{base}/healthz");
    while Instant::now() < deadline {
        let started = Instant::now();
        let response = client.get(&healthz).send().await.expect("/healthz answers");
        assert_eq!(response.status(), 200);
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut hostile = 0;
    while let Some(sent) = attackers.join_next().await {
        hostile += sent.unwrap();
    }
    latencies.sort();
    let p99 = percentile_ms(&latencies, 0.99);
    let ok = p99 < HEALTHZ_P99_LIMIT_MS;
    println!(
        "/healthz while {HOSTILE_CLIENTS} clients send the worst documents ({:.0} refused/s): \
         p50 {:.2} ms, p99 {:.2} ms (limit {HEALTHZ_P99_LIMIT_MS} ms) -> {}",
        hostile as f64 / ATTACK.as_secs_f64(),
        percentile_ms(&latencies, 0.50),
        p99,
        verdict(ok)
    );
    ok
}

async fn bench_check_cost(pool: sqlx::PgPool) -> bool {
    const ROUNDS: u32 = 2_000;
    let config = GatewayConfig::defaults();
    let limits = config.graphql.limits();
    let state = AppState::new(pool, config);
    let schema = gateway::graphql::build_schema(state.clone(), state.metrics.clone());
    for _ in 0..100 {
        let response = schema.execute(Request::new(NORMAL)).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
    }
    let started = Instant::now();
    for _ in 0..ROUNDS {
        schema.execute(Request::new(NORMAL)).await;
    }
    let operation = started.elapsed() / ROUNDS;
    let mut request = Request::new(NORMAL);
    request.parsed_query().expect("the normal query parses");
    let started = Instant::now();
    for _ in 0..ROUNDS * 10 {
        check_request(&limits, &mut request).expect("within the limits");
    }
    let check = started.elapsed() / (ROUNDS * 10);
    let share = check.as_secs_f64() / operation.as_secs_f64();
    let ok = share < CHECK_SHARE_LIMIT;
    println!(
        "limit checks on a normal query: {:.1} us of a {:.0} us operation = {:.2}% (limit {:.0}%) -> {}",
        check.as_secs_f64() * 1e6,
        operation.as_secs_f64() * 1e6,
        share * 100.0,
        CHECK_SHARE_LIMIT * 100.0,
        verdict(ok)
    );
    ok
}

#[tokio::main]
async fn main() {
    println!("GraphQL limits benchmarks");
    let database = testkit::fresh_database("hub_bench_limits", 16).await;
    let mut ok = bench_healthz_under_attack(&database.url).await;
    ok &= bench_check_cost(database.pool.clone()).await;
    if !ok {
        eprintln!("some figures missed their limit");
    }
}
