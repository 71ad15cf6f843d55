//! `#[function]`: registers a plain Rust function as a spearlet plugin function.
//!
//! Use it through `spear_plugin_sdk` (`use spear_plugin_sdk::prelude::*;`),
//! whose documentation describes the accepted signatures. Every misuse is a
//! compile error pointing at the offending tokens.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Error, FnArg, ItemFn, LitStr, Pat, ReturnType, Token, Type};

/// Registers a function: the library `export_plugin!` builds offers it.
///
/// Arguments (all optional): `stream` marks a streaming function;
/// `stream(T)` marks one whose chunks (what `ctx.emit(..)` sends) are `T`s,
/// published in its signature (`(n: i64) -> Stream<i64>`) so that
/// `plugin inspect` and clients can tell what arrives (plain `stream`
/// declares nothing: each chunk has its own type); `blocking` keeps it
/// off the host's inline tier (it may block or sometimes run long,
/// however short its usual runs); `default` makes it the plugin's default
/// function, the one a caller that names no function gets (at most one
/// per plugin); `extra_params` lets callers send
/// parameters beyond the declared ones, which it reads through
/// `Context::params` (without it the host refuses an undeclared name);
/// `name = "..."` publishes it under another name; `description = "..."`
/// overrides the doc comment as its description.
#[proc_macro_attribute]
pub fn function(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = syn::parse_macro_input!(attr as Args);
    let func = syn::parse_macro_input!(item as ItemFn);
    expand(args, func)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

#[derive(Default)]
struct Args {
    stream: bool,
    /// The chunk type `stream(T)` declares.
    chunk: Option<Type>,
    blocking: bool,
    default: bool,
    extra_params: bool,
    name: Option<LitStr>,
    description: Option<LitStr>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let metas = Punctuated::<syn::Meta, Token![,]>::parse_terminated(input)?;
        for meta in metas {
            match &meta {
                syn::Meta::Path(p) if p.is_ident("stream") => args.stream = true,
                syn::Meta::List(list) if list.path.is_ident("stream") => {
                    args.stream = true;
                    args.chunk = Some(list.parse_args::<Type>()?);
                }
                syn::Meta::Path(p) if p.is_ident("blocking") => args.blocking = true,
                syn::Meta::Path(p) if p.is_ident("default") => args.default = true,
                syn::Meta::Path(p) if p.is_ident("extra_params") => args.extra_params = true,
                syn::Meta::NameValue(nv) if nv.path.is_ident("name") => {
                    args.name = Some(lit_str(&nv.value)?);
                }
                syn::Meta::NameValue(nv) if nv.path.is_ident("description") => {
                    args.description = Some(lit_str(&nv.value)?);
                }
                other => {
                    return Err(Error::new_spanned(
                        other,
                        "unknown argument; expected `stream`, `stream(ChunkType)`, `blocking`, `default`, `extra_params`, `name = \"...\"` or `description = \"...\"`",
                    ))
                }
            }
        }
        Ok(args)
    }
}

fn lit_str(expr: &syn::Expr) -> syn::Result<LitStr> {
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Ok(s.clone()),
        other => Err(Error::new_spanned(other, "expected a string literal")),
    }
}

/// How the generated dispatcher fills one parameter.
enum Role {
    Context,
    State(Type),
    Param { name: String, ty: Type },
}

/// What the dispatcher does with the function's parameters: one binding
/// per parameter, the arguments of the call, the parameters as the
/// published signature shows them, and the state type if one is taken.
struct Parameters {
    bindings: Vec<TokenStream2>,
    call_args: Vec<syn::Ident>,
    shown: Vec<String>,
    state_type: Option<Type>,
}

fn expand(args: Args, func: ItemFn) -> syn::Result<TokenStream2> {
    check_signature(&func)?;
    let published = published_name(&args, &func)?;
    let params = bind_parameters(&func, &published)?;
    let signature = signature(&args, &func, &params.shown);
    let description = args
        .description
        .as_ref()
        .map(LitStr::value)
        .unwrap_or_else(|| doc_summary(&func.attrs));
    let ident = &func.sig.ident;
    let vis = &func.vis;
    let state_check = params.state_type.as_ref().map(state_check);
    let chunk_check = args.chunk.as_ref().map(chunk_check);
    let registration = registration(ident);
    let function_def = function_def(&args, ident, &published, &description, &signature, &params);
    Ok(quote! {
        #func

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #ident {
            _private: (),
        }

        #state_check

        #chunk_check

        #registration

        #function_def
    })
}

/// The name the function is published under: `name = "..."` or its own
/// (raw identifiers unescaped), never empty.
fn published_name(args: &Args, func: &ItemFn) -> syn::Result<String> {
    let published = args
        .name
        .as_ref()
        .map(LitStr::value)
        .unwrap_or_else(|| func.sig.ident.unraw().to_string());
    if published.is_empty() {
        return Err(Error::new_spanned(
            &args.name,
            "the function name must not be empty",
        ));
    }
    Ok(published)
}

/// How the dispatcher fills each parameter, from its role (context, state
/// or a named parameter read from the call).
fn bind_parameters(func: &ItemFn, published: &str) -> syn::Result<Parameters> {
    let mut params = Parameters {
        bindings: Vec::new(),
        call_args: Vec::new(),
        shown: Vec::new(),
        state_type: None,
    };
    for (i, input) in func.sig.inputs.iter().enumerate() {
        let FnArg::Typed(pat_ty) = input else {
            return Err(Error::new_spanned(
                input,
                "plugin functions cannot take `self`",
            ));
        };
        let local = format_ident!("__arg{}", i);
        match role(pat_ty)? {
            Role::Context => params.bindings.push(quote! { let #local = __ctx; }),
            Role::State(ty) => {
                params.bindings.push(quote! {
                    let #local: &mut #ty = ::spear_plugin_sdk::__private::state::<#ty>(__state, #published)?;
                });
                params.state_type = Some(ty);
            }
            Role::Param { name, ty } => {
                params.shown.push(format!("{name}: {}", pretty(&ty)));
                // Spanned at the type, so an unsupported type is reported there.
                params.bindings.push(quote_spanned! {ty.span()=>
                    let #local: #ty = ::spear_plugin_sdk::__private::param(__ctx, #name)?;
                });
            }
        }
        params.call_args.push(local);
    }
    Ok(params)
}

/// The published signature text, `(a: i64, ..) -> T`.
fn signature(args: &Args, func: &ItemFn, shown_params: &[String]) -> String {
    let mut shown_params = shown_params.to_vec();
    // Extra parameters are published as a trailing `..`: the host reads it
    // from the signature text, so the function table's layout is unchanged
    // (a host that predates it sees a signature it cannot parse, and checks
    // nothing, as before).
    if args.extra_params {
        shown_params.push("..".to_owned());
    }
    let output = match &args.chunk {
        Some(chunk) => shown_stream(chunk, &func.sig.output),
        None => shown_output(&func.sig.output),
    };
    format!("({}){output}", shown_params.join(", "))
}

/// A function whose state is not the plugin's instance type is a compile
/// error, pointing at the type, not a failure of every call. Checked
/// against the crate's `export_plugin!`; left out of test builds, where
/// functions are called through `MockCall` with any state (whose mismatch
/// is still an `instance_type` error there).
fn state_check(ty: &Type) -> TokenStream2 {
    quote_spanned! {ty.span()=>
        #[cfg(not(test))]
        const _: fn() = || {
            fn instance_is<I: ::spear_plugin_sdk::__private::InstanceOf<#ty>>() {}
            instance_is::<<crate::__SpearPlugin as ::spear_plugin_sdk::__private::PluginDef>::Instance>();
        };
    }
}

/// The function's entry in the link-time table: registered where it is
/// written, so `export_plugin!` need not list it.
fn registration(ident: &syn::Ident) -> TokenStream2 {
    quote! {
        // Registered where it is written: export_plugin! need not list it.
        const _: () = {
            #[::spear_plugin_sdk::__private::linkme::distributed_slice(::spear_plugin_sdk::__private::SPEAR_PLUGIN_FUNCTIONS)]
            #[linkme(crate = ::spear_plugin_sdk::__private::linkme)]
            static REGISTRATION: ::spear_plugin_sdk::__private::Registration =
                ::spear_plugin_sdk::__private::Registration {
                    descriptor: <#ident as ::spear_plugin_sdk::__private::FunctionDef>::DESCRIPTOR,
                    hints: <#ident as ::spear_plugin_sdk::__private::FunctionDef>::HINTS,
                    default: <#ident as ::spear_plugin_sdk::__private::FunctionDef>::DEFAULT,
                    handler: <#ident as ::spear_plugin_sdk::__private::FunctionDef>::call,
                };
        };
    }
}

/// The `FunctionDef` impl: the descriptor and hints the host reads, and
/// the dispatcher that binds the parameters and calls the function.
fn function_def(
    args: &Args,
    ident: &syn::Ident,
    published: &str,
    description: &str,
    signature: &str,
    params: &Parameters,
) -> TokenStream2 {
    let Parameters {
        bindings,
        call_args,
        ..
    } = params;
    let stream = args.stream;
    let blocking = args.blocking;
    let default = args.default;
    quote! {
        impl ::spear_plugin_sdk::__private::FunctionDef for #ident {
            const DESCRIPTOR: ::spear_plugin_sdk::ffi::FfiFunctionDesc =
                ::spear_plugin_sdk::__private::descriptor(#published, #stream, #description, #signature);
            const HINTS: ::spear_plugin_sdk::ffi::FfiFunctionHints =
                ::spear_plugin_sdk::__private::hints(#blocking);
            const DEFAULT: bool = #default;

            #[allow(unused_variables)]
            fn call(
                __state: &mut dyn ::std::any::Any,
                __ctx: &::spear_plugin_sdk::Context<'_>,
            ) -> ::std::result::Result<::spear_plugin_sdk::Value, ::spear_plugin_sdk::PluginError> {
                #(#bindings)*
                #[allow(unused_imports)]
                use ::spear_plugin_sdk::__private::{ViaCode as _, ViaIntoOutput as _};
                // An error type with its own codes reports them (ViaCode);
                // anything else converts as IntoOutput says.
                (&&::spear_plugin_sdk::__private::Output::new(#ident(#(#call_args),*))).take_output()
            }
        }
    }
}

fn check_signature(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    if let Some(t) = &sig.asyncness {
        return Err(Error::new_spanned(
            t,
            "plugin functions are synchronous: they run on a host worker thread; \
             poll `ctx.should_stop()` in long loops instead",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new_spanned(
            &sig.generics,
            "plugin functions cannot be generic",
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(Error::new_spanned(
            abi,
            "write a plain Rust fn; the SDK generates the extern entry point",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new_spanned(v, "plugin functions cannot be variadic"));
    }
    Ok(())
}

fn role(pat_ty: &syn::PatType) -> syn::Result<Role> {
    if let Type::Reference(r) = &*pat_ty.ty {
        let is_context = matches!(&*r.elem, Type::Path(p)
            if p.path.segments.last().is_some_and(|s| s.ident == "Context"));
        if is_context {
            if r.mutability.is_some() {
                return Err(Error::new_spanned(
                    &pat_ty.ty,
                    "take the context as `&Context`",
                ));
            }
            return Ok(Role::Context);
        }
        if r.mutability.is_some() {
            return Ok(Role::State((*r.elem).clone()));
        }
    }
    let name = match &*pat_ty.pat {
        Pat::Ident(p) => p.ident.unraw().to_string(),
        other => {
            return Err(Error::new(
                other.span(),
                "plugin function parameters must be plain names: the name is the parameter clients send",
            ))
        }
    };
    Ok(Role::Param {
        name,
        ty: (*pat_ty.ty).clone(),
    })
}

fn shown_output(output: &ReturnType) -> String {
    let ReturnType::Type(_, ty) = output else {
        return String::new();
    };
    // `Result<T, E>` is shown as its success type.
    if let Type::Path(p) = &**ty {
        if let Some(last) = p.path.segments.last() {
            if last.ident == "Result" {
                if let syn::PathArguments::AngleBracketed(a) = &last.arguments {
                    if let Some(syn::GenericArgument::Type(ok)) = a.args.first() {
                        return format!(" -> {}", pretty(ok));
                    }
                }
            }
        }
    }
    format!(" -> {}", pretty(ty))
}

/// A declared chunk type the context cannot emit is a compile error at
/// the type, not a signature that promises what never arrives.
fn chunk_check(ty: &Type) -> TokenStream2 {
    quote_spanned! {ty.span()=>
        const _: fn() = || {
            fn emits<T: ::spear_plugin_sdk::IntoValue>() {}
            emits::<#ty>();
        };
    }
}

/// A stream declaring its chunk type `T` is published as `-> Stream<T>`;
/// one that also returns a value `R` when its chunks are done, as
/// `-> Stream<T, R>`. The host reads only the parameter list to check
/// calls, so the output's form is free to carry this.
fn shown_stream(chunk: &Type, output: &ReturnType) -> String {
    let chunk = pretty(chunk);
    match shown_output(output).strip_prefix(" -> ") {
        None | Some("()") => format!(" -> Stream<{chunk}>"),
        Some(returns) => format!(" -> Stream<{chunk}, {returns}>"),
    }
}

fn pretty(tokens: &impl ToTokens) -> String {
    tokens
        .to_token_stream()
        .to_string()
        .replace("& ", "&")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("[u8 ]", "[u8]")
        .replace("[ ", "[")
}

fn doc_summary(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if let Ok(s) = lit_str(&nv.value) {
                let line = s.value().trim().to_owned();
                if line.is_empty() && !lines.is_empty() {
                    break;
                }
                if !line.is_empty() {
                    lines.push(line);
                }
            }
        }
    }
    lines.join(" ")
}
