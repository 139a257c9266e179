//! The little URL syntax the HTTP check needs: `http(s)://host[:port][/path?query]`, IPv6 literals in
//! brackets, and the resolution of a redirect's `Location` against the current URL.

use super::HttpError;

/// A parsed `http`/`https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`.
    pub https: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (default 80 or 443).
    pub port: u16,
    /// Path with query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an absolute URL.
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::BadUrl(s.to_owned());
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (h.to_owned(), port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(Url {
            https,
            host,
            port,
            path,
        })
    }

    /// The `Host:` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.https { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Resolves a `Location` header against this URL.
    pub fn join(&self, location: &str) -> Result<Url, HttpError> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Url::parse(location);
        }
        let scheme = if self.https { "https" } else { "http" };
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{scheme}://{rest}"));
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let dir = self.path.split('?').next().unwrap_or("/");
            let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Ok(Url {
            path,
            ..self.clone()
        })
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.host_header(),
            self.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap_or(Url {
            https: false,
            host: "invalid".into(),
            port: 0,
            path: "/".into(),
        })
    }

    #[test]
    fn parses_hosts_ports_and_paths() {
        assert_eq!(
            u("https://example.net"),
            Url {
                https: true,
                host: "example.net".into(),
                port: 443,
                path: "/".into()
            }
        );
        let v6 = u("http://[2001:db8::1]:8080/a?b=c#frag");
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.path.as_str()),
            ("2001:db8::1", 8080, "/a?b=c")
        );
        assert_eq!(v6.to_string(), "http://[2001:db8::1]:8080/a?b=c");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://h:port/").is_err());
    }

    #[test]
    fn joins_redirect_locations() {
        let base = u("https://example.net:8443/a/b?x=1");
        assert_eq!(
            base.join("/c").map(|j| j.to_string()).ok().as_deref(),
            Some("https://example.net:8443/c")
        );
        assert_eq!(base.join("c").map(|j| j.path).ok().as_deref(), Some("/a/c"));
        assert_eq!(
            base.join("http://other/").map(|j| j.host).ok().as_deref(),
            Some("other")
        );
        assert_eq!(
            base.join("//cdn.example/x")
                .map(|j| j.to_string())
                .ok()
                .as_deref(),
            Some("https://cdn.example/x")
        );
    }
}
