//! Device fingerprinting from data: ordered rules (sysObjectID prefixes, sysDescr patterns, probe OIDs,
//! exclusions) read from `agent/fingerprints/rules.toml`, and the IANA enterprise-number table for devices no rule
//! knows. Classification is pure ([`Rules::classify`]); [`fingerprint`] does the two GETs it needs.
//!
//! A rule matches when every condition it states holds: the sysObjectID is under one of `sys_object_id` (when
//! given) and under none of `not_sys_object_id`; `sys_descr` matches and `not_sys_descr` does not; every `probe`
//! OID answered (and matched its pattern, when given). The first matching rule wins, so specific rules (an OEM
//! OID refined by sysDescr) come before general ones. Named groups `model` and `version` of `sys_descr` fill those
//! fields; `model_oid` / `version_oid` values override them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::ber::Oid;
use super::client::{Session, SnmpError};
use super::enterprises::Enterprises;
use super::pdu::Value;

/// The rules shipped with the agent.
pub const BUILTIN_RULES: &str = include_str!("../../fingerprints/rules.toml");
/// The IANA enterprise numbers shipped with the agent: the whole registry (see docs/SNMP.md).
pub const BUILTIN_ENTERPRISES: &str = include_str!("../../fingerprints/enterprise-numbers.tsv");

/// sysDescr.0.
pub const SYS_DESCR: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 1, 0];
/// sysObjectID.0.
pub const SYS_OBJECT_ID: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 2, 0];
/// sysName.0.
pub const SYS_NAME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];

/// Why rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Not valid TOML for the schema.
    #[error("fingerprint rules {source_name}: {message}")]
    Parse {
        /// File.
        source_name: String,
        /// Parser message.
        message: String,
    },
    /// A regex does not compile.
    #[error("fingerprint rule {rule}: bad pattern: {message}")]
    Pattern {
        /// Rule name.
        rule: String,
        /// Regex error.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rule: Vec<RuleDef>,
}

/// One rule as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    name: String,
    vendor: String,
    os: Option<String>,
    model: Option<String>,
    #[serde(default)]
    sys_object_id: Vec<Oid>,
    #[serde(default)]
    not_sys_object_id: Vec<Oid>,
    sys_descr: Option<String>,
    not_sys_descr: Option<String>,
    #[serde(default)]
    probe: Vec<ProbeDef>,
    model_oid: Option<Oid>,
    version_oid: Option<Oid>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeDef {
    oid: Oid,
    matches: Option<String>,
}

#[derive(Debug)]
struct Rule {
    def: RuleDef,
    descr: Option<Regex>,
    not_descr: Option<Regex>,
    probes: Vec<(Oid, Option<Regex>)>,
}

/// The compiled rules and the enterprise table.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    enterprises: Enterprises,
}

/// What a device is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Vendor (brand), or the IANA enterprise name when no rule matched.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Operating system or product family.
    pub os: Option<String>,
    /// Software version.
    pub version: Option<String>,
    /// sysObjectID.0.
    pub sys_object_id: Option<String>,
    /// sysDescr.0.
    pub sys_descr: Option<String>,
    /// sysName.0.
    pub sys_name: Option<String>,
    /// IANA name of the sysObjectID's enterprise (often the OEM rather than the brand).
    pub enterprise: Option<String>,
    /// The rule that matched.
    pub rule: Option<String>,
}

fn compile(rule: &str, p: &Option<String>) -> Result<Option<Regex>, RulesError> {
    p.as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| RulesError::Pattern {
            rule: rule.into(),
            message: e.to_string(),
        })
}

impl Rules {
    /// The rules and enterprise table shipped with the agent.
    pub fn builtin() -> &'static Rules {
        static RULES: OnceLock<Rules> = OnceLock::new();
        RULES.get_or_init(|| {
            match Rules::parse(
                "fingerprints/rules.toml",
                BUILTIN_RULES,
                BUILTIN_ENTERPRISES,
            ) {
                Ok(r) => r,
                Err(err) => {
                    // The built-in files are checked by a unit test; this is not reachable in a released build.
                    tracing::error!(error = %err, "Built-in fingerprint rules are invalid.");
                    Rules {
                        rules: Vec::new(),
                        enterprises: Enterprises::default(),
                    }
                }
            }
        })
    }

    /// Parses rules (TOML) and an enterprise table (`number<TAB>name` lines, `#` comments; see [`Enterprises`]).
    pub fn parse(
        source_name: &str,
        rules: &str,
        enterprises: impl Into<Cow<'static, str>>,
    ) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(rules).map_err(|e| RulesError::Parse {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        let mut out = Vec::with_capacity(file.rule.len());
        for def in file.rule {
            let descr = compile(&def.name, &def.sys_descr)?;
            let not_descr = compile(&def.name, &def.not_sys_descr)?;
            let mut probes = Vec::new();
            for p in &def.probe {
                probes.push((p.oid.clone(), compile(&def.name, &p.matches)?));
            }
            out.push(Rule {
                def,
                descr,
                not_descr,
                probes,
            });
        }
        Ok(Rules {
            rules: out,
            enterprises: Enterprises::parse(enterprises),
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The IANA name of enterprise `n`.
    pub fn enterprise(&self, n: u32) -> Option<&str> {
        self.enterprises.name(n)
    }

    /// Number of enterprises in the table.
    pub fn enterprise_count(&self) -> usize {
        self.enterprises.len()
    }

    fn static_match(rule: &Rule, oid: Option<&Oid>, descr: &str) -> bool {
        let d = &rule.def;
        if !d.sys_object_id.is_empty()
            && !oid.is_some_and(|o| d.sys_object_id.iter().any(|p| o.starts_with(p)))
        {
            return false;
        }
        if oid.is_some_and(|o| d.not_sys_object_id.iter().any(|p| o.starts_with(p))) {
            return false;
        }
        if rule.descr.as_ref().is_some_and(|r| !r.is_match(descr)) {
            return false;
        }
        !rule.not_descr.as_ref().is_some_and(|r| r.is_match(descr))
    }

    /// The OIDs worth fetching for a device (probes, model and version OIDs of the rules whose static conditions
    /// hold), so classification needs one more GET at most.
    pub fn wanted_oids(&self, sys_object_id: Option<&Oid>, sys_descr: &str) -> Vec<Oid> {
        let mut out: Vec<Oid> = Vec::new();
        for r in self
            .rules
            .iter()
            .filter(|r| Self::static_match(r, sys_object_id, sys_descr))
        {
            let extra = r
                .probes
                .iter()
                .map(|p| &p.0)
                .chain(&r.def.model_oid)
                .chain(&r.def.version_oid);
            for o in extra {
                if !out.contains(o) {
                    out.push(o.clone());
                }
            }
            if r.probes.is_empty() {
                break; // this rule matches whatever the probes say: later rules cannot win
            }
        }
        out
    }

    /// Classifies a device from its sysObjectID, sysDescr and the values of [`Rules::wanted_oids`] (`probes`).
    pub fn classify(
        &self,
        sys_object_id: Option<&Oid>,
        sys_descr: &str,
        probes: &HashMap<Oid, Value>,
    ) -> Fingerprint {
        let enterprise_num = sys_object_id.and_then(|o| match o.arcs() {
            [1, 3, 6, 1, 4, 1, n, ..] => Some(*n),
            _ => None,
        });
        let enterprise = enterprise_num
            .and_then(|n| self.enterprise(n))
            .map(str::to_owned);
        let mut fp = Fingerprint {
            sys_object_id: sys_object_id.map(ToString::to_string),
            sys_descr: Some(sys_descr.to_owned()),
            enterprise: enterprise.clone(),
            ..Fingerprint::default()
        };
        let text_of = |o: &Oid| {
            probes
                .get(o)
                .filter(|v| !v.is_exception())
                .and_then(|v| v.as_text().or_else(|| v.as_f64().map(|f| f.to_string())))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        for rule in &self.rules {
            if !Self::static_match(rule, sys_object_id, sys_descr) {
                continue;
            }
            let probes_ok = rule.probes.iter().all(|(o, re)| match text_of(o) {
                Some(t) => re.as_ref().is_none_or(|r| r.is_match(&t)),
                None => false,
            });
            if !probes_ok {
                continue;
            }
            let d = &rule.def;
            fp.vendor = Some(d.vendor.clone());
            fp.os = d.os.clone();
            fp.model = d.model.clone();
            fp.rule = Some(d.name.clone());
            if let Some(caps) = rule.descr.as_ref().and_then(|r| r.captures(sys_descr)) {
                if let Some(m) = caps.name("model") {
                    fp.model = Some(m.as_str().trim().to_owned());
                }
                if let Some(v) = caps.name("version") {
                    fp.version = Some(v.as_str().trim().to_owned());
                }
            }
            if let Some(m) = d.model_oid.as_ref().and_then(text_of) {
                fp.model = Some(m);
            }
            if let Some(v) = d.version_oid.as_ref().and_then(text_of) {
                fp.version = Some(v);
            }
            return fp;
        }
        fp.vendor = enterprise;
        fp
    }
}

/// Fingerprints the device behind `session` with `rules`.
pub async fn fingerprint(session: &Session, rules: &Rules) -> Result<Fingerprint, SnmpError> {
    let sys = [
        Oid(SYS_DESCR.to_vec()),
        Oid(SYS_OBJECT_ID.to_vec()),
        Oid(SYS_NAME.to_vec()),
    ];
    let vbs = session.get(&sys).await?;
    let mut descr = String::new();
    let mut object_id = None;
    let mut name = None;
    for vb in vbs {
        match (vb.oid.arcs(), vb.value) {
            (SYS_DESCR, v) => descr = v.as_text().unwrap_or_default(),
            (SYS_OBJECT_ID, Value::Oid(o)) => object_id = Some(o),
            (SYS_NAME, v) => name = v.as_text(),
            _ => {}
        }
    }
    let wanted = rules.wanted_oids(object_id.as_ref(), &descr);
    let mut probes = HashMap::new();
    if !wanted.is_empty() {
        // One GET; an agent that answers noSuchName (v1) for one of them fails the whole GET, so fall back to one
        // GET per OID.
        match session.get(&wanted).await {
            Ok(vbs) => probes.extend(vbs.into_iter().map(|v| (v.oid, v.value))),
            Err(SnmpError::Status { .. }) => {
                for o in &wanted {
                    if let Ok(vbs) = session.get(std::slice::from_ref(o)).await {
                        probes.extend(vbs.into_iter().map(|v| (v.oid, v.value)));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut fp = rules.classify(object_id.as_ref(), &descr, &probes);
    fp.sys_name = name;
    Ok(fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(oid: &str, descr: &str) -> Fingerprint {
        let rules = Rules::builtin();
        let o: Oid = oid.parse().unwrap();
        rules.classify(Some(&o), descr, &HashMap::new())
    }

    fn vendor_os(fp: &Fingerprint) -> (Option<&str>, Option<&str>) {
        (fp.vendor.as_deref(), fp.os.as_deref())
    }

    #[test]
    fn builtin_files_parse() {
        let r = Rules::parse("rules.toml", BUILTIN_RULES, BUILTIN_ENTERPRISES).unwrap();
        assert!(r.len() >= 30, "{}", r.len());
        assert!(r.enterprise_count() >= 62_000, "{}", r.enterprise_count());
        assert_eq!(r.enterprise(9), Some("ciscoSystems"));
        assert_eq!(r.enterprise(0), Some("Reserved"));
    }

    #[test]
    fn common_devices() {
        let fp = classify("1.3.6.1.4.1.14988.1", "RouterOS CCR1036-8G-2S+");
        assert_eq!(vendor_os(&fp), (Some("MikroTik"), Some("RouterOS")));
        assert_eq!(fp.model.as_deref(), Some("CCR1036-8G-2S+"));
        let fp = classify("1.3.6.1.4.1.14988.2", "CSS326-24G-2S+ SwOS v2.13");
        assert_eq!(vendor_os(&fp), (Some("MikroTik"), Some("SwOS")));
        let fp = classify(
            "1.3.6.1.4.1.9.1.1208",
            "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(2)E7, RELEASE SOFTWARE (fc3)",
        );
        assert_eq!(vendor_os(&fp), (Some("Cisco"), Some("IOS")));
        assert_eq!(fp.version.as_deref(), Some("15.2(2)E7"));
        let fp = classify(
            "1.3.6.1.4.1.8072.3.2.10",
            "Linux router 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC x86_64",
        );
        assert_eq!(vendor_os(&fp), (Some("net-snmp"), Some("Linux")));
        assert_eq!(fp.version.as_deref(), Some("6.1.0-18-amd64"));
    }

    #[test]
    fn oem_oids_are_refined_by_sys_descr() {
        // Fiberhome OLTs: matched by sysDescr whatever the OID.
        let fp = classify("1.3.6.1.4.1.5875.800.1001.10", "AN5516-06");
        assert_eq!(vendor_os(&fp), (Some("Fiberhome"), Some("AN5516")));
        // Parks switches answer with an OEM OID.
        let fp = classify("1.3.6.1.4.1.27514.1.1", "Parks Fiberlink 4100");
        assert_eq!(fp.vendor.as_deref(), Some("Parks"));
        // Datacom on a Broadcom OID.
        let fp = classify("1.3.6.1.4.1.4413", "DmOS 5.8.0 DM4170");
        assert_eq!(vendor_os(&fp), (Some("Datacom"), Some("DmOS")));
        // And a plain Broadcom reference design stays Broadcom (IANA's name for 4413).
        let fp = classify("1.3.6.1.4.1.4413", "Broadcom FASTPATH Switching");
        assert_eq!(fp.vendor.as_deref(), Some("Broadcom Limited"));
    }

    #[test]
    fn unknown_device_gets_its_enterprise_name() {
        let fp = classify(
            "1.3.6.1.4.1.2636.99.99",
            "something nobody wrote a rule for",
        );
        assert_eq!(fp.enterprise.as_deref(), Some("Juniper Networks, Inc."));
        let fp = classify("1.3.6.1.4.1.4294967.1", "???");
        assert_eq!(fp.vendor, None);
        assert_eq!(fp.rule, None);
    }

    #[test]
    fn probes_decide() {
        let rules = Rules::builtin();
        let o: Oid = "1.3.6.1.4.1.41112.1.4".parse().unwrap();
        let wanted = rules.wanted_oids(Some(&o), "Linux 2.6.32.71 #1 Fri Nov 1 2019 mips");
        assert!(!wanted.is_empty());
        let mut probes = HashMap::new();
        probes.insert(
            wanted[0].clone(),
            Value::OctetString(b"XW.ar934x.v6.3.6.33330.210818.1801".to_vec()),
        );
        let fp = rules.classify(Some(&o), "Linux 2.6.32.71", &probes);
        assert_eq!(vendor_os(&fp), (Some("Ubiquiti"), Some("airOS")));
    }
}
