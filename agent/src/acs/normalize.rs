//! The normalized view of a CPE (WAN IP, PPPoE user, Wi-Fi, firmware, uptime, optical power in dBm), computed
//! from its parameter tree by rules read from a data file (`agent/acs/normalize.toml`, embedded as the default),
//! so that a new vendor extension is a line of TOML rather than code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cwmp::ParameterValue;

/// The rules shipped with the agent.
pub const DEFAULT_RULES: &str = include_str!("../../acs/normalize.toml");

/// How a field combines its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// First non-empty value.
    Text,
    /// Every distinct non-empty value.
    List,
    /// Sum of integer values.
    Sum,
    /// First integer value.
    Int,
    /// First value converted to dBm.
    Dbm,
}

/// Unit of an optical power source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Unit {
    /// dBm.
    #[default]
    #[serde(rename = "dbm")]
    Dbm,
    /// Thousandths of a dBm.
    #[serde(rename = "0.001dbm")]
    MilliDbm,
    /// Tenths of a microwatt.
    #[serde(rename = "0.1uw")]
    DeciMicrowatt,
    /// Microwatts.
    #[serde(rename = "uw")]
    Microwatt,
}

impl Unit {
    /// Converts a reported value to dBm; `None` when it does not parse or is no power at all.
    pub fn to_dbm(self, raw: &str) -> Option<f64> {
        let t = raw.trim();
        let t = t
            .strip_suffix("dBm")
            .or_else(|| t.strip_suffix("dbm"))
            .unwrap_or(t)
            .trim();
        let v: f64 = t.parse().ok()?;
        if !v.is_finite() {
            return None;
        }
        match self {
            Unit::Dbm => Some(v),
            Unit::MilliDbm => Some(v / 1000.0),
            Unit::DeciMicrowatt => (v > 0.0).then(|| 10.0 * (v / 10_000.0).log10()),
            Unit::Microwatt => (v > 0.0).then(|| 10.0 * (v / 1_000.0).log10()),
        }
    }
}

/// One source of a field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Parameter path; `*` matches one instance number.
    pub path: String,
    /// Unit (dBm fields).
    #[serde(default)]
    pub unit: Unit,
    /// Skip zero values.
    #[serde(default)]
    pub nonzero: bool,
    /// Name prefixes this source must not match.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// One field of the view.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Name in the view.
    pub name: String,
    /// How matches combine.
    pub kind: FieldKind,
    /// Values that do not count (such as `0.0.0.0`).
    #[serde(default)]
    pub skip: Vec<String>,
    /// Sources in order of preference.
    pub sources: Vec<Source>,
}

/// The rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Fields.
    pub field: Vec<Field>,
}

/// A value of the view.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// dBm, rounded to 0.01.
    Dbm(f64),
    /// List of texts.
    List(Vec<String>),
}

/// Why a rules file is unusable.
#[derive(Debug, thiserror::Error)]
#[error("normalization rules {name}: {message}")]
pub struct RulesError {
    name: String,
    message: String,
}

impl Rules {
    /// Parses a rules file.
    pub fn parse(name: &str, text: &str) -> Result<Rules, RulesError> {
        let rules: Rules = toml::from_str(text).map_err(|e| RulesError {
            name: name.into(),
            message: e.to_string(),
        })?;
        for f in &rules.field {
            if f.sources.is_empty() {
                return Err(RulesError {
                    name: name.into(),
                    message: format!("field {} has no sources", f.name),
                });
            }
        }
        Ok(rules)
    }

    /// The shipped rules.
    pub fn builtin() -> Rules {
        // The embedded file is checked by the test `builtin_rules_parse`, so this cannot fail in a release.
        Self::parse("builtin", DEFAULT_RULES).unwrap_or(Rules { field: Vec::new() })
    }

    /// Every path the rules read (with `*`), to ask a CPE for what the view needs.
    pub fn paths(&self) -> Vec<String> {
        self.field
            .iter()
            .flat_map(|f| f.sources.iter().map(|s| s.path.clone()))
            .collect()
    }

    /// The view of a parameter tree.
    pub fn view(&self, params: &[ParameterValue]) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for f in &self.field {
            if let Some(v) = self.field_value(f, params) {
                out.insert(f.name.clone(), v);
            }
        }
        out
    }

    fn field_value(&self, f: &Field, params: &[ParameterValue]) -> Option<Value> {
        let mut list: Vec<String> = Vec::new();
        let mut sum: Option<i64> = None;
        for s in &f.sources {
            for value in matches(s, params) {
                let v = value.trim();
                if v.is_empty() || f.skip.iter().any(|k| k == v) {
                    continue;
                }
                match f.kind {
                    FieldKind::Text => return Some(Value::Text(v.to_owned())),
                    FieldKind::Int => {
                        if let Ok(i) = v.parse::<i64>() {
                            if s.nonzero && i == 0 {
                                continue;
                            }
                            return Some(Value::Int(i));
                        }
                    }
                    FieldKind::Dbm => {
                        if s.nonzero && v.parse::<f64>().is_ok_and(|x| x == 0.0) {
                            continue;
                        }
                        if let Some(d) = s.unit.to_dbm(v) {
                            return Some(Value::Dbm((d * 100.0).round() / 100.0));
                        }
                    }
                    FieldKind::List => {
                        if !list.iter().any(|x| x == v) {
                            list.push(v.to_owned());
                        }
                    }
                    FieldKind::Sum => {
                        if let Ok(i) = v.parse::<i64>() {
                            sum = Some(sum.unwrap_or(0).saturating_add(i));
                        }
                    }
                }
            }
            // A sum or list comes from the first data model that has it.
            if sum.is_some() || !list.is_empty() {
                break;
            }
        }
        match f.kind {
            FieldKind::List if !list.is_empty() => Some(Value::List(list)),
            FieldKind::Sum => sum.map(Value::Int),
            _ => None,
        }
    }
}

/// Values of the parameters matching a source, lowest instance numbers first.
fn matches<'a>(s: &Source, params: &'a [ParameterValue]) -> Vec<&'a str> {
    let pattern: Vec<&str> = s.path.split('.').collect();
    let mut found: Vec<(Vec<u32>, &str)> = params
        .iter()
        .filter(|p| !s.exclude.iter().any(|e| p.name.starts_with(e.as_str())))
        .filter_map(|p| {
            let segs: Vec<&str> = p.name.split('.').collect();
            if segs.len() != pattern.len() {
                return None;
            }
            let mut instances = Vec::new();
            for (seg, pat) in segs.iter().zip(&pattern) {
                if *pat == "*" {
                    instances.push(seg.parse::<u32>().ok()?);
                } else if seg != pat {
                    return None;
                }
            }
            Some((instances, p.value.as_str()))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(_, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: &str) -> ParameterValue {
        ParameterValue::string(name, value)
    }

    #[test]
    fn builtin_rules_parse() {
        let rules = Rules::parse("builtin", DEFAULT_RULES).unwrap();
        assert!(rules.field.iter().any(|f| f.name == "optical_rx_dbm"));
    }

    #[test]
    fn units_convert_to_dbm() {
        assert_eq!(Unit::Dbm.to_dbm("-12.71dBm"), Some(-12.71));
        assert_eq!(Unit::MilliDbm.to_dbm("-18500"), Some(-18.5));
        // 10000 tenths of a microwatt = 1 mW = 0 dBm.
        assert_eq!(Unit::DeciMicrowatt.to_dbm("10000"), Some(0.0));
        assert_eq!(Unit::Microwatt.to_dbm("100"), Some(-10.0));
        assert_eq!(
            Unit::DeciMicrowatt.to_dbm("0"),
            None,
            "no light is not a power"
        );
        assert_eq!(Unit::Dbm.to_dbm("n/a"), None);
    }

    #[test]
    fn vendor_variants_of_optical_power() {
        let rules = Rules::builtin();
        let cases = [
            (
                p(
                    "InternetGatewayDevice.WANDevice.1.X_ZTE-COM_WANPONInterfaceConfig.RXPower",
                    "2270",
                ),
                -6.44,
            ),
            (
                p(
                    "InternetGatewayDevice.WANDevice.1.X_CMCC_GponInterfaceConfig.RXPower",
                    "1000",
                ),
                -10.0,
            ),
            (
                p(
                    "InternetGatewayDevice.X_ALU_OntOpticalParam.RXPower",
                    "-19.5",
                ),
                -19.5,
            ),
            (
                p("Device.Optical.Interface.1.OpticalSignalLevel", "-21300"),
                -21.3,
            ),
        ];
        for (param, dbm) in cases {
            let view = rules.view(std::slice::from_ref(&param));
            assert_eq!(
                view.get("optical_rx_dbm"),
                Some(&Value::Dbm(dbm)),
                "{}",
                param.name
            );
        }
    }

    #[test]
    fn wildcards_take_the_lowest_instance_and_skip_values() {
        let rules = Rules::builtin();
        let tree = [
            p(
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.4.WANPPPConnection.1.ExternalIPAddress",
                "198.51.100.4",
            ),
            p(
                "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.ExternalIPAddress",
                "0.0.0.0",
            ),
            p(
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.TotalAssociations",
                "2",
            ),
            p(
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.5.TotalAssociations",
                "3",
            ),
            p(
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.5.SSID",
                "home-5G",
            ),
            p(
                "InternetGatewayDevice.LANDevice.1.WLANConfiguration.1.SSID",
                "home",
            ),
        ];
        let view = rules.view(&tree);
        assert_eq!(view["wan_ip"], Value::Text("198.51.100.4".into()));
        assert_eq!(view["wifi_clients"], Value::Int(5));
        assert_eq!(
            view["ssids"],
            Value::List(vec!["home".into(), "home-5G".into()])
        );
        assert!(!view.contains_key("optical_rx_dbm"));
    }
}
