//! The checks themselves: `constructors` in the parent, from the file; the
//! rest in the child process, against the loaded plugin.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use spear_plugin_sdk::ffi::{ABI_MINORS, ABI_VERSION};
use spearlet::loader::{
    CallRequest, Constructor, Plugin, PluginInstance, RUNTIME_CONSTRUCTOR_COUNT,
};

use super::report::{Outcome, Verdict};

/// A check that runs plugin code.
type Check = fn(&Arc<Plugin>) -> Outcome;

/// The checks the child runs, in order: its report must follow it.
pub const IN_CHILD: [&str; 8] = [
    "loads",
    "abi",
    "function table",
    "instance",
    "missing parameters",
    "panic barrier",
    "stream cancel",
    "instance churn",
];

/// The checks whose failure ends the child's run: nothing after them can
/// run without what they make.
pub const STOPS_ON_FAILURE: [&str; 2] = ["loads", "instance"];

/// Runs every check of [`IN_CHILD`] on `file`, handing each outcome to
/// `out` as soon as it is known; `begin` is told before a check that runs
/// plugin code starts, so that a check which kills the process is still
/// named.
pub fn check_file(file: &Path, begin: &mut dyn FnMut(&str), out: &mut dyn FnMut(Outcome)) {
    begin("loads");
    let plugin = match Plugin::load_verified(file, None) {
        Ok(plugin) => plugin,
        Err(e) => {
            return out(Outcome::judged(
                "loads",
                false,
                format!("{}: {e}", e.kind()),
            ))
        }
    };
    out(Outcome::judged(
        "loads",
        true,
        format!(
            "sha256:{} verified; ELF, dependencies ({}), ABI and root-module layout accepted",
            plugin.digest(),
            plugin.needed_libraries().join(", "),
        ),
    ));
    out(abi(&plugin));
    out(function_table(&plugin));
    begin("instance");
    let instance = instance(&plugin);
    let created = instance.passed;
    out(instance);
    if !created {
        return;
    }
    let steps: [(&str, Check); 4] = [
        ("missing parameters", missing_parameters),
        ("panic barrier", panic_barrier),
        ("stream cancel", super::stream::stream_cancel),
        ("instance churn", churn),
    ];
    for (name, step) in steps {
        begin(name);
        out(step(&plugin));
    }
}

/// What the library runs inside `dlopen`, before any check: read from the
/// file's dynamic section, nothing of it runs here. Judged in the parent,
/// where nothing of the plugin runs either, so no code of the plugin's can
/// touch this verdict.
pub fn constructors(file: &Path) -> Outcome {
    const CHECK: &str = "constructors";
    let list = match spearlet::loader::constructors(file) {
        Ok(list) => list,
        Err(e) => return Outcome::judged(CHECK, false, e),
    };
    let unnamed = list.iter().filter(|c| c.symbol.is_none()).count();
    let stripped = if unnamed > 0 {
        format!(
            " ({unnamed} unnamed, the library's symbols being stripped: counted against the \
             toolchain's, one DT_INIT and {RUNTIME_CONSTRUCTOR_COUNT} in DT_INIT_ARRAY)"
        )
    } else {
        String::new()
    };
    let foreign: Vec<String> = list
        .iter()
        .filter(|c| !c.is_toolchain())
        .map(Constructor::describe)
        .collect();
    if foreign.is_empty() {
        let own: Vec<&str> = list.iter().filter_map(|c| c.toolchain).collect();
        let own = if own.is_empty() {
            String::new()
        } else {
            format!(": {}", own.join(", "))
        };
        return Outcome::judged(
            CHECK,
            true,
            format!(
                "{} constructor(s), the toolchain's own{own}{stripped}",
                list.len()
            ),
        );
    }
    Outcome::judged(
        CHECK,
        false,
        format!(
            "runs code at load time, inside dlopen and before any check, beyond the \
             toolchain's: {}{stripped}",
            foreign.join(", ")
        ),
    )
}

/// The ABI version the plugin declares, and its root module against every
/// 1.x version this host accepts.
fn abi(plugin: &Plugin) -> Outcome {
    let (passed, detail) = abi_verdict(plugin.abi_version(), plugin.root_fields());
    Outcome::judged("abi", passed, detail)
}

/// A plugin declaring ABI `declared` whose root module has `fields`
/// fields, against each 1.x version: a declared version must bring every
/// field it added; an older plugin reads the later ones as absent.
fn abi_verdict(declared: &str, fields: usize) -> (bool, String) {
    let minor_of = |v: &str| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
    let declared_minor = minor_of(declared).unwrap_or(0);
    let mut passed = true;
    let mut lines = Vec::new();
    for version in ABI_MINORS {
        let minor = minor_of(version.version).unwrap_or(0);
        if fields >= version.fields {
            lines.push(format!(
                "{}: its fields present, layout checked",
                version.version
            ));
        } else if declared_minor >= minor {
            passed = false;
            lines.push(format!(
                "{}: declared, but the root module lacks what it added: {}",
                version.version, version.added
            ));
        } else {
            lines.push(format!(
                "{}: predates it ({} read as absent)",
                version.version, version.added
            ));
        }
    }
    let newest = ABI_MINORS
        .last()
        .and_then(|v| minor_of(v.version))
        .unwrap_or(0);
    if declared_minor > newest {
        lines.push(format!(
            "{declared}: newer than this host; the fields it adds are ignored"
        ));
    }
    (
        passed,
        format!(
            "declares {declared}; this host is {ABI_VERSION} and accepts every 1.x: {}",
            lines.join("; ")
        ),
    )
}

fn function_table(plugin: &Plugin) -> Outcome {
    let unreadable: Vec<&str> = plugin
        .functions()
        .iter()
        .filter(|f| spearlet::signature::params(&f.signature).is_none())
        .map(|f| f.name.as_str())
        .collect();
    if unreadable.is_empty() {
        let kinds: Vec<String> = plugin
            .functions()
            .iter()
            .map(|f| format!("{} ({})", f.name, f.kind))
            .collect();
        Outcome::judged(
            "function table",
            true,
            format!(
                "{} function(s), unique names, readable signatures: {}; {}",
                kinds.len(),
                kinds.join(", "),
                default_entry(plugin)
            ),
        )
    } else {
        Outcome::judged(
            "function table",
            false,
            format!("signatures that cannot be read: {}", unreadable.join(", ")),
        )
    }
}

/// What a call naming no function gets, as far as the plugin decides it
/// (a task's registration may still name another: `spear.default_function`).
fn default_entry(plugin: &Plugin) -> String {
    match (plugin.default_function(), plugin.functions()) {
        (Some(f), _) => format!(
            "default function: {} (`#[function(default)]`)",
            plugin.function_name(f)
        ),
        (None, [only]) => format!("default function: {} (its only one)", only.name),
        (None, _) => "default function: none marked (a call naming no function needs its \
                      task's `spear.default_function`)"
            .to_owned(),
    }
}

fn instance(plugin: &Arc<Plugin>) -> Outcome {
    match PluginInstance::new(plugin, &[]) {
        Ok(instance) => {
            drop(instance);
            Outcome::judged(
                "instance",
                true,
                "created with an empty configuration, and dropped",
            )
        }
        Err(e) => Outcome::judged("instance", false, format!("{}: {e}", e.kind())),
    }
}

/// Every function that takes a required parameter, called without any,
/// must answer `invalid_argument` — never run, never panic.
fn missing_parameters(plugin: &Arc<Plugin>) -> Outcome {
    const CHECK: &str = "missing parameters";
    let mut problems = Vec::new();
    let mut tried = 0;
    for f in plugin.functions() {
        let needs = spearlet::signature::params(&f.signature)
            .is_some_and(|p| p.iter().any(|p| !p.optional));
        if !needs {
            continue;
        }
        tried += 1;
        let Ok(handle) = plugin.function(&f.name) else {
            continue;
        };
        let mut instance = match PluginInstance::new(plugin, &[]) {
            Ok(i) => i,
            Err(e) => return Outcome::judged(CHECK, false, format!("{}: {e}", e.kind())),
        };
        // Raised: a stream or loop that did start would stop at once.
        let cancelled = AtomicBool::new(true);
        let request = CallRequest::new("plugin-check", &cancelled);
        match instance.call(handle, &request) {
            Err(spearlet::Error::PluginFailed { code, .. }) if code == "invalid_argument" => {}
            Err(e) => problems.push(format!("{}: {} ({e})", f.name, e.kind())),
            Ok(_) => problems.push(format!("{}: ran without its parameters", f.name)),
        }
    }
    if problems.is_empty() {
        Outcome::judged(
            CHECK,
            true,
            format!(
                "{tried} function(s) with required parameters answer invalid_argument without them"
            ),
        )
    } else {
        Outcome::judged(CHECK, false, problems.join("; "))
    }
}

/// A panic inside the plugin must come back as a caught panic (said by the
/// probe's outcome type; by the code `panic` for a plugin before ABI 1.3).
/// In a library built with `panic = "abort"` the probe kills this process
/// instead: the parent reports that as this check's failure.
fn panic_barrier(plugin: &Arc<Plugin>) -> Outcome {
    const CHECK: &str = "panic barrier";
    match plugin.probe_panic_barrier() {
        None => Outcome::new(
            CHECK,
            Verdict::Skip,
            "the plugin exports no probe (spear_plugin_panic_probe): hand-written, or built \
             with an SDK that predates it",
        ),
        Some(Ok(message)) => Outcome::judged(
            CHECK,
            true,
            format!("a panic inside the plugin was caught and reported as one (\"{message}\")"),
        ),
        Some(Err(problem)) => Outcome::judged(CHECK, false, problem),
    }
}

/// 1,000 instances created and dropped must not grow the process: a
/// constructor or destructor that leaks would sink a long-running host.
fn churn(plugin: &Arc<Plugin>) -> Outcome {
    const CHECK: &str = "instance churn";
    const CYCLES: usize = 1_000;
    const ALLOWED_GROWTH: u64 = 4 << 20;
    // Warm up the allocator's pools first, so they do not read as growth.
    for _ in 0..50 {
        drop(PluginInstance::new(plugin, &[]));
    }
    let before = spearlet::metrics::resident_bytes();
    for _ in 0..CYCLES {
        if let Err(e) = PluginInstance::new(plugin, &[]) {
            return Outcome::judged(CHECK, false, format!("{}: {e}", e.kind()));
        }
    }
    let grown = spearlet::metrics::resident_bytes().saturating_sub(before);
    Outcome::judged(
        CHECK,
        grown <= ALLOWED_GROWTH,
        format!(
            "{CYCLES} create/drop cycles grew resident memory by {:.1} MiB (allowed {} MiB)",
            grown as f64 / f64::from(1 << 20),
            ALLOWED_GROWTH >> 20
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::{abi_verdict, check_file, IN_CHILD};
    use spearlet_test_artifacts::Artifact;

    #[test]
    fn the_function_table_check_names_the_default_function() {
        for (artifact, expected) in [
            (
                Artifact::Echo,
                "default function: echo (`#[function(default)]`)",
            ),
            (Artifact::Counter, "default function: next (its only one)"),
            (Artifact::Math, "default function: none marked"),
        ] {
            let mut table = None;
            check_file(artifact.path(), &mut |_| {}, &mut |outcome| {
                if outcome.check == "function table" {
                    table = Some(outcome);
                }
            });
            let table = table.expect("the function table is checked");
            assert!(table.passed, "{}", table.detail);
            assert!(table.detail.contains(expected), "{}", table.detail);
        }
    }

    /// The parent reads the child's report in [`IN_CHILD`]'s order, stopping
    /// where a check of `STOPS_ON_FAILURE` fails: the order the child runs.
    #[test]
    fn the_child_runs_its_checks_in_the_order_its_report_is_read_in() {
        let mut begun = Vec::new();
        let mut seen = Vec::new();
        check_file(
            Artifact::Echo.path(),
            &mut |check| begun.push(check.to_owned()),
            &mut |outcome| seen.push(outcome.check),
        );
        assert_eq!(seen, IN_CHILD);
        assert!(begun.iter().all(|b| IN_CHILD.contains(&b.as_str())));

        let mut seen = Vec::new();
        check_file(Artifact::NoRoot.path(), &mut |_| {}, &mut |outcome| {
            seen.push((outcome.check, outcome.passed));
        });
        assert_eq!(seen, [("loads".to_owned(), false)]);
    }

    #[test]
    fn each_abi_version_is_judged_by_the_fields_it_added() {
        let (passed, detail) = abi_verdict("1.1.0", 8);
        assert!(passed, "{detail}");
        assert!(detail.contains("1.1: its fields present"), "{detail}");

        let (passed, detail) = abi_verdict("1.0.0", 7);
        assert!(passed, "{detail}");
        assert!(detail.contains("1.1: predates it"), "{detail}");

        // Claims 1.1 without function_hints: refused, naming what is missing.
        let (passed, detail) = abi_verdict("1.1.0", 7);
        assert!(!passed);
        assert!(
            detail
                .contains("1.1: declared, but the root module lacks what it added: function_hints"),
            "{detail}"
        );

        let (passed, detail) = abi_verdict("1.2.0", 9);
        assert!(passed, "{detail}");
        assert!(detail.contains("1.2: its fields present"), "{detail}");

        let (passed, detail) = abi_verdict("1.1.0", 8);
        assert!(passed, "{detail}");
        assert!(
            detail.contains("1.2: predates it (default_function"),
            "{detail}"
        );

        // Claims 1.2 without default_function: refused.
        let (passed, detail) = abi_verdict("1.2.0", 8);
        assert!(!passed);
        assert!(
            detail.contains(
                "1.2: declared, but the root module lacks what it added: default_function"
            ),
            "{detail}"
        );

        let (passed, detail) = abi_verdict("1.2.0", 9);
        assert!(passed, "{detail}");
        assert!(
            detail.contains("1.3: predates it (call_outcome"),
            "{detail}"
        );

        // Claims 1.3 without call_outcome: refused.
        let (passed, detail) = abi_verdict("1.3.0", 9);
        assert!(!passed);
        assert!(
            detail.contains("1.3: declared, but the root module lacks what it added: call_outcome"),
            "{detail}"
        );

        let (passed, detail) = abi_verdict("1.3.0", 10);
        assert!(passed, "{detail}");
        assert!(detail.contains("1.3: its fields present"), "{detail}");

        let (passed, detail) = abi_verdict("1.4.0", 11);
        assert!(passed, "{detail}");
        assert!(detail.contains("newer than this host"), "{detail}");
    }
}
