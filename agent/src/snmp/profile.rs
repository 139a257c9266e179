//! Vendor profiles as data: what to collect from a device and how to turn the values into metrics. The profiles
//! under `agent/profiles/` are compiled in; more may be loaded from a directory at start (`snmp.profiles_dir`), and
//! a file there with the name of a built-in one replaces it. Adding a vendor means adding a file.
//!
//! A profile has scalars (one OID each) and tables (columns walked together, with label columns that are cached,
//! see [`crate::snmp::poller`]). A metric's value is `(raw + offset) * scale`; `type = "rate"` makes it a per-second
//! rate of a counter (see [`crate::snmp::rate`]); `fallback_oid` is used per device when the main column is absent
//! (64-bit counters falling back to 32-bit ones).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::ber::Oid;
use super::fingerprint::Fingerprint;

/// The built-in profiles: (file name, contents).
pub const BUILTIN: &[(&str, &str)] = &[
    ("system.toml", include_str!("../../profiles/system.toml")),
    ("if-mib.toml", include_str!("../../profiles/if-mib.toml")),
    (
        "host-resources.toml",
        include_str!("../../profiles/host-resources.toml"),
    ),
    (
        "entity-sensor.toml",
        include_str!("../../profiles/entity-sensor.toml"),
    ),
    (
        "ucd-snmp.toml",
        include_str!("../../profiles/ucd-snmp.toml"),
    ),
    (
        "mikrotik.toml",
        include_str!("../../profiles/mikrotik.toml"),
    ),
    (
        "huawei-olt.toml",
        include_str!("../../profiles/huawei-olt.toml"),
    ),
    ("zte-olt.toml", include_str!("../../profiles/zte-olt.toml")),
    (
        "ubiquiti-airmax.toml",
        include_str!("../../profiles/ubiquiti-airmax.toml"),
    ),
];

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not valid for the schema.
    #[error("profile {file}: {message}")]
    Parse {
        /// File.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The directory could not be read.
    #[error("cannot read profiles from {dir}: {source}")]
    Read {
        /// Directory.
        dir: String,
        /// The error.
        source: std::io::Error,
    },
}

/// How a metric's value is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// The value as read (scaled).
    #[default]
    Gauge,
    /// Per-second rate of a counter (scaled).
    Rate,
}

/// When a profile applies. Every list given must contain the device's value; no list = every device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Fingerprint vendors.
    #[serde(default)]
    pub vendor: Vec<String>,
    /// Fingerprint OS names.
    #[serde(default)]
    pub os: Vec<String>,
    /// sysObjectID prefixes.
    #[serde(default)]
    pub sys_object_id: Vec<Oid>,
}

/// A scalar metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scalar {
    /// Metric name.
    pub metric: String,
    /// The instance OID (ending in `.0` for true scalars).
    pub oid: Oid,
    /// Gauge or rate.
    #[serde(default, rename = "type")]
    pub kind: MetricType,
    /// Multiplier.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added before scaling.
    #[serde(default)]
    pub offset: f64,
    /// Raw values that mean "no reading".
    #[serde(default)]
    pub skip: Vec<i64>,
}

/// A label column of a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelColumn {
    /// Label name.
    pub name: String,
    /// Column OID.
    pub oid: Oid,
}

/// A metric column of a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMetric {
    /// Metric name.
    pub metric: String,
    /// Column OID.
    pub oid: Oid,
    /// Column used instead when the device has no `oid` column.
    pub fallback_oid: Option<Oid>,
    /// Scale of the fallback column (defaults to `scale`).
    pub fallback_scale: Option<f64>,
    /// Gauge or rate.
    #[serde(default, rename = "type")]
    pub kind: MetricType,
    /// Multiplier.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added before scaling.
    #[serde(default)]
    pub offset: f64,
    /// Raw values that mean "no reading".
    #[serde(default)]
    pub skip: Vec<i64>,
    /// Column of the same row to multiply the value by (hrStorageAllocationUnits).
    pub multiply_by: Option<Oid>,
    /// Column of the same row holding an ENTITY-SENSOR SI scale (value x 10^(3 x (scale - 9))).
    pub si_scale_oid: Option<Oid>,
    /// Column of the same row holding a decimal precision (value / 10^precision).
    pub precision_oid: Option<Oid>,
    /// Metric of the same row that bounds this rate (a rate above it is a counter reset, not traffic).
    pub max_rate_metric: Option<String>,
}

/// A table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Name (used in logs and as the cache key).
    pub name: String,
    /// Label names of the index arcs; the last one takes every remaining arc.
    #[serde(default)]
    pub index: Vec<String>,
    /// Label columns (cached).
    #[serde(default)]
    pub labels: Vec<LabelColumn>,
    /// Metric columns.
    #[serde(default, rename = "metric")]
    pub metrics: Vec<TableMetric>,
}

/// A profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Name.
    pub name: String,
    /// What it collects.
    #[serde(default)]
    pub description: String,
    /// When it applies.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Scalars.
    #[serde(default, rename = "scalar")]
    pub scalars: Vec<Scalar>,
    /// Tables.
    #[serde(default, rename = "table")]
    pub tables: Vec<Table>,
}

fn one() -> f64 {
    1.0
}

impl Profile {
    /// Parses one profile file.
    pub fn parse(file: &str, text: &str) -> Result<Profile, ProfileError> {
        toml::from_str(text).map_err(|e| ProfileError::Parse {
            file: file.into(),
            message: e.to_string(),
        })
    }

    /// Whether the profile applies to a device with this fingerprint.
    pub fn applies(&self, fp: &Fingerprint) -> bool {
        let m = &self.matches;
        let has = |list: &[String], v: &Option<String>| {
            list.is_empty()
                || v.as_ref()
                    .is_some_and(|v| list.iter().any(|x| x.eq_ignore_ascii_case(v)))
        };
        let oid_ok = m.sys_object_id.is_empty()
            || fp
                .sys_object_id
                .as_ref()
                .and_then(|s| s.parse::<Oid>().ok())
                .is_some_and(|o| m.sys_object_id.iter().any(|p| o.starts_with(p)));
        has(&m.vendor, &fp.vendor) && has(&m.os, &fp.os) && oid_ok
    }
}

/// Converts a raw reading with offset and scale; `None` for skipped values.
pub fn convert(raw: f64, offset: f64, scale: f64, skip: &[i64]) -> Option<f64> {
    if skip.iter().any(|s| *s as f64 == raw) || !raw.is_finite() {
        return None;
    }
    Some((raw + offset) * scale)
}

/// A set of profiles.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    profiles: Vec<Arc<Profile>>,
}

impl ProfileSet {
    /// The built-in profiles.
    pub fn builtin() -> Result<ProfileSet, ProfileError> {
        let profiles = BUILTIN
            .iter()
            .map(|(f, t)| Profile::parse(f, t).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(ProfileSet { profiles })
    }

    /// The built-in profiles plus (or replaced by) the `*.toml` files of `dir`.
    pub fn load(dir: Option<&Path>) -> Result<ProfileSet, ProfileError> {
        let mut set = Self::builtin()?;
        let Some(dir) = dir else { return Ok(set) };
        let err = |source| ProfileError::Read {
            dir: dir.display().to_string(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(err)?;
            let p = Profile::parse(&path.display().to_string(), &text)?;
            set.profiles.retain(|q| q.name != p.name);
            set.profiles.push(Arc::new(p));
        }
        Ok(set)
    }

    /// Every profile.
    pub fn all(&self) -> &[Arc<Profile>] {
        &self.profiles
    }

    /// The profiles that apply to a device.
    pub fn for_device(&self, fp: &Fingerprint) -> Vec<Arc<Profile>> {
        self.profiles
            .iter()
            .filter(|p| p.applies(fp))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse_and_match() {
        let set = ProfileSet::builtin().unwrap();
        assert_eq!(set.all().len(), BUILTIN.len());
        let fp = Fingerprint {
            vendor: Some("Huawei".into()),
            os: Some("SmartAX".into()),
            ..Fingerprint::default()
        };
        let names: Vec<_> = set.for_device(&fp).iter().map(|p| p.name.clone()).collect();
        assert!(
            names.contains(&"huawei-olt".to_owned()) && names.contains(&"if-mib".to_owned()),
            "{names:?}"
        );
        assert!(!names.contains(&"zte-olt".to_owned()));
    }

    #[test]
    fn conversion() {
        // Huawei OLT-side RX: (v - 10000) / 100.
        assert_eq!(convert(7_650.0, -10_000.0, 0.01, &[]), Some(-23.5));
        assert_eq!(convert(2_147_483_647.0, 0.0, 0.01, &[2_147_483_647]), None);
        // ZTE older firmware: raw * 0.002 - 30.
        let v = convert(3_000.0, -15_000.0, 0.002, &[]).unwrap();
        assert!((v - -24.0).abs() < 1e-9);
    }
}
