//! Reading a request frame's meta: which function it calls and what its
//! data is. This is our convention over SSF rather than part of the
//! format, so it is kept apart from the codec.

use serde_json::Value as Json;

use super::invalid;

/// What a request frame's meta says about the call (our convention for a
/// serving execution: each request frame is one call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// `function`: the function to call; `None` (absent, null or "") means
    /// the task's default function.
    pub function: Option<String>,
    /// `content_type`: what the data is; `None` if absent, null or "".
    pub content_type: Option<String>,
}

impl RequestMeta {
    /// Parses a frame's meta. Empty (or blank) meta and `{}` give both
    /// fields `None`; keys other than `function` and `content_type` are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFrame`] if the meta is not UTF-8 JSON, is JSON but not
    /// an object, or has a `function` / `content_type` that is neither a
    /// string nor null.
    ///
    /// [`Error::InvalidFrame`]: crate::error::Error::InvalidFrame
    pub fn parse(meta: &[u8]) -> crate::Result<RequestMeta> {
        if meta.iter().all(u8::is_ascii_whitespace) {
            return Ok(RequestMeta::default());
        }
        let value: Json = serde_json::from_slice(meta)
            .map_err(|e| invalid(format!("meta is not valid JSON: {e}")))?;
        let Json::Object(map) = value else {
            return Err(invalid(format!(
                "meta must be a JSON object, not {}",
                json_kind(&value)
            )));
        };
        let field = |key: &str| -> crate::Result<Option<String>> {
            match map.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) if s.is_empty() => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(format!(
                    "meta `{key}` must be a string, not {}",
                    json_kind(other)
                ))),
            }
        };
        Ok(RequestMeta {
            function: field("function")?,
            content_type: field("content_type")?,
        })
    }
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}
