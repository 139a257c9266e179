//! HTTP authentication of CPEs (server side) and of the ACS towards a CPE's Connection Request URL (client side).
//!
//! Digest (RFC 2617, MD5, `qop=auth` or none) is the CPE authentication TR-069 requires over plain HTTP; Basic is
//! accepted only on a TLS connection. Nonces are stateless: `<hex ms timestamp>.<hex tag>` where the tag is a
//! SHA-256 of a per-process secret and the timestamp, so any instance of the endpoint can verify them and a nonce
//! older than [`NONCE_LIFETIME_MS`] is answered with `stale=true`.

use base64::Engine;
use md5::{Digest as _, Md5};
use sha2::{Digest as _, Sha256};

/// How long a nonce is accepted.
pub const NONCE_LIFETIME_MS: i64 = 300_000;

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The fields of a Digest `Authorization` or `WWW-Authenticate` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestParams {
    /// Pairs as they appeared, names lowercased, quotes removed.
    pub fields: Vec<(String, String)>,
}

impl DigestParams {
    /// Parses the part after `Digest `.
    pub fn parse(s: &str) -> DigestParams {
        let mut fields = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            let Some(eq) = rest.find('=') else { break };
            let name = rest[..eq]
                .trim()
                .trim_start_matches(',')
                .trim()
                .to_ascii_lowercase();
            rest = rest[eq + 1..].trim_start();
            let value;
            if let Some(r) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = r.char_indices();
                let mut end = r.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                out.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        _ => out.push(c),
                    }
                }
                value = out;
                rest = r.get(end..).unwrap_or("");
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                value = rest[..end].trim().to_owned();
                rest = &rest[end..];
            }
            rest = rest.trim_start().trim_start_matches(',').trim_start();
            fields.push((name, value));
            if fields.len() > 32 {
                break;
            }
        }
        DigestParams { fields }
    }

    /// A field by (lowercase) name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Issues and checks server-side Digest challenges.
#[derive(Debug, Clone)]
pub struct DigestServer {
    realm: String,
    secret: [u8; 32],
}

/// The outcome of checking an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated as this user name.
    Ok(String),
    /// The nonce is too old: challenge again with `stale=true`.
    Stale,
    /// Wrong, missing or unusable credentials.
    Denied,
}

impl DigestServer {
    /// A server for `realm` with a random secret.
    pub fn new(realm: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            secret: rand::random(),
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn tag(&self, ts: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(ts.as_bytes());
        hex::encode(&h.finalize()[..12])
    }

    /// A fresh nonce at `now_ms`.
    pub fn nonce(&self, now_ms: i64) -> String {
        let ts = format!("{now_ms:x}");
        let tag = self.tag(&ts);
        format!("{ts}.{tag}")
    }

    /// The `WWW-Authenticate` value of a challenge.
    pub fn challenge(&self, now_ms: i64, stale: bool) -> String {
        format!(
            "Digest realm=\"{}\", qop=\"auth\", algorithm=MD5, nonce=\"{}\"{}",
            self.realm,
            self.nonce(now_ms),
            if stale { ", stale=true" } else { "" }
        )
    }

    /// Checks an `Authorization` header for `method`, with `password_of(user)` giving the expected password.
    /// Basic is accepted only when `tls` is true.
    pub fn check(
        &self,
        header: Option<&str>,
        method: &str,
        now_ms: i64,
        tls: bool,
        password_of: impl Fn(&str) -> Option<String>,
    ) -> AuthOutcome {
        let Some(header) = header else {
            return AuthOutcome::Denied;
        };
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            if !tls {
                return AuthOutcome::Denied;
            }
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                return AuthOutcome::Denied;
            };
            let Ok(text) = String::from_utf8(raw) else {
                return AuthOutcome::Denied;
            };
            let Some((user, pass)) = text.split_once(':') else {
                return AuthOutcome::Denied;
            };
            return match password_of(user) {
                Some(p) if constant_eq(p.as_bytes(), pass.as_bytes()) => {
                    AuthOutcome::Ok(user.to_owned())
                }
                _ => AuthOutcome::Denied,
            };
        }
        if !scheme.eq_ignore_ascii_case("digest") {
            return AuthOutcome::Denied;
        }
        let p = DigestParams::parse(rest);
        let (Some(user), Some(nonce), Some(uri), Some(response)) = (
            p.get("username"),
            p.get("nonce"),
            p.get("uri"),
            p.get("response"),
        ) else {
            return AuthOutcome::Denied;
        };
        if p.get("realm") != Some(self.realm.as_str()) {
            return AuthOutcome::Denied;
        }
        let Some((ts, tag)) = nonce.split_once('.') else {
            return AuthOutcome::Denied;
        };
        if !constant_eq(self.tag(ts).as_bytes(), tag.as_bytes()) {
            return AuthOutcome::Denied;
        }
        let Some(password) = password_of(user) else {
            return AuthOutcome::Denied;
        };
        let expected = digest_response(
            user,
            &self.realm,
            &password,
            method,
            uri,
            nonce,
            p.get("qop"),
            p.get("nc").unwrap_or(""),
            p.get("cnonce").unwrap_or(""),
        );
        if !constant_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return AuthOutcome::Denied;
        }
        match i64::from_str_radix(ts, 16) {
            Ok(t) if now_ms.saturating_sub(t) <= NONCE_LIFETIME_MS => {
                AuthOutcome::Ok(user.to_owned())
            }
            _ => AuthOutcome::Stale,
        }
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Digest `response` value (RFC 2617, MD5).
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<&str>,
    nc: &str,
    cnonce: &str,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        Some(q) if !q.is_empty() => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}")),
        _ => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// The `Authorization` header a client sends in answer to a Digest `WWW-Authenticate` challenge.
pub fn digest_authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> Option<String> {
    let (scheme, rest) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let p = DigestParams::parse(rest);
    let realm = p.get("realm")?;
    let nonce = p.get("nonce")?;
    let qop = p
        .get("qop")
        .map(|q| {
            q.split(',')
                .map(str::trim)
                .find(|q| *q == "auth")
                .unwrap_or("")
        })
        .filter(|q| !q.is_empty());
    let cnonce = hex::encode(rand::random::<[u8; 8]>());
    let nc = format!("{nc:08x}");
    let response = digest_response(user, realm, password, method, uri, nonce, qop, &nc, &cnonce);
    let mut h = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5"
    );
    if let Some(q) = qop {
        h.push_str(&format!(", qop={q}, nc={nc}, cnonce=\"{cnonce}\""));
    }
    if let Some(o) = p.get("opaque") {
        h.push_str(&format!(", opaque=\"{o}\""));
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(user: &str) -> Option<String> {
        (user == "cpe").then(|| "secret".to_owned())
    }

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 section 3.5.
        let r = digest_response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some("auth"),
            "00000001",
            "0a4f113b",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn digest_round_trip_wrong_password_and_stale_nonce() {
        let s = DigestServer::new("octoisp");
        let challenge = s.challenge(1_000, false);
        let h = digest_authorization(&challenge, "cpe", "secret", "POST", "/", 1).unwrap();
        assert_eq!(
            s.check(Some(&h), "POST", 2_000, false, pw),
            AuthOutcome::Ok("cpe".into())
        );
        let bad = digest_authorization(&challenge, "cpe", "wrong", "POST", "/", 1).unwrap();
        assert_eq!(
            s.check(Some(&bad), "POST", 2_000, false, pw),
            AuthOutcome::Denied
        );
        assert_eq!(
            s.check(Some(&h), "POST", 1_000 + NONCE_LIFETIME_MS + 1, false, pw),
            AuthOutcome::Stale
        );
        // A nonce from another server (another secret) is refused.
        let other = DigestServer::new("octoisp");
        let forged = digest_authorization(
            &other.challenge(1_000, false),
            "cpe",
            "secret",
            "POST",
            "/",
            1,
        )
        .unwrap();
        assert_eq!(
            s.check(Some(&forged), "POST", 2_000, false, pw),
            AuthOutcome::Denied
        );
    }

    #[test]
    fn basic_only_over_tls() {
        let s = DigestServer::new("octoisp");
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("cpe:secret")
        );
        assert_eq!(s.check(Some(&h), "POST", 0, false, pw), AuthOutcome::Denied);
        assert_eq!(
            s.check(Some(&h), "POST", 0, true, pw),
            AuthOutcome::Ok("cpe".into())
        );
    }
}
