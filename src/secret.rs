//! A secret's text: an upstream `api_key`, a virtual `key`, the `master_key`.
//!
//! Owns: [`Secret`], a string that is read as its text only through [`Secret::expose`]
//! (no `Deref`, no `Display`: every place a secret leaves from is a grep away) and never
//! shown by `Debug`: the config and the catalog derive `Debug`,
//! and one `{:?}` of either in a log line, a panic message or an assertion would otherwise
//! print every key the gateway holds. Serialises as the plain string, so a config written
//! back (the LiteLLM emitter) and the schema are what they were. Does not own keeping
//! secrets out of upstream text (`redact`) nor what makes a secret valid (`config`).

use std::fmt;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// A secret string; `Debug` prints `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// A string, inline: the schema says what the file holds, not how the gateway keeps it.
impl JsonSchema for Secret {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        String::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        String::json_schema(generator)
    }
}

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret's text, to send or hash: every use is a place it leaves from.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::redact::REDACTED)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Secret {
        Secret(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text_and_serde_sees_a_plain_string() {
        let s = Secret::new("sk-very-secret-123");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#""sk-very-secret-123""#
        );
        let back: Secret = serde_json::from_str(r#""sk-x""#).unwrap();
        assert_eq!(back.expose(), "sk-x");
    }
}
