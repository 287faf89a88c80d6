use std::process::ExitCode;

use anyhow::Context;
use gateway::config::GatewayCli;
use gateway::{AppState, GRAPHQL_PATH};

/// jemalloc, with its background threads: it gives back the memory thousands of
/// subscribers held once they leave (glibc's allocator kept 97% of it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli: GatewayCli = domain::config::parse_or_exit();
    if cli.print_schema {
        print!("{}", gateway::graphql::sdl());
        return ExitCode::SUCCESS;
    }
    gateway::graphql::handler::size_graphql_runtime(cli.config.http.graphql_threads());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.config.http.http_threads())
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: GatewayCli) -> ExitCode {
    let _telemetry = match domain::telemetry::init(&cli.telemetry, "gateway") {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    match serve(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("gateway stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: GatewayCli) -> anyhow::Result<()> {
    let config = cli.config;
    let pool = domain::db::connect_and_migrate(
        &config.database.database,
        config.database.database_max_connections,
    )
    .await
    .context("cannot prepare the database")?;
    let addr = config.http.gateway_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "gateway listening; GraphiQL at http://{addr}{GRAPHQL_PATH}");
    let state = AppState::new(pool, config);
    state.metrics.record_runtime_threads(
        tokio::runtime::Handle::current().metrics().num_workers(),
        gateway::graphql::handler::graphql_runtime_threads(),
    );
    if !state.auth.accepts_credentials() {
        tracing::warn!(
            anonymous_roles = %state.auth.anonymous_roles(),
            "no API keys or JWTs configured (AUTH_API_KEYS_FILE, AUTH_JWT_*): every caller has the anonymous roles; fine on a local machine only"
        );
    }
    gateway::serve(listener, state, domain::shutdown::signal())
        .await
        .context("server failed")?;
    Ok(())
}
