//! A tenant's secrets, read on each node when the tenant is applied from
//! where its config says (an environment variable or a file); the config,
//! etcd and the admin API only ever hold those references.
//!
//! A value never leaves this module except as the bytes a signature is
//! computed with: it has no `Display`, its `Debug` prints a placeholder,
//! and the errors name the secret and its source, never its content.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;

use crate::config::{FieldError, SecretEncoding, SecretSource};

/// A secret's bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// The bytes, for a MAC or a hash.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Its length in bytes (for "too short" errors).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

impl From<&[u8]> for Secret {
    fn from(bytes: &[u8]) -> Secret {
        Secret(bytes.into())
    }
}

/// A tenant's resolved secrets, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, Secret>);

impl Secrets {
    /// Reads every declared secret. The error names the field
    /// (`secrets.NAME.env` or `.file`) and what is wrong, never a value.
    pub fn resolve(
        declared: &BTreeMap<String, SecretSource>,
        base_dir: &Path,
    ) -> Result<Secrets, FieldError> {
        let mut secrets = BTreeMap::new();
        for (name, source) in declared {
            let secret = read(source, base_dir).map_err(|(field, message)| {
                FieldError::new(format!("secrets.{name}.{field}"), message)
            })?;
            secrets.insert(name.clone(), secret);
        }
        Ok(Secrets(secrets))
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }
}

/// One secret: the field at fault and why, on failure.
fn read(source: &SecretSource, base_dir: &Path) -> Result<Secret, (&'static str, String)> {
    let (field, text) = match (&source.env, source.resolved_file(base_dir)) {
        (Some(var), _) => match std::env::var_os(var) {
            Some(v) => ("env", v.into_encoded_bytes()),
            None => {
                return Err((
                    "env",
                    format!("the environment variable {var} is not set on this node"),
                ))
            }
        },
        (None, Some(path)) => match std::fs::read(&path) {
            Ok(mut bytes) => {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                ("file", bytes)
            }
            Err(e) => return Err(("file", format!("cannot read {}: {e}", path.display()))),
        },
        (None, None) => return Err(("env", "no source (env or file)".into())),
    };
    let bytes = match source.encoding {
        SecretEncoding::Raw => text,
        SecretEncoding::Hex => crate::http::hex::decode(text.trim_ascii())
            .ok_or((field, "is not valid hex".to_string()))?,
        SecretEncoding::Base64 => {
            decode_base64(&text).ok_or((field, "is not valid base64".to_string()))?
        }
    };
    if bytes.is_empty() {
        return Err((field, "is empty".into()));
    }
    Ok(Secret(bytes.into()))
}

fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let text: Vec<u8> = text
        .trim_ascii()
        .iter()
        .copied()
        .filter(|&b| b != b'=')
        .collect();
    STANDARD_NO_PAD
        .decode(&text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(&text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(env: Option<&str>, file: Option<&Path>, encoding: SecretEncoding) -> SecretSource {
        SecretSource {
            env: env.map(str::to_string),
            file: file.map(Path::to_path_buf),
            encoding,
        }
    }

    #[test]
    fn secrets_are_read_from_files_and_decoded_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("outpost-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("raw"), b"correct horse battery staple\n").unwrap();
        std::fs::write(dir.join("hex"), b"00ff10\n").unwrap();
        let declared = BTreeMap::from([
            (
                "raw".to_string(),
                source(None, Some(Path::new("raw")), SecretEncoding::Raw),
            ),
            (
                "hex".to_string(),
                source(None, Some(Path::new("hex")), SecretEncoding::Hex),
            ),
        ]);
        let secrets = Secrets::resolve(&declared, &dir).unwrap();
        assert_eq!(
            secrets.get("raw").unwrap().expose(),
            b"correct horse battery staple"
        );
        assert_eq!(secrets.get("hex").unwrap().expose(), [0, 255, 16]);
        let printed = format!("{secrets:?}");
        assert!(!printed.contains("horse"), "{printed}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_secret_names_its_field_and_source_not_a_value() {
        let declared = BTreeMap::from([(
            "signing".to_string(),
            source(
                Some("OUTPOST_TEST_SURELY_UNSET_VARIABLE"),
                None,
                SecretEncoding::Raw,
            ),
        )]);
        let e = Secrets::resolve(&declared, Path::new(".")).unwrap_err();
        assert_eq!(e.field, "secrets.signing.env");
        assert!(
            e.message
                .contains("OUTPOST_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{e}"
        );
        let declared = BTreeMap::from([(
            "k".to_string(),
            source(
                None,
                Some(Path::new("/nonexistent/key")),
                SecretEncoding::Raw,
            ),
        )]);
        let e = Secrets::resolve(&declared, Path::new(".")).unwrap_err();
        assert_eq!(e.field, "secrets.k.file");
    }
}
