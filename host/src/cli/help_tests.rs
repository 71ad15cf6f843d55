//! Every command's `--help`, checked as a whole: help that names a flag
//! the command does not take, or an argument nobody described, is a bug a
//! user meets before any code runs.

use clap::CommandFactory as _;

use super::Cli;

/// Every command, with its path (`spearlet task get`), after `build`
/// (which propagates global arguments to subcommands, as a user sees
/// them); not clap's generated `help` subcommand.
fn all_commands() -> Vec<(String, clap::Command)> {
    fn walk(path: String, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        // clap's own `help` subcommand mirrors the tree with no arguments.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(format!("{path} {}", sub.get_name()), sub, out);
        }
        out.push((path, cmd.clone()));
    }
    let mut root = Cli::command();
    root.build();
    let mut out = Vec::new();
    walk("spearlet".to_owned(), &root, &mut out);
    out
}

/// The `--flag` words of `text` (`--task-id`, not `--` alone).
fn flags_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let after = &rest[at + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
        let name = name.trim_end_matches('-');
        if !name.is_empty() && !preceded_by_word {
            found.push(name.to_owned());
        }
        rest = &after[name.len().min(after.len())..];
    }
    found
}

#[test]
fn the_cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_argument_of_every_command_has_help() {
    let mut missing = Vec::new();
    for (path, cmd) in all_commands() {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path}: {id}"));
            }
        }
        if !cmd.is_hide_set() && cmd.get_about().is_none() && path != "spearlet" {
            missing.push(format!("{path}: the command itself"));
        }
    }
    assert!(missing.is_empty(), "arguments without help: {missing:#?}");
}

#[test]
fn every_flag_a_help_text_names_exists_on_its_command() {
    let mut wrong = Vec::new();
    for (path, cmd) in all_commands() {
        let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        let mut texts: Vec<String> = [cmd.get_about(), cmd.get_long_about()]
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        for arg in cmd.get_arguments() {
            texts.extend(
                [arg.get_help(), arg.get_long_help()]
                    .into_iter()
                    .flatten()
                    .map(ToString::to_string),
            );
        }
        for text in &texts {
            for flag in flags_in(text) {
                if !longs.contains(&flag.as_str()) {
                    wrong.push(format!("{path}: --{flag} (in {text:?})"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "help names flags its command lacks: {wrong:#?}"
    );
}

#[test]
fn only_client_commands_take_server_options() {
    let client = [
        "invoke",
        "tasks",
        "executions",
        "status",
        "cancel",
        "health",
        "task get",
        "task upgrade",
        "task rollback",
        "task delete",
    ];
    for (path, cmd) in all_commands() {
        let is_client = client.iter().any(|c| path == format!("spearlet {c}"));
        for flag in ["endpoint", "token", "ca"] {
            let has = cmd.get_arguments().any(|a| a.get_long() == Some(flag));
            assert_eq!(has, is_client, "{path} --{flag}");
        }
        if is_client {
            assert!(
                cmd.get_arguments().any(|a| a.get_long() == Some("format")),
                "{path} --format"
            );
        }
    }
}

#[test]
fn flags_are_found_in_help_text() {
    assert_eq!(
        flags_in("With --task-id: create; a `--` alone, or x--y, is none; --dry-run."),
        ["task-id", "dry-run"]
    );
}
