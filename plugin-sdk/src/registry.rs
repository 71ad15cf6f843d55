//! The compile-time registry the macros fill in. Not part of the public API:
//! `#[function]` and `export_plugin!` generate the implementations.

use std::any::Any;
use std::sync::OnceLock;

use crate::ffi::abi::RStr;
use crate::ffi::{FfiFunctionDesc, FfiFunctionHints, FfiFunctionKind};
use crate::{Context, FromParam, Instance, PluginError, Value};

/// How the dispatcher calls one registered function.
pub type Handler = fn(&mut dyn Any, &Context<'_>) -> Result<Value, PluginError>;

/// Implemented by `#[function]` for a type named after the function.
pub trait FunctionDef {
    /// The function's table entry.
    const DESCRIPTOR: FfiFunctionDesc;
    /// How the host may run it.
    const HINTS: FfiFunctionHints;
    /// Marked `#[function(default)]`: the plugin's default function.
    const DEFAULT: bool = false;
    /// Extracts the parameters from `ctx`, calls the function, converts its output.
    fn call(state: &mut dyn Any, ctx: &Context<'_>) -> Result<Value, PluginError>;
}

/// Implemented by `export_plugin!`.
pub trait PluginDef: 'static {
    /// The per-instance state type.
    type Instance: Instance;
    /// The plugin's name.
    const NAME: &'static str;
    /// The plugin's version.
    const VERSION: &'static str;
    /// The function table: every `#[function]` of the library, or the list
    /// `export_plugin!` was given.
    fn functions() -> &'static FunctionTable;
}

/// A plugin's functions, in dispatch order: a call names one by its index.
#[derive(Debug)]
pub struct FunctionTable {
    /// The table entries the host reads.
    pub descriptors: &'static [FfiFunctionDesc],
    /// How each may be run, index for index with `descriptors`.
    pub hints: &'static [FfiFunctionHints],
    /// Which are marked `#[function(default)]`, index for index with
    /// `descriptors` (at most one may be).
    pub defaults: &'static [bool],
    /// The handlers, index for index with `descriptors`.
    pub handlers: &'static [Handler],
}

impl FunctionTable {
    /// The index of the function marked `#[function(default)]`, if one is.
    ///
    /// # Errors
    ///
    /// More than one is marked: the message names them all.
    pub fn default_function(&self) -> Result<Option<u32>, String> {
        let mut marked = self
            .defaults
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| i);
        let Some(first) = marked.next() else {
            return Ok(None);
        };
        if marked.next().is_some() {
            let names: Vec<String> = self
                .defaults
                .iter()
                .zip(self.descriptors)
                .filter(|(d, _)| **d)
                .map(|(_, f)| format!("`{}`", f.name.as_str()))
                .collect();
            return Err(format!(
                "marks {} functions `#[function(default)]` ({}); at most one may be the default",
                names.len(),
                names.join(", ")
            ));
        }
        u32::try_from(first)
            .map(Some)
            .map_err(|_| "has more functions than a u32 can number".to_owned())
    }
}

/// Compile-time check of an `export_plugin!` list: at most one function
/// marked `#[function(default)]`.
pub const fn at_most_one_default(defaults: &[bool]) {
    let mut count = 0;
    let mut i = 0;
    while i < defaults.len() {
        if defaults[i] {
            count += 1;
        }
        i += 1;
    }
    if count > 1 {
        panic!("export_plugin! lists more than one function marked `#[function(default)]`; at most one may be the default");
    }
}

/// What each `#[function]` adds to `SPEAR_PLUGIN_FUNCTIONS`.
#[derive(Debug)]
pub struct Registration {
    /// Its table entry.
    pub descriptor: FfiFunctionDesc,
    /// How the host may run it.
    pub hints: FfiFunctionHints,
    /// Marked `#[function(default)]`.
    pub default: bool,
    /// How the dispatcher calls it.
    pub handler: Handler,
}

/// Every `#[function]` linked into the library, gathered by the linker
/// (a section per slice, no constructors: nothing runs at load time).
#[linkme::distributed_slice]
pub static SPEAR_PLUGIN_FUNCTIONS: [Registration];

/// The table of every registered function, sorted by name so that it does
/// not depend on link order. Built once, on the first call.
pub fn registered() -> &'static FunctionTable {
    static TABLE: OnceLock<FunctionTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut entries: Vec<&Registration> = SPEAR_PLUGIN_FUNCTIONS.iter().collect();
        entries.sort_by(|a, b| a.descriptor.name.as_str().cmp(b.descriptor.name.as_str()));
        FunctionTable {
            descriptors: entries
                .iter()
                .map(|r| r.descriptor)
                .collect::<Vec<_>>()
                .leak(),
            hints: entries.iter().map(|r| r.hints).collect::<Vec<_>>().leak(),
            defaults: entries.iter().map(|r| r.default).collect::<Vec<_>>().leak(),
            handlers: entries.iter().map(|r| r.handler).collect::<Vec<_>>().leak(),
        }
    })
}

/// Builds a table entry at compile time.
pub const fn descriptor(
    name: &'static str,
    stream: bool,
    description: &'static str,
    signature: &'static str,
) -> FfiFunctionDesc {
    FfiFunctionDesc {
        name: RStr::from_str(name),
        kind: if stream {
            FfiFunctionKind::Stream
        } else {
            FfiFunctionKind::Unary
        },
        description: RStr::from_str(description),
        signature: RStr::from_str(signature),
    }
}

/// Builds a function's hints at compile time.
pub const fn hints(blocking: bool) -> FfiFunctionHints {
    FfiFunctionHints { blocking }
}

/// Extracts parameter `name` as `T`.
pub fn param<'a, T: FromParam<'a>>(ctx: &Context<'a>, name: &str) -> Result<T, PluginError> {
    T::from_param(name, ctx.param(name))
}

/// Views the instance state as the type a function asked for.
pub fn state<'s, T: 'static>(
    state: &'s mut dyn Any,
    function: &str,
) -> Result<&'s mut T, PluginError> {
    state.downcast_mut::<T>().ok_or_else(|| {
        PluginError::new(
            "instance_type",
            format!(
                "function `{function}` takes `&mut {}`, which is not this plugin's instance type \
                 (name it in export_plugin!'s `instance:`)",
                std::any::type_name::<T>()
            ),
        )
    })
}

/// A function's output on its way to the host. The macro-generated code
/// calls `(&&Output::new(out)).take_output()`: method resolution tries the
/// receiver `&&Output` first, where only [`ViaCode`] is implemented — for a
/// `Result<T, E>` with `E: ErrorCode`, whose error then reports its own
/// code — and falls back to [`ViaIntoOutput`] on `&Output` for everything
/// else. Dispatch happens on the concrete type the macro sees, without
/// touching the blanket `?` conversion.
pub struct Output<R>(std::cell::Cell<Option<R>>);

impl<R> std::fmt::Debug for Output<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}

impl<R> Output<R> {
    /// Wraps a function's return value.
    pub fn new(value: R) -> Self {
        Output(std::cell::Cell::new(Some(value)))
    }

    fn take(&self) -> R {
        self.0.take().expect("an output is converted once")
    }
}

/// See [`Output`]: the specific case.
pub trait ViaCode {
    /// Converts, with the error's own code.
    fn take_output(&self) -> Result<Value, PluginError>;
}

impl<T: crate::IntoValue, E: crate::ErrorCode> ViaCode for &Output<Result<T, E>> {
    fn take_output(&self) -> Result<Value, PluginError> {
        self.take()
            .map(crate::IntoValue::into_value)
            .map_err(|e| PluginError::from_coded(&e))
    }
}

/// See [`Output`]: the general case.
pub trait ViaIntoOutput {
    /// Converts, as [`IntoOutput`](crate::IntoOutput) does.
    fn take_output(&self) -> Result<Value, PluginError>;
}

impl<R: crate::IntoOutput> ViaIntoOutput for Output<R> {
    fn take_output(&self) -> Result<Value, PluginError> {
        crate::IntoOutput::into_output(self.take())
    }
}

/// `export_plugin!`'s instance type `Self` is the state type `S` a function
/// takes as `&mut S`.
#[diagnostic::on_unimplemented(
    message = "a function takes `&mut {S}`, but the plugin's instance type is `{Self}`",
    label = "export_plugin! names `{Self}` as the instance type (the default is `()`)",
    note = "name the state type in export_plugin!: `instance: {S},`"
)]
pub trait InstanceOf<S> {}

impl<S> InstanceOf<S> for S {}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &mut dyn Any, _: &Context<'_>) -> Result<Value, PluginError> {
        unreachable!("not called")
    }

    fn table(defaults: &'static [bool]) -> FunctionTable {
        const NAMES: [&str; 3] = ["a", "b", "c"];
        FunctionTable {
            descriptors: NAMES
                .iter()
                .map(|n| descriptor(n, false, "", "()"))
                .collect::<Vec<_>>()
                .leak(),
            hints: NAMES
                .iter()
                .map(|_| hints(false))
                .collect::<Vec<_>>()
                .leak(),
            defaults,
            handlers: NAMES
                .iter()
                .map(|_| never as Handler)
                .collect::<Vec<_>>()
                .leak(),
        }
    }

    #[test]
    fn the_default_is_the_one_marked_index() {
        assert_eq!(table(&[false, false, false]).default_function(), Ok(None));
        assert_eq!(table(&[false, true, false]).default_function(), Ok(Some(1)));
    }

    #[test]
    fn several_marked_are_refused_naming_them() {
        let err = table(&[true, false, true]).default_function().unwrap_err();
        assert_eq!(
            err,
            "marks 2 functions `#[function(default)]` (`a`, `c`); at most one may be the default"
        );
    }

    #[test]
    fn at_most_one_default_accepts_none_or_one() {
        at_most_one_default(&[]);
        at_most_one_default(&[false, true]);
    }
}
