//! Who is calling, and what they may do. Every request is identified once, at the edge
//! ([`identify`]): an API key (`X-Api-Key`, checked against the SHA-256 digests of
//! `AUTH_API_KEYS_FILE`), a JWT (`Authorization: Bearer`, HS256 with
//! `AUTH_JWT_HS256_SECRET` or RS256 with the keys of `AUTH_JWT_JWKS_FILE`, re-read when the
//! file changes), or nobody (the roles of `AUTH_ANONYMOUS_ROLES`). The [`Identity`] rides
//! in the request's extensions: the rate limiter buckets by it, [`authorize`] refuses bad
//! credentials (401) and REST calls whose role is missing (401 anonymous, 403 known), the
//! GraphQL layer checks each operation's roles (`graphql::authorization`), and WebSocket
//! clients identify in `connection_init` (refused: close 4403).
//!
//! Roles: `read` (queries, subscriptions, REST reads), `write` (orders, purchases),
//! `admin` (`ingestCustomers`, `retryFailedEvents`, `POST /api/ingest`), `introspect`
//! (`__schema`, `__type`), `customer-service` (`GET /customers/{id}` without the
//! original's `X-Internal-Api-Key`; never granted to anonymous callers).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::SecurityConfig;
use crate::edge::error_answer;

/// The header an API key is sent in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// How often the JWKS file is looked at for changes, at most.
const JWKS_RECHECK: Duration = Duration::from_secs(1);

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Queries, subscriptions, REST reads.
    Read,
    /// Orders and purchases (GraphQL mutations and the REST writes).
    Write,
    /// `ingestCustomers`, `retryFailedEvents`, `POST /api/ingest`.
    Admin,
    /// Introspection (`__schema`, `__type`).
    Introspect,
    /// The customer service route, `GET /customers/{id}`.
    CustomerService,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Read,
        Role::Write,
        Role::Admin,
        Role::Introspect,
        Role::CustomerService,
    ];

    /// The role's name in configuration, tokens and errors.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
            Role::Introspect => "introspect",
            Role::CustomerService => "customer-service",
        }
    }

    fn parse(name: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == name.trim())
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// What an anonymous caller may do when no credentials are configured (local
    /// development): everything but the customer service route.
    pub fn open() -> Self {
        [Role::Read, Role::Write, Role::Admin, Role::Introspect]
            .into_iter()
            .collect()
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Reads a comma-separated list of role names (`none`, or empty: no role).
    pub fn parse_list(list: &str) -> Result<Self, String> {
        if list.trim() == "none" {
            return Ok(Self::default());
        }
        list.split(',')
            .filter(|name| !name.trim().is_empty())
            .map(|name| Role::parse(name).ok_or_else(|| unknown_role(name)))
            .collect()
    }
}

fn unknown_role(name: &str) -> String {
    let known: Vec<&str> = Role::ALL.iter().map(|role| role.name()).collect();
    format!(
        "unknown role {:?} (roles: {})",
        name.trim(),
        known.join(", ")
    )
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(roles: I) -> Self {
        Self(roles.into_iter().fold(0, |bits, role| bits | role.bit()))
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|role| self.contains(*role))
            .map(Role::name)
            .collect();
        match names.is_empty() {
            true => f.write_str("none"),
            false => f.write_str(&names.join(", ")),
        }
    }
}

/// A caller that proved who it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The API key's name, or the JWT's `sub`.
    pub name: String,
    /// What it may do.
    pub roles: Roles,
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No credentials: the anonymous roles.
    Anonymous(Roles),
    /// A valid API key or JWT.
    Known(Arc<Principal>),
    /// Credentials were sent and are not valid: why (never echoing the secret).
    Refused(String),
}

/// Why a caller may not do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or bad ones: 401, `UNAUTHENTICATED`.
    Unauthenticated(String),
    /// Valid credentials without the role: 403, `FORBIDDEN`.
    Forbidden(String),
}

impl Denied {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Denied::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The GraphQL `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Denied::Unauthenticated(_) => "UNAUTHENTICATED",
            Denied::Forbidden(_) => "FORBIDDEN",
        }
    }

    /// What to tell the caller.
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthenticated(message) | Denied::Forbidden(message) => message,
        }
    }
}

impl Identity {
    /// The principal, for a known caller.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Identity::Known(principal) => Some(principal),
            _ => None,
        }
    }

    /// Whether the caller may act in `role` (`what` names the action in the refusal).
    pub fn require(&self, role: Role, what: &str) -> Result<(), Denied> {
        match self {
            Identity::Refused(why) => Err(Denied::Unauthenticated(why.clone())),
            Identity::Known(principal) if principal.roles.contains(role) => Ok(()),
            Identity::Anonymous(roles) if roles.contains(role) => Ok(()),
            Identity::Known(principal) => Err(Denied::Forbidden(format!(
                "{what} needs the role {}; {:?} has: {}",
                role.name(),
                principal.name,
                principal.roles
            ))),
            Identity::Anonymous(_) => Err(Denied::Unauthenticated(format!(
                "{what} needs the role {}: send an API key (X-Api-Key) or a JWT \
                 (Authorization: Bearer) that has it",
                role.name()
            ))),
        }
    }
}

/// `AUTH_API_KEYS_FILE`: `{"keys": [{"name", "sha256", "roles": [...]}]}`, each key stored
/// as the hex SHA-256 of its text (`printf %s "$KEY" | sha256sum`), never the key itself.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Arc<HashMap<[u8; 32], Arc<Principal>>>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeysFile {
    keys: Vec<ApiKeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyEntry {
    name: String,
    sha256: String,
    roles: Vec<String>,
}

impl ApiKeys {
    /// Reads and checks the file: names unique and not empty, digests 64 hex digits and
    /// unique, roles known.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let file: ApiKeysFile = serde_json::from_str(&text).map_err(|error| {
            format!(
                "{}: expected {{\"keys\": [{{\"name\", \"sha256\", \"roles\"}}]}}: {error}",
                path.display()
            )
        })?;
        let mut keys = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for entry in file.keys {
            let context =
                |problem: String| format!("{}: key {:?}: {problem}", path.display(), entry.name);
            if entry.name.trim().is_empty() || !names.insert(entry.name.clone()) {
                return Err(context("a name must be given, once".into()));
            }
            let digest = parse_digest(&entry.sha256).ok_or_else(|| {
                context("sha256 must be the 64 hex digits of the key's SHA-256".into())
            })?;
            let roles = entry
                .roles
                .iter()
                .map(|name| Role::parse(name).ok_or_else(|| context(unknown_role(name))))
                .collect::<Result<Roles, String>>()?;
            let principal = Arc::new(Principal {
                name: entry.name.clone(),
                roles,
            });
            if keys.insert(digest, principal).is_some() {
                return Err(context("the same key is listed twice".into()));
            }
        }
        Ok(Self(Arc::new(keys)))
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, key: &str) -> Option<Arc<Principal>> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.0.get(&digest).cloned()
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(digest)
}

/// `AUTH_JWT_JWKS_FILE`: the RSA public keys RS256 tokens are checked with, re-read when
/// the file changes (looked at once a second at most). A change that does not read as a
/// JWKS with at least one RS256 key is logged and the keys already known stay.
#[derive(Clone)]
pub struct JwksFile(Arc<JwksSource>);

struct JwksSource {
    path: PathBuf,
    state: Mutex<JwksState>,
}

struct JwksState {
    keys: Arc<Vec<VerifyingKey>>,
    stamp: Option<(SystemTime, u64)>,
    checked_at: Instant,
}

#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
}

impl fmt::Debug for JwksFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JwksFile").field(&self.0.path).finish()
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn read_jwks(path: &Path) -> Result<Vec<VerifyingKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not a JWKS: {error}", path.display()))?;
    let keys: Vec<VerifyingKey> = set
        .keys
        .iter()
        .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::RSA(_)))
        .filter(|jwk| matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256)))
        .filter(|jwk| {
            matches!(
                jwk.common.public_key_use,
                None | Some(PublicKeyUse::Signature)
            )
        })
        .filter_map(|jwk| {
            Some(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                key: DecodingKey::from_jwk(jwk).ok()?,
            })
        })
        .collect();
    if keys.is_empty() {
        return Err(format!(
            "{} holds no RSA signing key for RS256",
            path.display()
        ));
    }
    Ok(keys)
}

impl JwksFile {
    /// Reads the file: it must hold at least one RSA key usable for RS256.
    pub fn load(path: &Path) -> Result<Self, String> {
        let stamp = file_stamp(path);
        let keys = read_jwks(path)?;
        Ok(Self(Arc::new(JwksSource {
            path: path.to_owned(),
            state: Mutex::new(JwksState {
                keys: Arc::new(keys),
                stamp,
                checked_at: Instant::now(),
            }),
        })))
    }

    /// The keys now, after re-reading the file if it changed.
    fn keys(&self) -> Arc<Vec<VerifyingKey>> {
        let source = &self.0;
        let mut state = source
            .state
            .lock()
            .expect("never poisoned: no panics while held");
        if state.checked_at.elapsed() >= JWKS_RECHECK {
            state.checked_at = Instant::now();
            let stamp = file_stamp(&source.path);
            if stamp != state.stamp {
                state.stamp = stamp;
                match read_jwks(&source.path) {
                    Ok(keys) => {
                        tracing::info!(path = %source.path.display(), keys = keys.len(), "JWKS re-read");
                        state.keys = Arc::new(keys);
                    }
                    Err(error) => {
                        tracing::error!(%error, "AUTH_JWT_JWKS_FILE changed and cannot be used; keeping the keys read before");
                    }
                }
            }
        }
        state.keys.clone()
    }
}

/// Decides who a request comes from, from what the configuration accepts.
#[derive(Clone)]
pub struct Authenticator {
    api_keys: ApiKeys,
    hs256: Option<DecodingKey>,
    jwks: Option<JwksFile>,
    issuer: Option<String>,
    audience: Option<String>,
    roles_claim: String,
    anonymous: Roles,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("api_keys", &self.api_keys.len())
            .field("hs256", &self.hs256.is_some())
            .field("jwks", &self.jwks)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// The claims read from a JWT besides what the validation checks.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

impl Authenticator {
    /// From the security settings (already read and checked by the configuration).
    pub fn new(security: &SecurityConfig) -> Self {
        let api_keys = security.auth_api_keys_file.clone().unwrap_or_default();
        let hs256 = security
            .auth_jwt_hs256_secret
            .as_ref()
            .map(|secret| DecodingKey::from_secret(secret.expose().as_bytes()));
        let jwks = security.auth_jwt_jwks_file.clone();
        let configured = !api_keys.is_empty() || hs256.is_some() || jwks.is_some();
        let anonymous = security.auth_anonymous_roles.unwrap_or(match configured {
            true => Roles::from_iter([Role::Read]),
            false => Roles::open(),
        });
        Self {
            api_keys,
            hs256,
            jwks,
            issuer: security.auth_jwt_issuer.clone(),
            audience: security.auth_jwt_audience.clone(),
            roles_claim: security.auth_jwt_roles_claim.clone(),
            anonymous,
        }
    }

    /// Whether any credential is accepted (API keys or JWTs).
    pub fn accepts_credentials(&self) -> bool {
        !self.api_keys.is_empty() || self.hs256.is_some() || self.jwks.is_some()
    }

    /// What a caller without credentials may do.
    pub fn anonymous_roles(&self) -> Roles {
        self.anonymous
    }

    /// The identity of a caller that sent no credentials.
    pub fn anonymous(&self) -> Identity {
        Identity::Anonymous(self.anonymous)
    }

    /// Who sent these credentials (`None` for either: anonymous).
    pub fn identify(&self, api_key: Option<&str>, authorization: Option<&str>) -> Identity {
        match (api_key, authorization) {
            (None, None) => self.anonymous(),
            (Some(_), Some(_)) => Identity::Refused(
                "send one credential: X-Api-Key or Authorization, not both".into(),
            ),
            (Some(key), None) => match self.api_keys.find(key) {
                Some(principal) => Identity::Known(principal),
                None if self.api_keys.is_empty() => Identity::Refused(
                    "this gateway accepts no API keys (AUTH_API_KEYS_FILE is not set)".into(),
                ),
                None => Identity::Refused("unknown API key".into()),
            },
            (None, Some(authorization)) => {
                let token = authorization
                    .strip_prefix("Bearer ")
                    .or_else(|| authorization.strip_prefix("bearer "))
                    .map(str::trim);
                match token {
                    Some(token) if !token.is_empty() => self.verify_jwt(token),
                    _ => Identity::Refused("Authorization must be \"Bearer <JWT>\"".into()),
                }
            }
        }
    }

    /// Who sent a request with these headers.
    pub fn identify_headers(&self, headers: &HeaderMap) -> Identity {
        let text = |name: &str| {
            headers
                .get(name)
                .map(|value| value.to_str().unwrap_or("\u{fffd}"))
        };
        self.identify(text(API_KEY_HEADER), text(header::AUTHORIZATION.as_str()))
    }

    /// Who a WebSocket `connection_init` payload names: its `x-api-key` (or `apiKey`) and
    /// `authorization` fields, at the top or under `headers`, names compared ignoring case;
    /// `None` when it carries neither.
    pub fn identify_init_payload(&self, payload: &Value) -> Option<Identity> {
        let field = |wanted: &[&str]| {
            let find = |object: &serde_json::Map<String, Value>| {
                object
                    .iter()
                    .find(|(name, _)| wanted.iter().any(|w| name.eq_ignore_ascii_case(w)))
                    .map(|(_, value)| value.as_str().unwrap_or("\u{fffd}").to_owned())
            };
            let object = payload.as_object()?;
            find(object).or_else(|| object.get("headers")?.as_object().and_then(find))
        };
        let api_key = field(&["x-api-key", "apiKey"]);
        let authorization = field(&["authorization"]);
        if api_key.is_none() && authorization.is_none() {
            return None;
        }
        Some(self.identify(api_key.as_deref(), authorization.as_deref()))
    }

    fn verify_jwt(&self, token: &str) -> Identity {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Identity::Refused("the bearer token is not a JWT".into());
        };
        let keys: Vec<DecodingKey> = match header.alg {
            Algorithm::HS256 => match &self.hs256 {
                Some(key) => vec![key.clone()],
                None => {
                    return Identity::Refused(
                        "HS256 tokens are not accepted (AUTH_JWT_HS256_SECRET is not set)".into(),
                    )
                }
            },
            Algorithm::RS256 => match &self.jwks {
                Some(jwks) => jwks
                    .keys()
                    .iter()
                    .filter(|key| header.kid.is_none() || key.kid == header.kid)
                    .map(|key| key.key.clone())
                    .collect(),
                None => {
                    return Identity::Refused(
                        "RS256 tokens are not accepted (AUTH_JWT_JWKS_FILE is not set)".into(),
                    )
                }
            },
            other => {
                return Identity::Refused(format!(
                    "tokens signed with {other:?} are not accepted (HS256 or RS256)"
                ))
            }
        };
        if keys.is_empty() {
            return Identity::Refused("no key in AUTH_JWT_JWKS_FILE has the token's kid".into());
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = 30;
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let mut last_error = None;
        for key in &keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return self.principal_of(data.claims),
                Err(error) => last_error = Some(error),
            }
        }
        Identity::Refused(describe_jwt_error(last_error))
    }

    fn principal_of(&self, claims: Claims) -> Identity {
        let Some(name) = claims.sub.filter(|sub| !sub.is_empty()) else {
            return Identity::Refused("the token has no sub claim".into());
        };
        let roles = match claims.other.get(&self.roles_claim) {
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .filter_map(Role::parse)
                .collect(),
            Some(Value::String(names)) => {
                names.split_whitespace().filter_map(Role::parse).collect()
            }
            _ => Roles::default(),
        };
        Identity::Known(Arc::new(Principal { name, roles }))
    }
}

fn describe_jwt_error(error: Option<jsonwebtoken::errors::Error>) -> String {
    use jsonwebtoken::errors::ErrorKind;
    let Some(error) = error else {
        return "the token could not be checked".into();
    };
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature is not valid".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not AUTH_JWT_ISSUER".into(),
        ErrorKind::InvalidAudience => "the token's audience is not AUTH_JWT_AUDIENCE".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        _ => format!("the token is not valid: {error}"),
    }
}

/// Identifies every request and puts its [`Identity`] in the request's extensions. It
/// refuses nothing: the rate limiter, inside it, buckets refused callers by address, then
/// [`authorize`] answers them.
pub async fn identify(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let identity = authenticator.identify_headers(request.headers());
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The role a REST call needs; `None`: the route decides (GraphQL per operation, the
/// customer service route with its key) or anyone may (probes, metrics, GraphiQL's page,
/// the OpenAPI document and its page).
fn rest_role(method: &Method, path: &str) -> Option<Role> {
    match path {
        "/healthz" | "/readyz" | "/metrics" | "/api/health" => None,
        _ if path == crate::GRAPHQL_PATH || path == crate::GRAPHQL_WS_PATH => None,
        _ if path.starts_with("/customers/") || path.starts_with("/graphiql/") => None,
        _ if path == crate::docs::OPENAPI_PATH
            || path == crate::docs::DOCS_PATH
            || path.starts_with("/docs/") =>
        {
            None
        }
        "/api/ingest" => Some(Role::Admin),
        _ if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS => {
            Some(Role::Read)
        }
        _ => Some(Role::Write),
    }
}

/// Answers bad credentials with 401 anywhere but the probes, and REST calls without their
/// role with 401 (anonymous) or 403 (known), in the route owner's error shape.
pub async fn authorize(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let identity = request
        .extensions()
        .get::<Identity>()
        .cloned()
        .unwrap_or(Identity::Anonymous(Roles::open()));
    let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    let denied = match (&identity, rest_role(request.method(), &path)) {
        (Identity::Refused(why), _) if !probe => Some(Denied::Unauthenticated(why.clone())),
        (_, Some(role)) => identity
            .require(role, &format!("{} {path}", request.method()))
            .err(),
        _ => None,
    };
    match denied {
        None => next.run(request).await,
        Some(denied) => refusal(&path, &denied),
    }
}

/// A refusal in the route owner's shape; a 401 says how to authenticate.
pub fn refusal(path: &str, denied: &Denied) -> Response {
    let mut response = error_answer(path, denied.status(), denied.message());
    if denied.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn sha256_hex(text: &str) -> String {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hub-auth-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn role_lists_read_and_print_and_unknown_roles_are_named() {
        let roles = Roles::parse_list("read, write").unwrap();
        assert!(roles.contains(Role::Read) && roles.contains(Role::Write));
        assert!(!roles.contains(Role::Admin));
        assert_eq!(roles.to_string(), "read, write");
        assert_eq!(Roles::parse_list("").unwrap().to_string(), "none");
        let error = Roles::parse_list("read,root").unwrap_err();
        assert!(
            error.contains("\"root\"") && error.contains("customer-service"),
            "{error}"
        );
        assert!(!Roles::open().contains(Role::CustomerService));
    }

    #[test]
    fn api_keys_are_matched_by_digest_and_the_file_is_checked() {
        let dir = temp_dir();
        let good = format!(
            r#"{{"keys": [{{"name": "shop", "sha256": "{}", "roles": ["read", "write"]}}]}}"#,
            sha256_hex("s3cret")
        );
        let keys = ApiKeys::load(&write(&dir, "keys.json", &good)).unwrap();
        let shop = keys.find("s3cret").unwrap();
        assert_eq!(shop.name, "shop");
        assert!(shop.roles.contains(Role::Write));
        assert!(keys.find("s3cret ").is_none());
        for (bad, says) in [
            (
                r#"{"keys": [{"name": "x", "sha256": "abc", "roles": []}]}"#,
                "64 hex",
            ),
            (
                &format!(
                    r#"{{"keys": [{{"name": "x", "sha256": "{}", "roles": ["god"]}}]}}"#,
                    sha256_hex("a")
                ),
                "unknown role",
            ),
            (
                r#"{"keys": [{"name": "x", "key": "plain", "roles": []}]}"#,
                "expected",
            ),
        ] {
            let error = ApiKeys::load(&write(&dir, "bad.json", bad)).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn rest_calls_need_read_write_or_admin_by_route() {
        assert_eq!(rest_role(&Method::GET, "/api/v1/orders"), Some(Role::Read));
        assert_eq!(
            rest_role(&Method::POST, "/api/v1/orders"),
            Some(Role::Write)
        );
        assert_eq!(rest_role(&Method::POST, "/buy"), Some(Role::Write));
        assert_eq!(rest_role(&Method::POST, "/api/ingest"), Some(Role::Admin));
        assert_eq!(rest_role(&Method::GET, "/customers/1"), None);
        assert_eq!(rest_role(&Method::POST, "/graphql"), None);
        assert_eq!(rest_role(&Method::GET, "/healthz"), None);
        assert_eq!(rest_role(&Method::GET, "/graphiql/graphiql.js"), None);
        assert_eq!(rest_role(&Method::GET, "/openapi.json"), None);
        assert_eq!(rest_role(&Method::GET, "/docs/swagger-ui.js"), None);
    }

    #[test]
    fn refusals_say_what_is_missing_without_echoing_secrets() {
        let anonymous = Identity::Anonymous(Roles::from_iter([Role::Read]));
        assert!(anonymous.require(Role::Read, "a query").is_ok());
        let denied = anonymous
            .require(Role::Admin, "retryFailedEvents")
            .unwrap_err();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert!(denied.message().contains("admin"), "{denied:?}");
        let known = Identity::Known(Arc::new(Principal {
            name: "shop".into(),
            roles: Roles::from_iter([Role::Read]),
        }));
        let denied = known.require(Role::Write, "createOrder").unwrap_err();
        assert_eq!(denied.code(), "FORBIDDEN");
        assert!(
            denied.message().contains("\"shop\" has: read"),
            "{denied:?}"
        );
        let authenticator = Authenticator {
            api_keys: ApiKeys::default(),
            hs256: None,
            jwks: None,
            issuer: None,
            audience: None,
            roles_claim: "roles".into(),
            anonymous: Roles::open(),
        };
        let refused = authenticator.identify(Some("not-a-key-we-know"), None);
        assert!(matches!(&refused, Identity::Refused(why) if !why.contains("not-a-key")));
    }

    #[test]
    fn init_payloads_carry_credentials_at_the_top_or_under_headers() {
        let authenticator = Authenticator {
            api_keys: ApiKeys::default(),
            hs256: Some(DecodingKey::from_secret(
                b"0123456789abcdef0123456789abcdef",
            )),
            jwks: None,
            issuer: None,
            audience: None,
            roles_claim: "roles".into(),
            anonymous: Roles::default(),
        };
        assert_eq!(
            authenticator.identify_init_payload(&serde_json::json!({})),
            None
        );
        assert_eq!(authenticator.identify_init_payload(&Value::Null), None);
        for payload in [
            serde_json::json!({"Authorization": "Basic x"}),
            serde_json::json!({"headers": {"authorization": "Basic x"}}),
        ] {
            assert!(matches!(
                authenticator.identify_init_payload(&payload),
                Some(Identity::Refused(_))
            ));
        }
    }
}
