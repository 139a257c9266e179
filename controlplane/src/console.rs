//! Serves the built web console (`web/dist`, packaged under `/usr/share/octoisp/web`) at `/`, beside the API.
//!
//! - `/assets/*` are content-hashed by the build: `Cache-Control: public, max-age=31536000, immutable`.
//! - Every other file (`index.html`, `sw.js`, the manifest, icons) is `no-cache`: the browser revalidates, so
//!   a new release is picked up at the next load and the service worker updates itself.
//! - Any other GET path that names no file is a route of the single-page app: `index.html` (SPA fallback),
//!   except under `/assets/` (a missing asset is a 404) and under `/api/` (the API's JSON 404).
//!
//! Files are read from disk on each request (the console is small, and a rebuilt `dist` is served at once).
//! Only paths made of plain segments (`[A-Za-z0-9._-]`, not starting with a dot) are looked up, so nothing
//! outside the directory can be named.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use crate::api::error::ApiError;

/// `Cache-Control` of content-hashed assets.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of everything else.
pub const NO_CACHE: &str = "no-cache";
/// Largest file served, bytes (the console's largest chunk is far below).
const MAX_FILE_BYTES: u64 = 32 << 20;

/// The console's routes: `/` and every path the other routers do not match.
pub fn router(web_dir: &Path) -> Router {
    if !web_dir.join("index.html").is_file() {
        tracing::warn!(
            dir = %web_dir.display(),
            "No web console here (index.html missing; build it with `npm ci && npm run build` in web/, or set http.web_dir)."
        );
    }
    let dir = Arc::new(web_dir.to_path_buf());
    Router::new()
        .route("/", any(serve))
        .route("/{*path}", any(serve))
        .with_state(dir)
}

async fn serve(State(dir): State<Arc<PathBuf>>, req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/") || path == "/api" {
        return ApiError::NotFound.into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    let head = req.method() == Method::HEAD;
    let asset = path.starts_with("/assets/");
    if let Some(rel) = safe_relative(path)
        && let Some(resp) = file(&dir.join(&rel), &rel, asset, head).await
    {
        return resp;
    }
    if asset {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match file(&dir.join("index.html"), "index.html", false, head).await {
        Some(resp) => resp,
        None => (
            StatusCode::NOT_FOUND,
            "the web console is not installed (http.web_dir)\n",
        )
            .into_response(),
    }
}

/// The request path as a relative file path, or `None` when a segment is not plain.
pub fn safe_relative(path: &str) -> Option<String> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.len() > 512 {
        return None;
    }
    let plain = rel.split('/').all(|seg| {
        !seg.is_empty()
            && !seg.starts_with('.')
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    plain.then(|| rel.to_owned())
}

/// The content type of a file name.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "map" => "application/json",
        _ => "application/octet-stream",
    }
}

async fn file(path: &Path, name: &str, immutable: bool, head: bool) -> Option<Response> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(tokio::fs::read(path).await.ok()?)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable { IMMUTABLE } else { NO_CACHE }),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if name == "sw.js" {
        // The worker controls the whole origin.
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_are_looked_up() {
        assert_eq!(
            safe_relative("/assets/index-abc.js").as_deref(),
            Some("assets/index-abc.js")
        );
        assert_eq!(safe_relative("/sw.js").as_deref(), Some("sw.js"));
        for bad in [
            "/",
            "/../etc/passwd",
            "/assets/../x",
            "/.env",
            "/a//b",
            "/a%2e%2e/b",
            "/a\\b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("manifest.webmanifest"),
            "application/manifest+json"
        );
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
