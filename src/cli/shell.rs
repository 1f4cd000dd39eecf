//! What a packaged command line brings along: shell completions (clap_complete) and
//! manual pages (clap_mangen), both made from the same definition as `--help`.

use std::path::Path;
use std::process::ExitCode;

use crate::{Error, Result};

/// Prints `shell`'s completion script for `rollout`.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut command = super::command();
    clap_complete::generate(shell, &mut command, "rollout", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes `rollout.1` and a page for every subcommand (`rollout-serve.1`,
/// `rollout-plan-check.1`...) into `dir`, and says how many.
pub fn man(dir: &Path) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("--dir {}: cannot create it", dir.display()), e))?;
    let command = super::command();
    let mut written = 0;
    write_pages(&command, "rollout", dir, &mut written)?;
    println!("wrote {written} manual pages into {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The page of `command` (named `name`), then its subcommands' pages.
fn write_pages(command: &clap::Command, name: &str, dir: &Path, written: &mut usize) -> Result<()> {
    let page = command.clone().name(name.to_string()).version(super::VERSION.as_str());
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|e| Error::io(format!("cannot render the manual page of `{name}`"), e))?;
    let path = dir.join(format!("{name}.1"));
    super::write_atomically(&path, &roff)?;
    *written += 1;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every argument of every command, as `path: --flag` for those without help.
    fn without_help(command: &clap::Command, path: &str, found: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                found.push(format!("{path}: {id}"));
            }
        }
        for sub in command.get_subcommands() {
            without_help(sub, &format!("{path} {}", sub.get_name()), found);
        }
    }

    #[test]
    fn every_argument_has_a_line_of_help() {
        let mut command = super::super::command();
        command.build();
        let mut found = Vec::new();
        without_help(&command, "rollout", &mut found);
        assert!(found.is_empty(), "arguments without help:\n{}", found.join("\n"));
    }

    #[test]
    fn offline_commands_show_no_connection_flags_and_clients_do() {
        let mut command = super::super::command();
        command.build();
        let find = |path: &[&str]| {
            let mut c = &command;
            for name in path {
                c = c.find_subcommand(name).expect("a command");
            }
            c.get_arguments()
                .filter(|a| !a.is_hide_set())
                .map(|a| a.get_id().to_string())
                .collect::<Vec<_>>()
        };
        for offline in [
            &["plan", "check"][..],
            &["fleet", "generate"],
            &["token", "new"],
            &["notify", "check"],
        ] {
            let args = find(offline);
            assert!(
                !args
                    .iter()
                    .any(|a| a == "server" || a == "token_file" || a == "log_format"),
                "{offline:?}: {args:?}"
            );
        }
        for client in [&["status"][..], &["notify", "status"], &["restart"], &["audit"]] {
            let args = find(client);
            assert!(
                args.iter().any(|a| a == "server") && args.iter().any(|a| a == "token_file"),
                "{client:?}: {args:?}"
            );
            assert!(!args.iter().any(|a| a == "log_format"), "{client:?}: {args:?}");
        }
        assert!(find(&["serve"]).iter().any(|a| a == "log_format"));
    }
}
