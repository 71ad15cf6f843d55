//! The values that flow in and out of plugin functions.
//!
//! Parameters arrive borrowed ([`ValueRef`]) and are converted into the types
//! a function declares through [`FromParam`]; results leave owned ([`Value`])
//! through [`IntoValue`]. The set is deliberately small — text, integers,
//! floats, booleans, bytes — plus [`Value::Raw`] for anything encoded
//! elsewhere, so the SDK never needs protobuf.

use crate::PluginError;

/// An owned value: a function's output or a stream chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value.
    Unit,
    /// UTF-8 text.
    String(String),
    /// A signed 64-bit integer (smaller integers are widened to it).
    I64(i64),
    /// A 64-bit float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An encoded value the SDK does not interpret, named by a type URL.
    Raw {
        /// Names the encoding, e.g. `type.googleapis.com/my.Message`.
        type_url: String,
        /// The encoded bytes.
        bytes: Vec<u8>,
    },
}

/// A value borrowed from the host for the duration of one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// No value.
    Unit,
    /// UTF-8 text.
    String(&'a str),
    /// A signed 64-bit integer.
    I64(i64),
    /// A 64-bit float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// Raw bytes.
    Bytes(&'a [u8]),
    /// An encoded value the SDK does not interpret.
    Raw {
        /// Names the encoding.
        type_url: &'a str,
        /// The encoded bytes.
        bytes: &'a [u8],
    },
}

impl Value {
    /// Borrows this value.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Unit => ValueRef::Unit,
            Value::String(s) => ValueRef::String(s),
            Value::I64(v) => ValueRef::I64(*v),
            Value::F64(v) => ValueRef::F64(*v),
            Value::Bool(v) => ValueRef::Bool(*v),
            Value::Bytes(b) => ValueRef::Bytes(b),
            Value::Raw { type_url, bytes } => ValueRef::Raw { type_url, bytes },
        }
    }

    /// The name of this value's type, as used in error messages.
    pub fn type_name(&self) -> &'static str {
        self.as_ref().type_name()
    }
}

impl ValueRef<'_> {
    /// Copies this value into an owned [`Value`].
    pub fn to_value(&self) -> Value {
        match *self {
            ValueRef::Unit => Value::Unit,
            ValueRef::String(s) => Value::String(s.to_owned()),
            ValueRef::I64(v) => Value::I64(v),
            ValueRef::F64(v) => Value::F64(v),
            ValueRef::Bool(v) => Value::Bool(v),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueRef::Raw { type_url, bytes } => Value::Raw {
                type_url: type_url.to_owned(),
                bytes: bytes.to_vec(),
            },
        }
    }

    /// The name of this value's type, as used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueRef::Unit => "unit",
            ValueRef::String(_) => "string",
            ValueRef::I64(_) => "i64",
            ValueRef::F64(_) => "f64",
            ValueRef::Bool(_) => "bool",
            ValueRef::Bytes(_) => "bytes",
            ValueRef::Raw { .. } => "raw",
        }
    }
}

/// Converts a named call parameter into the type a function declares.
///
/// Implemented for the integer types, `f64`/`f32`, `bool`, `String`, `&str`,
/// `Vec<u8>`, `&[u8]`, [`Value`], [`ValueRef`], and `Option<T>` of any of
/// them (an `Option` parameter may be absent).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a plugin function parameter",
    label = "not a parameter type",
    note = "parameters are i64 (and other integers), f64, f32, bool, String, &str, Vec<u8>, &[u8], Value, ValueRef, Json<T> (feature `json`), or Option of one of them; take the instance state as `&mut State` and the call as `&Context`"
)]
pub trait FromParam<'a>: Sized {
    /// Converts `value` (absent when the client did not send `name`).
    ///
    /// # Errors
    ///
    /// An `invalid_argument` [`PluginError`] naming the parameter when it is
    /// missing or has the wrong type.
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError>;
}

fn required<'a>(name: &str, value: Option<ValueRef<'a>>) -> Result<ValueRef<'a>, PluginError> {
    value.ok_or_else(|| {
        PluginError::invalid_argument(format!("missing required parameter `{name}`"))
    })
}

fn mismatch(name: &str, expected: &str, got: ValueRef<'_>) -> PluginError {
    PluginError::invalid_argument(format!(
        "parameter `{name}`: expected {expected}, got {}",
        got.type_name()
    ))
}

impl<'a, T: FromParam<'a>> FromParam<'a> for Option<T> {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        match value {
            None => Ok(None),
            Some(v) => T::from_param(name, Some(v)).map(Some),
        }
    }
}

impl<'a> FromParam<'a> for ValueRef<'a> {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        required(name, value)
    }
}

impl<'a> FromParam<'a> for Value {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        required(name, value).map(|v| v.to_value())
    }
}

impl<'a> FromParam<'a> for i64 {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        match required(name, value)? {
            ValueRef::I64(v) => Ok(v),
            other => Err(mismatch(name, "i64", other)),
        }
    }
}

macro_rules! narrow_int {
    ($($t:ty),*) => {$(
        impl<'a> FromParam<'a> for $t {
            fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
                let wide = i64::from_param(name, value)?;
                <$t>::try_from(wide).map_err(|_| {
                    PluginError::invalid_argument(format!(
                        "parameter `{name}`: {wide} does not fit in {}",
                        stringify!($t)
                    ))
                })
            }
        }
    )*};
}
narrow_int!(i8, i16, i32, u8, u16, u32, u64, usize, isize);

impl<'a> FromParam<'a> for f64 {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        match required(name, value)? {
            ValueRef::F64(v) => Ok(v),
            // Integers are accepted where a float is expected, as JSON does.
            ValueRef::I64(v) => Ok(v as f64),
            other => Err(mismatch(name, "f64", other)),
        }
    }
}

impl<'a> FromParam<'a> for f32 {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        f64::from_param(name, value).map(|v| v as f32)
    }
}

impl<'a> FromParam<'a> for bool {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        match required(name, value)? {
            ValueRef::Bool(v) => Ok(v),
            other => Err(mismatch(name, "bool", other)),
        }
    }
}

impl<'a> FromParam<'a> for &'a str {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        match required(name, value)? {
            ValueRef::String(v) => Ok(v),
            other => Err(mismatch(name, "string", other)),
        }
    }
}

impl<'a> FromParam<'a> for String {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        <&str>::from_param(name, value).map(str::to_owned)
    }
}

impl<'a> FromParam<'a> for &'a [u8] {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        match required(name, value)? {
            ValueRef::Bytes(v) => Ok(v),
            other => Err(mismatch(name, "bytes", other)),
        }
    }
}

impl<'a> FromParam<'a> for Vec<u8> {
    fn from_param(name: &str, value: Option<ValueRef<'a>>) -> Result<Self, PluginError> {
        <&[u8]>::from_param(name, value).map(<[u8]>::to_vec)
    }
}

/// Converts a function's output (or a stream chunk) into a [`Value`].
pub trait IntoValue {
    /// Performs the conversion.
    fn into_value(self) -> Value;
}

impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}

impl IntoValue for ValueRef<'_> {
    fn into_value(self) -> Value {
        self.to_value()
    }
}

impl IntoValue for () {
    fn into_value(self) -> Value {
        Value::Unit
    }
}

impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::String(self)
    }
}

impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::String(self.to_owned())
    }
}

impl IntoValue for Vec<u8> {
    fn into_value(self) -> Value {
        Value::Bytes(self)
    }
}

impl IntoValue for &[u8] {
    fn into_value(self) -> Value {
        Value::Bytes(self.to_vec())
    }
}

impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}

impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::F64(self)
    }
}

impl IntoValue for f32 {
    fn into_value(self) -> Value {
        Value::F64(self.into())
    }
}

macro_rules! widen_int {
    ($($t:ty),*) => {$(
        impl IntoValue for $t {
            fn into_value(self) -> Value {
                Value::I64(self.into())
            }
        }
    )*};
}
widen_int!(i8, i16, i32, i64, u8, u16, u32);

/// `None` is no value (the client sees `Empty`).
impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        self.map_or(Value::Unit, IntoValue::into_value)
    }
}

/// Integers wider than a value holds: returned as `i64` when they fit,
/// else an `out_of_range` error naming the number (never a silent wrap).
macro_rules! checked_int {
    ($($t:ty),*) => {$(
        impl IntoOutput for $t {
            fn into_output(self) -> Result<Value, PluginError> {
                i64::try_from(self).map(Value::I64).map_err(|_| {
                    PluginError::new(
                        "out_of_range",
                        format!("the result {self} ({}) does not fit in a 64-bit signed integer", stringify!($t)),
                    )
                })
            }
        }

        impl<E: Into<PluginError>> IntoOutput for Result<$t, E> {
            fn into_output(self) -> Result<Value, PluginError> {
                self.map_err(Into::into)?.into_output()
            }
        }

        impl IntoOutput for Option<$t> {
            fn into_output(self) -> Result<Value, PluginError> {
                self.map_or(Ok(Value::Unit), IntoOutput::into_output)
            }
        }
    )*};
}
checked_int!(u64, usize, isize, i128, u128);

/// What a plugin function may return: a value, or `Result<value, error>`
/// whose error converts into [`PluginError`].
pub trait IntoOutput {
    /// Performs the conversion.
    ///
    /// # Errors
    ///
    /// The function's own error, converted.
    fn into_output(self) -> Result<Value, PluginError>;
}

impl<T: IntoValue> IntoOutput for T {
    fn into_output(self) -> Result<Value, PluginError> {
        Ok(self.into_value())
    }
}

impl<T: IntoValue, E: Into<PluginError>> IntoOutput for Result<T, E> {
    fn into_output(self) -> Result<Value, PluginError> {
        self.map(IntoValue::into_value).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integer_width_and_options_come_out() {
        assert_eq!(7u64.into_output(), Ok(Value::I64(7)));
        assert_eq!(usize::MAX.into_output().unwrap_err().code, "out_of_range");
        assert_eq!((-3isize).into_output(), Ok(Value::I64(-3)));
        assert_eq!(Some(5u64).into_output(), Ok(Value::I64(5)));
        assert_eq!(None::<u64>.into_output(), Ok(Value::Unit));
        assert_eq!(Some("x").into_output(), Ok(Value::String("x".into())));
        assert_eq!(None::<String>.into_output(), Ok(Value::Unit));
        let failed: Result<u64, PluginError> = Err(PluginError::new("nope", "no"));
        assert_eq!(failed.into_output().unwrap_err().code, "nope");
    }

    #[test]
    fn params_convert_with_named_errors() {
        assert_eq!(i64::from_param("a", Some(ValueRef::I64(3))).unwrap(), 3);
        assert_eq!(f64::from_param("a", Some(ValueRef::I64(3))).unwrap(), 3.0);
        let err = i64::from_param("a", Some(ValueRef::String("x"))).unwrap_err();
        assert_eq!(err.code, "invalid_argument");
        assert!(err.message.contains("`a`") && err.message.contains("string"));
        let err = i64::from_param("b", None).unwrap_err();
        assert!(err.message.contains("missing required parameter `b`"));
        assert_eq!(Option::<i64>::from_param("c", None).unwrap(), None);
        let err = u8::from_param("n", Some(ValueRef::I64(300))).unwrap_err();
        assert!(err.message.contains("does not fit in u8"));
    }

    #[test]
    fn outputs_convert() {
        assert_eq!(7i32.into_output().unwrap(), Value::I64(7));
        let r: Result<String, PluginError> = Err(PluginError::new("x", "y"));
        assert_eq!(r.into_output().unwrap_err().code, "x");
    }
}
