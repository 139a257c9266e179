//! Prometheus metrics of the HTTP server: requests and their latency per route template and status class.
//!
//! The `route` label is the template the router matched (`/api/v1/devices/{id}`), never the raw path, and the
//! `method` label is one of the methods the API serves (anything else counts as `OTHER`): whatever clients send,
//! the number of series stays bounded by the route table. A request no route matched is `(unmatched)`.
//!
//! The layer is added to the whole HTTP router of an instance ([`crate::serve`]), so `/healthz`, `/readyz`,
//! `/metrics` and the console's files are counted too.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// Counter of requests served: labels `method`, `route`, `status` (`2xx`, `4xx`...).
pub const REQUESTS: &str = "octoisp_http_requests_total";
/// Histogram of the time to the response head, seconds: labels `method`, `route`, `status`.
pub const DURATION: &str = "octoisp_http_request_duration_seconds";
/// Gauge of requests being served.
pub const IN_FLIGHT: &str = "octoisp_http_requests_in_flight";

/// Buckets of [`DURATION`], seconds: from a cached read to the request timeout.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The middleware: counts the request and records its latency once the response head is ready.
pub async fn track(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let started = Instant::now();
    let in_flight = metrics::gauge!(IN_FLIGHT);
    in_flight.increment(1.0);
    let resp = next.run(req).await;
    in_flight.decrement(1.0);
    let status = status_class(resp.status().as_u16());
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.to_owned()),
    ];
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(DURATION, &labels).record(started.elapsed().as_secs_f64());
    resp
}

/// The `method` label: the methods the API and console serve, `OTHER` for the rest.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `2xx`, `4xx`... for a status code.
fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(101), "1xx");
    }
}
