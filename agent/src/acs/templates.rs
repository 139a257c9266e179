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
    /// Parses one template file and checks it ([`Template::check`]).
    pub fn parse(path: &str, text: &str) -> Result<Template, TemplateError> {
        let t: Template = toml::from_str(text).map_err(|e| TemplateError {
            path: path.into(),
            message: e.to_string(),
        })?;
        t.check().map_err(|message| TemplateError {
            path: path.into(),
            message,
        })?;
        Ok(t)
    }

    /// What serde cannot say: a name, a version of 0 or more, something to set, parameter names without blanks
    /// that do not end in `.` (objects are not values), `xsd:` types, and placeholders this module knows
    /// (`{spread:BASE:RANGE}` with numbers). The message names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 100 {
            return Err("name must be 1 to 100 characters".into());
        }
        if self.version < 0 {
            return Err(format!("{}: version must be 0 or more", self.name));
        }
        if self.set.is_empty() {
            return Err(format!("{}: nothing to set ([[set]] is empty)", self.name));
        }
        for (i, p) in self.set.iter().enumerate() {
            let at = format!("{}: set[{i}]", self.name);
            if p.name.is_empty() || p.name.len() > 256 || p.name.contains(char::is_whitespace) {
                return Err(format!("{at}.name must be a parameter path without blanks"));
            }
            if p.name.ends_with('.') {
                return Err(format!(
                    "{at}.name {:?} is an object, not a parameter",
                    p.name
                ));
            }
            if !p.xsd_type.starts_with("xsd:") {
                return Err(format!("{at}.type {:?} must be an xsd: type", p.xsd_type));
            }
            check_placeholders(&p.value).map_err(|e| format!("{at}.value: {e}"))?;
        }
        Ok(())
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

/// The placeholders of `value` are ones [`fill`] knows.
fn check_placeholders(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            return Ok(());
        };
        let key = &rest[start + 1..start + end];
        rest = &rest[start + end + 1..];
        match key.split(':').collect::<Vec<_>>().as_slice() {
            ["serial"] | ["oui"] | ["product_class"] => {}
            ["tag", name] if !name.is_empty() => {}
            ["spread", base, range]
                if base.parse::<u64>().is_err() || range.parse::<u64>().is_err() =>
            {
                return Err(format!("{{{key}}}: spread takes two whole numbers"));
            }
            ["spread", _, _] => {}
            _ if key.starts_with(|c: char| c.is_ascii_lowercase()) => {
                return Err(format!(
                    "unknown placeholder {{{key}}} (serial, oui, product_class, tag:NAME, spread:BASE:RANGE)"
                ));
            }
            // Not a placeholder (a brace in a value such as a JSON string): kept as it is.
            _ => {}
        }
    }
    Ok(())
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

/// The templates of `acs.templates_dir` followed by those written inline in the configuration (`[[acs.templates]]`,
/// which is how the control plane pushes them); every name must be unique across both.
pub fn load(dir: Option<&Path>, inline: &[Template]) -> Result<Vec<Template>, TemplateError> {
    let mut out = match dir {
        Some(dir) => load_dir(dir)?,
        None => Vec::new(),
    };
    for (i, t) in inline.iter().enumerate() {
        let err = |message: String| TemplateError {
            path: format!("acs.templates[{i}]"),
            message,
        };
        t.check().map_err(err)?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(err(format!("two templates named {}", t.name)));
        }
        out.push(t.clone());
    }
    Ok(out)
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

    #[test]
    fn bad_templates_are_refused_with_the_field_named() {
        let with = |set: &str| format!("name = \"x\"\nversion = 1\n{set}");
        let cases = [
            (with(""), "nothing to set"),
            (
                with("[[set]]\nname = \"A.B.\"\nvalue = \"1\""),
                "set[0].name \"A.B.\" is an object",
            ),
            (
                with("[[set]]\nname = \"A.B\"\nvalue = \"1\"\ntype = \"int\""),
                "set[0].type",
            ),
            (
                with("[[set]]\nname = \"A.B\"\nvalue = \"{spread:ten:5}\""),
                "spread takes two whole numbers",
            ),
            (
                with("[[set]]\nname = \"A.B\"\nvalue = \"{serial_no}\""),
                "unknown placeholder {serial_no}",
            ),
        ];
        for (text, want) in cases {
            let err = Template::parse("t.toml", &text).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
        // A brace that is not a placeholder stays a value.
        let json = with("[[set]]\nname = \"A.B\"\nvalue = '{\"k\": 1}'");
        Template::parse("t.toml", &json).unwrap();
        // Inline templates: names unique, errors located.
        let t = Template::parse("t.toml", T).unwrap();
        let err = load(None, &[t.clone(), t]).unwrap_err().to_string();
        assert!(
            err.contains("acs.templates[1]") && err.contains("two templates named wifi"),
            "{err}"
        );
    }
}
