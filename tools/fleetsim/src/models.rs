//! CPE data models: parameter trees of real devices (GenieACS CSV exports, `tools/fleetsim/data/`), reduced to
//! what a simulated CPE keeps in memory (its Inform parameters and a bounded subset of the tree).

use std::path::Path;

use anyhow::{Context, bail};

/// One parameter of a model: name, value, xsd type, writable.
#[derive(Debug, Clone)]
pub struct Param {
    /// Full path.
    pub name: String,
    /// Value as the device reported it.
    pub value: String,
    /// `xsd:string`, `xsd:unsignedInt`...
    pub xsd_type: String,
    /// Writable by the ACS.
    pub writable: bool,
}

/// A device model loaded from a CSV dump.
#[derive(Debug, Clone)]
pub struct Model {
    /// File it came from (for messages).
    pub source: String,
    /// DeviceID.Manufacturer.
    pub manufacturer: String,
    /// DeviceID.OUI.
    pub oui: String,
    /// DeviceID.ProductClass.
    pub product_class: String,
    /// `InternetGatewayDevice.` (TR-098) or `Device.` (TR-181).
    pub root: String,
    /// Every parameter (not objects), in file order.
    pub params: Vec<Param>,
}

/// A model ready for building many CPEs: its Inform parameters and reduced tree computed once.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The model.
    pub model: Model,
    /// [`Model::inform_params`].
    pub inform: Vec<String>,
    /// [`Model::reduced`] with the plan's `tree_params`.
    pub reduced: Vec<Param>,
    /// The Inform parameters alone (the faulting CPEs' tree).
    pub inform_only: Vec<Param>,
}

impl Prepared {
    /// Prepares `model` for CPEs keeping `tree_params` parameters besides the Inform ones.
    pub fn new(model: Model, tree_params: usize) -> Prepared {
        let inform = model.inform_params();
        let reduced = model.reduced(tree_params).into_iter().cloned().collect();
        let inform_only = model
            .params
            .iter()
            .filter(|p| inform.contains(&p.name))
            .cloned()
            .collect();
        Prepared {
            model,
            inform,
            reduced,
            inform_only,
        }
    }
}

/// Suffixes of the parameters a CPE sends in every Inform (TR-069 forced Inform parameters), first match each.
const INFORM_SUFFIXES: &[&str] = &[
    "DeviceInfo.HardwareVersion",
    "DeviceInfo.SoftwareVersion",
    "DeviceInfo.ProvisioningCode",
    "ManagementServer.ConnectionRequestURL",
    "ManagementServer.ParameterKey",
    "ExternalIPAddress",
];

/// Prefixes kept first when the tree is reduced (what the ACS's normalized view reads).
const KEEP_FIRST: &[&str] = &[
    "DeviceInfo.",
    "ManagementServer.",
    "X_GponInterafceConfig",
    "Optical.",
    "WANPPPConnection.1.",
    "WANIPConnection.1.",
    "WLANConfiguration.1.",
    "WiFi.SSID.1.",
];

/// Splits CSV text into rows of fields (RFC 4180: quoted fields, doubled quotes, newlines inside quotes).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

impl Model {
    /// Parses a GenieACS CSV export (columns Parameter, Object, _, Writable, _, Value, Value type, ...).
    pub fn parse(source: &str, text: &str) -> anyhow::Result<Model> {
        let rows = parse_csv(text);
        let Some(header) = rows.first() else {
            bail!("{source}: empty file");
        };
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .with_context(|| format!("{source}: no column {name:?}"))
        };
        let (c_param, c_obj, c_wr, c_val, c_ty) = (
            col("Parameter")?,
            col("Object")?,
            col("Writable")?,
            col("Value")?,
            col("Value type")?,
        );
        let mut m = Model {
            source: source.to_owned(),
            manufacturer: String::new(),
            oui: String::new(),
            product_class: String::new(),
            root: String::new(),
            params: Vec::new(),
        };
        for r in rows.iter().skip(1) {
            let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
            let name = get(c_param);
            match name {
                "DeviceID.Manufacturer" => m.manufacturer = get(c_val).to_owned(),
                "DeviceID.OUI" => m.oui = get(c_val).to_owned(),
                "DeviceID.ProductClass" => m.product_class = get(c_val).to_owned(),
                _ => {}
            }
            if name.is_empty() || name.starts_with("DeviceID.") || name.starts_with("Events.") {
                continue;
            }
            if !name.starts_with("InternetGatewayDevice.") && !name.starts_with("Device.") {
                continue;
            }
            if get(c_obj) == "true" || get(c_ty).is_empty() {
                continue;
            }
            if m.root.is_empty() {
                m.root = name.split_inclusive('.').next().unwrap_or("").to_owned();
            }
            m.params.push(Param {
                name: name.to_owned(),
                value: get(c_val).to_owned(),
                xsd_type: get(c_ty).to_owned(),
                writable: get(c_wr) == "true",
            });
        }
        if m.oui.is_empty() || m.params.is_empty() {
            bail!("{source}: no DeviceID.OUI or no parameters: not a GenieACS device export");
        }
        Ok(m)
    }

    /// Loads every `*.csv` of `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Model>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the models directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no *.csv models in {}", dir.display());
        }
        files
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                Model::parse(&p.display().to_string(), &text)
            })
            .collect()
    }

    /// The Inform parameters of this model (first parameter ending with each forced-Inform suffix).
    pub fn inform_params(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in INFORM_SUFFIXES {
            if let Some(p) = self.params.iter().find(|p| p.name.ends_with(s)) {
                out.push(p.name.clone());
            }
        }
        out
    }

    /// At most `n` parameters besides the Inform ones: the normalized view's sources first, then file order.
    pub fn reduced(&self, n: usize) -> Vec<&Param> {
        let inform = self.inform_params();
        let mut out: Vec<&Param> = self
            .params
            .iter()
            .filter(|p| inform.contains(&p.name))
            .collect();
        let mut rest: Vec<&Param> = self
            .params
            .iter()
            .filter(|p| !inform.contains(&p.name))
            .collect();
        rest.sort_by_key(|p| {
            KEEP_FIRST
                .iter()
                .position(|k| p.name.contains(k))
                .unwrap_or(KEEP_FIRST.len())
        });
        out.extend(rest.into_iter().take(n));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_models_load() {
        let rows = parse_csv("a,b\n\"x, \"\"y\"\"\",2\n");
        assert_eq!(rows[1], vec!["x, \"y\"".to_owned(), "2".to_owned()]);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        let models = Model::load_dir(&dir).expect("models load");
        assert!(models.len() >= 3);
        for m in &models {
            let inform = m.inform_params();
            assert!(
                inform.iter().any(|p| p.ends_with("SoftwareVersion")),
                "{}: {inform:?}",
                m.source
            );
            assert!(m.reduced(40).len() <= inform.len() + 40);
        }
    }
}
