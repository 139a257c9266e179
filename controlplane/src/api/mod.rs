//! The HTTP API: router, gateway middleware (request id, limits, rate limits, CORS), handlers, OpenAPI.

pub mod error;
