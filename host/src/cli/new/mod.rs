//! `spearlet plugin new NAME`: a plugin crate that builds, tests (with
//! `MockCall`) and passes `spearlet plugin check` as it is, with one
//! example of each kind of function — unary, stateful, failing with an
//! error code, streaming — and a unit test for each.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The crate's name (letters, digits, `-`, `_`; starting with a letter).
    name: String,

    /// The SDK to depend on: a path to a `plugin-sdk` checkout, or a
    /// registry version. Default: the version this spearlet was built with.
    #[arg(long, value_name = "PATH|VERSION")]
    sdk: Option<String>,

    /// Where to create it. Default: `./NAME`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

const CARGO_TOML: &str = include_str!("Cargo.toml.in");
const LIB_RS: &str = include_str!("lib.rs.in");

pub fn run(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!("`{name}` is not a crate name: use letters, digits, `-` and `_`, starting with a letter");
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && dir.read_dir().map_or(true, |mut d| d.next().is_some()) {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = match &args.sdk {
        None => Sdk::Version(spear_plugin_sdk::SDK_VERSION.to_owned()),
        Some(s) if Path::new(s).join("Cargo.toml").is_file() => {
            Sdk::Path(std::fs::canonicalize(s).with_context(|| format!("the SDK at {s}"))?)
        }
        Some(s) if s.chars().next().is_some_and(|c| c.is_ascii_digit()) => Sdk::Version(s.clone()),
        Some(s) => bail!("--sdk {s}: neither a directory with a Cargo.toml nor a version"),
    };
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let files = [
        ("Cargo.toml", render(CARGO_TOML, name, &sdk)),
        ("src/lib.rs", render(LIB_RS, name, &sdk)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (file, text) in &files {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let lib = name.replace('-', "_");
    println!(
        "created {} (a cdylib depending on {})",
        dir.display(),
        sdk.shown()
    );
    println!(
        "  cd {} && cargo test && cargo build --release",
        dir.display()
    );
    println!("  spearlet plugin check target/release/lib{lib}.so");
    println!(
        "  spearlet serve --artifact-root target/release   (a server loads only from its artifact roots)"
    );
    println!("  spearlet invoke --task-name {name} --artifact target/release/lib{lib}.so greet -p name=Ada");
    Ok(ExitCode::SUCCESS)
}

enum Sdk {
    Path(PathBuf),
    Version(String),
}

impl Sdk {
    fn dependency(&self, features: &str) -> String {
        match self {
            Sdk::Path(p) => format!("{{ path = {:?}{features} }}", p.display().to_string()),
            Sdk::Version(v) => format!("{{ version = \"{v}\"{features} }}"),
        }
    }

    fn shown(&self) -> String {
        match self {
            Sdk::Path(p) => format!("the SDK at {}", p.display()),
            Sdk::Version(v) => format!("spear-plugin-sdk {v}"),
        }
    }
}

/// Fills a template: `{name}`, `{crate}`, `{sdk}`, `{sdk_testing}`; `{{`
/// and `}}` are literal braces.
fn render(template: &str, name: &str, sdk: &Sdk) -> String {
    template
        .replace("{{", "\u{1}")
        .replace("}}", "\u{2}")
        .replace("{name}", name)
        .replace("{crate}", &name.replace('-', "_"))
        .replace("{sdk}", &sdk.dependency(""))
        .replace(
            "{sdk_testing}",
            &sdk.dependency(", features = [\"testing\"]"),
        )
        .replace('\u{1}', "{")
        .replace('\u{2}', "}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_and_keep_literal_braces() {
        let sdk = Sdk::Version("0.1.0".into());
        let lib = render(LIB_RS, "my-greeter", &sdk);
        assert!(lib.contains("name: \"my-greeter\""));
        assert!(lib.contains("format!(\"Hello, {name}{mark}\")"), "{lib}");
        assert!(lib.contains("libmy_greeter.so"));
        assert!(
            lib.contains("format!(\"cannot divide {a} by zero\")"),
            "{lib}"
        );
        for example in ["fn greet(", "fn count(", "fn divide(", "fn countdown("] {
            assert!(lib.contains(example), "{example}: {lib}");
        }
        let manifest = render(CARGO_TOML, "my-greeter", &sdk);
        assert!(
            manifest.contains("spear-plugin-sdk = { version = \"0.1.0\" }"),
            "{manifest}"
        );
        assert!(manifest.contains("features = [\"testing\"]"));
        let local = render(
            CARGO_TOML,
            "x",
            &Sdk::Path("/src/spearlet/plugin-sdk".into()),
        );
        assert!(
            local.contains("path = \"/src/spearlet/plugin-sdk\""),
            "{local}"
        );
    }
}
