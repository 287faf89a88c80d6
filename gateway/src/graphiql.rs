//! GraphiQL, served by the gateway itself so it works with no internet: `GET /graphql` is
//! its page (a WebSocket upgrade on the same path is a subscription connection, see
//! [`graphql_get`]), `GET /graphiql/graphiql.js` and `/graphiql/graphiql.css` its bundle,
//! built from the npm registry's packages by `make graphiql` (web/graphiql, with its
//! lockfile) into `GRAPHIQL_ASSETS_DIR`. Without the bundle the gateway still runs, and the
//! page says how to build it.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::subscriptions::{self, SubscriptionEndpoint};

/// A file `make graphiql` builds, which the gateway serves by name.
#[derive(Debug, Clone, Copy)]
pub struct BuiltFile {
    /// Its name in the assets directory (and in the URL).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// The bundle's files, the only ones served.
const ASSETS: [BuiltFile; 2] = [
    BuiltFile {
        name: "graphiql.js",
        content_type: "text/javascript; charset=utf-8",
    },
    BuiltFile {
        name: "graphiql.css",
        content_type: "text/css; charset=utf-8",
    },
];

/// Where the page and its bundle come from.
#[derive(Clone)]
pub struct Graphiql {
    /// The directory `make graphiql` writes the bundle to.
    pub assets_dir: PathBuf,
}

impl Graphiql {
    fn is_built(&self) -> bool {
        all_built(&self.assets_dir, &ASSETS)
    }

    /// The page: GraphiQL when the bundle is there, else how to build it.
    pub fn page(&self) -> Html<String> {
        if !self.is_built() {
            return Html(format!(
                "<!doctype html><meta charset=utf-8><title>Customer data hub: GraphiQL</title>\
                 <h1>GraphiQL is not built</h1>\
                 <p>Its bundle is not in <code>{}</code> (<code>GRAPHIQL_ASSETS_DIR</code>). \
                 Build it from the repository with <code>make graphiql</code> (npm ci and \
                 esbuild, from the npm registry), or point <code>GRAPHIQL_ASSETS_DIR</code> \
                 at a built copy. The API works without it: <code>POST {}</code>.</p>",
                html_escape(&self.assets_dir.display().to_string()),
                crate::GRAPHQL_PATH,
            ));
        }
        let config = serde_json::json!({
            "endpoint": crate::GRAPHQL_PATH,
            "subscriptionEndpoint": crate::GRAPHQL_PATH,
        });
        Html(format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8>\
             <meta name=viewport content=\"width=device-width, initial-scale=1\">\
             <title>Customer data hub: GraphiQL</title><link rel=icon href=\"data:,\">\
             <link rel=stylesheet href=\"/graphiql/graphiql.css\">\
             <style>html,body,#graphiql{{height:100%;margin:0}}</style></head>\
             <body><div id=graphiql>Loading GraphiQL...</div>\
             <script type=application/json id=hub-graphiql-config>{config}</script>\
             <script src=\"/graphiql/graphiql.js\"></script></body></html>"
        ))
    }

    /// One file of the bundle, by name; 404 for anything else.
    pub async fn asset(
        State(graphiql): State<Graphiql>,
        UrlPath(name): UrlPath<String>,
    ) -> Response {
        serve_built_file(&graphiql.assets_dir, &ASSETS, &name).await
    }
}

/// Whether every one of `files` is in `dir`.
pub fn all_built(dir: &Path, files: &[BuiltFile]) -> bool {
    files.iter().all(|file| dir.join(file.name).is_file())
}

/// The file of `files` called `name`, read from `dir`; 404 for any other name, and when
/// it is not built.
pub async fn serve_built_file(dir: &Path, files: &[BuiltFile], name: &str) -> Response {
    let Some(file) = files.iter().find(|file| file.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(dir.join(file.name)).await {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(file.content_type),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!("{} is not built: run `make graphiql`", file.name),
        )
            .into_response(),
    }
}

/// `text` safe inside HTML.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What `GET /graphql` serves: the page, or a subscription connection.
#[derive(Clone)]
pub struct GraphqlGet {
    /// The page.
    pub graphiql: Graphiql,
    /// The subscription endpoint, for upgrades.
    pub subscriptions: SubscriptionEndpoint,
}

/// Whether a request asks for a WebSocket.
fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// `GET /graphql`: a WebSocket upgrade is a subscription connection (as on
/// `/graphql/ws`, the path most clients expect), anything else the GraphiQL page.
pub async fn graphql_get(State(get): State<GraphqlGet>, request: Request) -> Response {
    if wants_websocket(request.headers()) {
        return subscriptions::handler
            .call(request, get.subscriptions)
            .await;
    }
    get.graphiql.page().into_response()
}
