//! Configuration loading shared by both binaries: a TOML file, overridden by environment variables, into a
//! typed struct that rejects unknown keys, with errors that name the key and where it came from.
//!
//! Environment overrides: `PREFIX__SECTION__KEY=value` sets `section.key` (segments lower-cased), for
//! example `OCTOISP_AGENT__OUTBOX__MAX_MB=512`. The value is read as a TOML literal when it parses as one
//! (`512`, `true`, `"text"`, `["a", "b"]`) and as a plain string otherwise. The caller passes the
//! environment in, so [`load`] stays pure; [`read`] is the one function here that touches the file system.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a binary's configuration is unusable: its file, a key, or values that do not fit together (each binary's
/// own checks).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A key is wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The values are inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// The name and text of a configuration file for [`load`]: `path`'s, or `(defaults)` and an empty document
/// when there is no file (defaults and environment only).
pub fn read(path: Option<&Path>) -> Result<(String, String), ConfigError> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.into(),
                source,
            })?;
            Ok((p.display().to_string(), text))
        }
        None => Ok(("(defaults)".to_owned(), String::new())),
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file is not valid TOML.
    #[error("{source_name}: not valid TOML: {message}")]
    Syntax {
        /// File name.
        source_name: String,
        /// Parser message, with line and column.
        message: String,
    },
    /// A key is unknown, missing or of the wrong type.
    #[error("{source_name}: key `{key}`: {message}")]
    Key {
        /// Where the configuration came from.
        source_name: String,
        /// Dotted path of the key.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// An environment variable does not map to a key.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What was wrong.
        message: String,
    },
}

/// Parses `text` (or an empty document), applies the environment overrides that start with `prefix`
/// (for example `OCTOISP_AGENT`), and deserializes into `T`.
pub fn load<T: DeserializeOwned>(
    source_name: &str,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
) -> Result<T, SettingsError> {
    let mut table: toml::Table =
        text.parse()
            .map_err(|err: toml::de::Error| SettingsError::Syntax {
                source_name: source_name.to_owned(),
                message: err.to_string().trim_end().to_owned(),
            })?;
    let marker = format!("{prefix}__");
    let mut overridden = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(&marker) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(SettingsError::Env {
                var,
                message: "empty key segment".into(),
            });
        }
        set_path(&mut table, &path, literal(&value)).map_err(|message| SettingsError::Env {
            var: var.clone(),
            message,
        })?;
        overridden.push(var);
    }
    let source = if overridden.is_empty() {
        source_name.to_owned()
    } else {
        format!("{source_name} (with {})", overridden.join(", "))
    };
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
        let key = err.path().to_string();
        SettingsError::Key {
            source_name: source,
            key,
            message: err.into_inner().to_string(),
        }
    })
}

fn literal(value: &str) -> toml::Value {
    match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("no key")?;
    let mut cur = table;
    for seg in parents {
        let entry = cur
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{seg}` is not a section"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[serde(default)]
        outbox: Outbox,
        name: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outbox {
        #[serde(default)]
        max_mb: u64,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_overrides_file() {
        let c: Conf = load(
            "a.toml",
            "[outbox]\nmax_mb = 5\n",
            env(&[("X__OUTBOX__MAX_MB", "7")]),
            "X",
        )
        .unwrap();
        assert_eq!(c.outbox.max_mb, 7);
        let c: Conf = load("a.toml", "", env(&[("X__NAME", "pop centro")]), "X").unwrap();
        assert_eq!(c.name.as_deref(), Some("pop centro"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load::<Conf>("a.toml", "[outbox]\nmax_mbb = 5\n", env(&[]), "X").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("a.toml") && text.contains("outbox") && text.contains("max_mbb"),
            "{text}"
        );
        let err =
            load::<Conf>("a.toml", "[outbox]\nmax_mb = \"lots\"\n", env(&[]), "X").unwrap_err();
        assert!(err.to_string().contains("outbox.max_mb"), "{err}");
    }

    #[test]
    fn bad_syntax_and_env() {
        assert!(matches!(
            load::<Conf>("a.toml", "[outbox", env(&[]), "X"),
            Err(SettingsError::Syntax { .. })
        ));
        let err = load::<Conf>(
            "a.toml",
            "name = \"a\"\n",
            env(&[("X__NAME__DEEP", "1")]),
            "X",
        )
        .unwrap_err();
        assert!(matches!(err, SettingsError::Env { .. }), "{err}");
        let err = load::<Conf>("a.toml", "", env(&[("X__BOGUS", "1")]), "X").unwrap_err();
        assert!(
            err.to_string().contains("X__BOGUS") && err.to_string().contains("bogus"),
            "{err}"
        );
    }
}
