//! Structured data as parameters and results (feature `json`): `Json<T>`
//! for any serde type, carried as JSON text (a `StringValue`, or bytes), so
//! a plugin takes and returns records without encoding them by hand.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{FromParam, IntoOutput, PluginError, Value, ValueRef};

/// A parameter or result that is JSON on the wire and `T` in the plugin.
///
/// ```
/// use spear_plugin_sdk::prelude::*;
/// use spear_plugin_sdk::Json;
///
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Order { id: u32, items: Vec<String> }
///
/// #[function]
/// fn count_items(order: Json<Order>) -> Json<Order> {
///     let Json(mut order) = order;
///     order.items.sort();
///     Json(order)
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

impl<'a, T: DeserializeOwned> FromParam<'a> for Json<T> {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        let text: &[u8] = match value {
            None => {
                return Err(PluginError::invalid_argument(format!(
                    "missing required parameter `{name}`"
                )))
            }
            Some(ValueRef::String(s)) => s.as_bytes(),
            Some(ValueRef::Bytes(b)) => b,
            Some(other) => {
                return Err(PluginError::invalid_argument(format!(
                    "parameter `{name}`: expected JSON text (a string or bytes), got {}",
                    other.type_name()
                )))
            }
        };
        serde_json::from_slice(text).map(Json).map_err(|e| {
            PluginError::invalid_argument(format!("parameter `{name}`: not the JSON expected: {e}"))
        })
    }
}

impl<T: Serialize> IntoOutput for Json<T> {
    fn into_output(self) -> Result<Value, PluginError> {
        serde_json::to_string(&self.0)
            .map(Value::String)
            .map_err(|e| {
                PluginError::new("json", format!("the result cannot be written as JSON: {e}"))
            })
    }
}

impl<T: Serialize, E: Into<PluginError>> IntoOutput for Result<Json<T>, E> {
    fn into_output(self) -> Result<Value, PluginError> {
        self.map_err(Into::into)?.into_output()
    }
}
