//! Reading a config: the file, the embedded default, or a tenant sent to
//! the admin API. The only file I/O of `config`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::{Config, TenantConfig};

/// The configuration `outpost serve` uses when given no arguments: a demo
/// tenant running the `cache-key` policy in front of the built-in demo origin.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A config that cannot be used. Every variant names where it came from
/// (a file, the embedded default, an admin request) and, where it can, the
/// field and line at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not valid TOML, or a value of the wrong type or syntax; the message
    /// carries the line.
    #[error("invalid config {source_name}: {}{message}", field_prefix(field))]
    Parse {
        source_name: String,
        /// The field's path, e.g. `tenant[0].backends.origin.url` (empty
        /// when the error is not in one field).
        field: String,
        message: String,
    },
    /// Valid syntax, but a value that does not fit the rest, or one the
    /// node could not use (a policy that does not load).
    #[error("invalid config {source_name}{}: {error}", line_suffix(*line))]
    Field {
        source_name: String,
        error: FieldError,
        /// The field's line, when the config came from text that has it.
        line: Option<usize>,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}

impl ConfigError {
    /// A field error from `source_name`, with no line to name.
    pub fn field(source_name: &str, error: FieldError) -> ConfigError {
        ConfigError::Field {
            source_name: source_name.to_string(),
            error,
            line: None,
        }
    }
}

/// A value that does not fit: the field's path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error one level down, e.g. `tenant[2].` + `policy`.
    pub fn within(self, prefix: &str) -> FieldError {
        FieldError {
            field: format!("{prefix}{}", self.field),
            message: self.message,
        }
    }
}

/// Deserializes TOML text, keeping the path of a field that fails.
fn parse<T: DeserializeOwned>(text: &str, source_name: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| ConfigError::Parse {
        source_name: source_name.to_string(),
        field: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::from_toml(DEFAULT_TOML, "<embedded default>", Path::new("."))
            .expect("the embedded default config is valid")
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::from_toml(&text, &path.display().to_string(), &base)
    }

    /// Parses and checks config text; relative policy paths are resolved
    /// against `base_dir`.
    pub fn from_toml(
        text: &str,
        source_name: &str,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = parse(text, source_name)?;
        config.base_dir = base_dir.to_path_buf();
        config.source_text = Some(text.into());
        config.source_name = source_name.to_string();
        config
            .validate()
            .map_err(|e| config.field_error(source_name, e))?;
        Ok(config)
    }

    /// A field error in this config, with the field's line when the config
    /// still is the text it was read from.
    pub fn field_error(&self, source_name: &str, error: FieldError) -> ConfigError {
        let line = self
            .source_text
            .as_deref()
            .and_then(|text| super::locate::line_of(text, &error.field));
        ConfigError::Field {
            source_name: source_name.to_string(),
            error,
            line,
        }
    }

    /// Forgets the text the config was read from: after an edit (a tenant
    /// added or removed through the admin API) its lines no longer match.
    pub fn detach_source(&mut self) {
        self.source_text = None;
    }
}

impl TenantConfig {
    /// Parses one tenant (the fields of a `[[tenant]]` table); the checks
    /// against the rest of the config come when it is applied.
    pub fn from_toml(text: &str, source_name: &str) -> Result<TenantConfig, ConfigError> {
        parse(text, source_name)
    }
}
