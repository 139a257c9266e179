//! Authentication and authorization: passwords, JWTs, refresh tokens, API keys, RBAC.

pub mod caller;

pub use caller::Caller;
