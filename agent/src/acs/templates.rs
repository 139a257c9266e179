//! Provisioning templates: declarative, versioned TOML files that say which parameters a class of devices must
//! have, applied on `0 BOOTSTRAP` and `1 BOOT` (and again when their version changes).
//!
//! ```toml
//! name = "inform-interval"
//! version = 2
//! [when]                       # every list is optional; a device must match each list given
//! oui = ["00259E"]
//! product_class = ["EG8145V5", "EG8145X6"]
//! software_version = ["V5R020*"]   # a trailing * matches any suffix
//! tags = ["fiber"]
//! [[set]]
//! name = "InternetGatewayDevice.ManagementServer.PeriodicInformInterval"
//! value = "{spread:3600:600}"      # 3600 plus a per-device offset below 600: no boot storm of Informs
//! type = "xsd:unsignedInt"
//! ```
//!
//! Values may use `{serial}`, `{oui}`, `{product_class}`, `{tag:NAME}` (the value of tag `NAME=value`) and
//! `{spread:BASE:RANGE}`. Application is idempotent: a parameter whose stored value already equals the
//! template's is not written, and a template whose version was applied is not looked at again until the device
//! bootstraps.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Conditions of a template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct When {
    /// OUIs.
    pub oui: Vec<String>,
    /// Product classes.
    pub product_class: Vec<String>,
    /// Software versions (`*` suffix wildcard).
    pub software_version: Vec<String>,
    /// Tags the device must all have.
    pub tags: Vec<String>,
}

/// One parameter to set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetParam {
    /// Parameter name.
    pub name: String,
    /// Value, with placeholders.
    pub value: String,
    /// xsd type.
    #[serde(default = "default_type", rename = "type")]
    pub xsd_type: String,
}

fn default_type() -> String {
    "xsd:string".into()
}

/// A template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Unique name.
    pub name: String,
    /// Version: raising it applies the template again.
    pub version: i64,
    /// Conditions.
    #[serde(default)]
    pub when: When,
    /// Parameters.
    #[serde(default)]
    pub set: Vec<SetParam>,
}

/// Facts of a device the conditions and placeholders use.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    /// OUI.
    pub oui: &'a str,
    /// Product class.
    pub product_class: &'a str,
    /// Serial number.
    pub serial: &'a str,
    /// Software version.
    pub software: &'a str,
    /// Tags, comma-separated (`name` or `name=value`).
    pub tags: &'a str,
}

/// Why templates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("template {path}: {message}")]
pub struct TemplateError {
    path: String,
    message: String,
}

fn glob(pattern: &str, s: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => s.starts_with(prefix),
        None => pattern == s,
    }
}

impl Template {
    /// Parses one template file.
    pub fn parse(path: &str, text: &str) -> Result<Template, TemplateError> {
        toml::from_str(text).map_err(|e| TemplateError {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Whether the device matches every condition.
    pub fn matches(&self, d: &DeviceFacts<'_>) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|p| glob(p, v));
        let tags: Vec<&str> = d.tags.split(',').map(|t| t.trim()).collect();
        any(&self.when.oui, d.oui)
            && any(&self.when.product_class, d.product_class)
            && any(&self.when.software_version, d.software)
            && self.when.tags.iter().all(|t| {
                tags.iter()
                    .any(|have| have == t || have.split_once('=').is_some_and(|(n, _)| n == t))
            })
    }

    /// The parameters with placeholders filled in for a device (`None` for a value whose tag is missing).
    pub fn values(&self, d: &DeviceFacts<'_>) -> Vec<(String, String, String)> {
        self.set
            .iter()
            .filter_map(|s| Some((s.name.clone(), fill(&s.value, d)?, s.xsd_type.clone())))
            .collect()
    }
}

fn fill(value: &str, d: &DeviceFacts<'_>) -> Option<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return Some(out);
        };
        let key = &rest[start + 1..start + end];
        rest = &rest[start + end + 1..];
        let parts: Vec<&str> = key.split(':').collect();
        match parts.as_slice() {
            ["serial"] => out.push_str(d.serial),
            ["oui"] => out.push_str(d.oui),
            ["product_class"] => out.push_str(d.product_class),
            ["tag", name] => {
                let v = d
                    .tags
                    .split(',')
                    .filter_map(|t| t.trim().split_once('='))
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)?;
                out.push_str(v);
            }
            ["spread", base, range] => {
                let base: u64 = base.parse().ok()?;
                let range: u64 = range.parse().ok()?;
                let h = Sha256::digest(format!("{}-{}-{}", d.oui, d.product_class, d.serial));
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[..8]);
                let offset = if range == 0 {
                    0
                } else {
                    u64::from_le_bytes(b) % range
                };
                out.push_str(&(base + offset).to_string());
            }
            _ => {
                out.push('{');
                out.push_str(key);
                out.push('}');
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// Loads every `*.toml` of a directory, sorted by file name; names must be unique.
pub fn load_dir(dir: &Path) -> Result<Vec<Template>, TemplateError> {
    let err = |message: String| TemplateError {
        path: dir.display().to_string(),
        message,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out: Vec<Template> = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| err(e.to_string()))?;
        let t = Template::parse(&p.display().to_string(), &text)?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(err(format!("two templates named {}", t.name)));
        }
        out.push(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
name = "wifi"
version = 1
[when]
oui = ["00259E"]
software_version = ["V5R020*"]
tags = ["pppoe_user"]
[[set]]
name = "InternetGatewayDevice.ManagementServer.PeriodicInformInterval"
value = "{spread:3600:600}"
type = "xsd:unsignedInt"
[[set]]
name = "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.Username"
value = "{tag:pppoe_user}"
"#;

    fn facts(tags: &str) -> DeviceFacts<'_> {
        DeviceFacts {
            oui: "00259E",
            product_class: "EG8145V5",
            serial: "48575443A94196A5",
            software: "V5R020C00S280",
            tags,
        }
    }

    #[test]
    fn conditions_placeholders_and_spread() {
        let t = Template::parse("t.toml", T).unwrap();
        assert!(t.matches(&facts("pppoe_user=ana@isp")));
        assert!(!t.matches(&facts("")), "tag missing");
        let mut other = facts("pppoe_user=x");
        other.software = "V3R017";
        assert!(!t.matches(&other));
        let v = t.values(&facts("pppoe_user=ana@isp"));
        let interval: u64 = v[0].1.parse().unwrap();
        assert!((3600..4200).contains(&interval), "{interval}");
        assert_eq!(v[1].1, "ana@isp");
        assert_eq!(
            t.values(&facts("pppoe_user=ana@isp")),
            v,
            "the spread is stable per device"
        );
    }
}
