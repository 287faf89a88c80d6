//! Configuration pieces shared by every binary, and the one way a binary parses its
//! command line: a bad value ends the process with a one-line error naming the environment
//! variable (or flag) and exit code 2, never a panic.

use std::fmt;
use std::str::FromStr;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, ValueEnum};
use sqlx::postgres::PgConnectOptions;

/// Default database: the `hub` database on the local PostgreSQL.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/hub";

/// A PostgreSQL URL, checked at parse time. Its `Debug` form hides the password so a
/// configuration dump never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL as given, password included: pass it to the driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Connection options for the driver.
    pub fn connect_options(&self) -> PgConnectOptions {
        // Validated in `from_str`, so this cannot fail.
        self.0.parse().expect("validated at parse time")
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
            return Err("expected a postgres:// or postgresql:// URL".into());
        }
        value
            .parse::<PgConnectOptions>()
            .map_err(|error| error.to_string())?;
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once('@') {
            Some((credentials, host)) if credentials.contains(':') => {
                let scheme_user = credentials.rsplit_once(':').map_or(credentials, |(u, _)| u);
                write!(f, "{scheme_user}:***@{host}")
            }
            _ => f.write_str(&self.0),
        }
    }
}

/// A secret from the configuration (an API key): its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself: compare it, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the inputs differ.
    pub fn matches(&self, candidate: &str) -> bool {
        let (expected, given) = (self.0.as_bytes(), candidate.as_bytes());
        let mut difference = expected.len() ^ given.len();
        for (index, byte) in expected.iter().enumerate() {
            difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
        }
        difference == 0
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The database every binary talks to.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. The database is created if it is missing, and migrations are
    /// applied at start.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: DatabaseUrl,
    /// Longest a statement may run (or wait for a lock) before PostgreSQL cancels it, in
    /// seconds; 0: no limit. Migrations and the profile sync's lock wait are exempt.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub database_statement_timeout_secs: u64,
}

impl DatabaseArgs {
    /// How every pooled connection connects: the URL, with the statement timeout.
    pub fn connect_options(&self) -> PgConnectOptions {
        let options = self.database_url.connect_options();
        match self.database_statement_timeout_secs {
            0 => options,
            seconds => options.options([("statement_timeout", format!("{seconds}s"))]),
        }
    }
}

/// The accounts upstream (the mock server), read by every ingest: the gateway's
/// `POST /api/ingest` and `workers ingest`.
#[derive(Debug, Clone, Args)]
pub struct AccountsUpstreamArgs {
    /// Base URL of the accounts mock server the ingest reads.
    #[arg(long, env = "MOCK_SERVER_URL", default_value = "http://127.0.0.1:5000", value_parser = parse_http_url)]
    pub mock_server_url: String,
}

/// The CRM's ZeroMQ change feed, read by the gateway (`customerChanged`) and the indexer
/// (live changes).
#[derive(Debug, Clone, Args)]
pub struct CrmFeedArgs {
    /// The CRM's ZeroMQ change feed (PUB endpoint).
    #[arg(long, env = "CRM_ZMQ_URL", default_value = "tcp://127.0.0.1:5555")]
    pub crm_zmq_url: String,
}

/// Meilisearch, optional: customer search runs on PostgreSQL without it.
#[derive(Debug, Clone, Args)]
pub struct MeiliArgs {
    /// Meilisearch URL. Unset: search runs on PostgreSQL (the table is the index).
    #[arg(long, env = "MEILI_URL", value_parser = parse_http_url)]
    pub meili_url: Option<String>,
    /// Meilisearch API key: the master key, or a search key where a process only searches
    /// (the gateway).
    #[arg(long, env = "MEILI_MASTER_KEY", hide_env_values = true)]
    pub meili_master_key: Option<Secret>,
    /// The Meilisearch index holding the CRM's customers.
    #[arg(long, env = "MEILI_INDEX", default_value = crate::meili::INDEX, value_parser = parse_meili_index)]
    pub meili_index: String,
}

impl MeiliArgs {
    /// The Meilisearch client these options describe; `None` when `MEILI_URL` is unset.
    pub fn client(&self) -> Option<crate::Result<crate::meili::MeiliSearch>> {
        let url = self.meili_url.as_deref()?;
        let key = self.meili_master_key.as_ref().map(|key| key.expose());
        Some(crate::meili::MeiliSearch::with_index(
            url,
            key,
            &self.meili_index,
        ))
    }
}

/// A Meilisearch index uid: 1 to 400 ASCII letters, digits, `-` and `_` (its documented rule).
fn parse_meili_index(value: &str) -> Result<String, String> {
    let valid = (1..=400).contains(&value.len())
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected 1 to 400 ASCII letters, digits, '-' or '_'".into())
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging and tracing, shared by every binary.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log filter in `tracing` syntax, e.g. `info` or `gateway=debug,sqlx=warn`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OTLP/HTTP collector base URL (e.g. `http://127.0.0.1:4318`); spans are exported to
    /// `<url>/v1/traces`. Unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_http_url)]
    pub otel_exporter_otlp_endpoint: Option<String>,
}

/// Accepts an absolute `http://` or `https://` URL.
pub fn parse_http_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|error| error.to_string())?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(value.trim_end_matches('/').to_owned()),
        _ => Err("expected an http:// or https:// URL".into()),
    }
}

/// Parses the command line and environment. `--help` and `--version` print and exit 0;
/// anything invalid prints one line naming the variable and exits 2.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(error) => match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
            _ => {
                eprintln!("{}", one_line_error::<T>(&error));
                std::process::exit(2);
            }
        },
    }
}

/// Renders a clap error as one line that names the environment variable behind the
/// offending flag, when it has one.
pub fn one_line_error<T: CommandFactory>(error: &clap::Error) -> String {
    let context_string = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    let (Some(flag), Some(value)) = (
        context_string(ContextKind::InvalidArg),
        context_string(ContextKind::InvalidValue),
    ) else {
        let rendered = error.render().to_string();
        let first = rendered
            .lines()
            .next()
            .unwrap_or("invalid arguments")
            .trim();
        return first.to_owned();
    };
    let long = flag
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("--")
        .to_owned();
    let arg = find_arg(&T::command(), &long);
    let env_name = arg
        .as_ref()
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    // A secret's value is never repeated, even when it is wrong.
    let value = match arg.is_some_and(|arg| arg.is_hide_env_values_set()) {
        true => "(hidden)".to_owned(),
        false => format!("{value:?}"),
    };
    let reason = std::error::Error::source(error)
        .map(|source| source.to_string())
        .unwrap_or_else(|| "invalid value".into());
    match env_name {
        Some(env) => format!("error: invalid {env} (--{long}) value {value}: {reason}"),
        None => format!("error: invalid --{long} value {value}: {reason}"),
    }
}

fn find_arg(command: &clap::Command, long: &str) -> Option<clap::Arg> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .cloned()
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| find_arg(sub, long))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_debug_hides_the_password() {
        let url: DatabaseUrl = "postgres://app:s3cret@db:5432/hub".parse().unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(shown, "postgres://app:***@db:5432/hub");
    }

    #[test]
    fn secrets_hide_and_compare() {
        let secret: Secret = "k3y".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(secret.matches("k3y"));
        assert!(!secret.matches("k3"));
        assert!(!secret.matches("k3yy"));
        assert!(!secret.matches(""));
        assert!("".parse::<Secret>().is_err());
    }

    #[test]
    fn database_url_rejects_other_schemes() {
        assert!("mysql://root@db/hub".parse::<DatabaseUrl>().is_err());
        assert!("not a url".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn http_urls_are_checked() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318"
        );
        assert!(parse_http_url("ftp://x").is_err());
        assert!(parse_http_url("localhost:4318").is_err());
    }
}
