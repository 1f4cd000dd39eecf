//! The `commands:` of the files that say what runs on a host (an agent's config, the
//! SSH driver's file): argv lists, never shell strings, `{version}` substituted, each
//! with the timeout past which its whole process group is killed.

use std::time::Duration;

use serde::Deserialize;

use super::Error;
use crate::text::parse_duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandFile {
    argv: Vec<String>,
    timeout: String,
}

/// `commands:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsFile {
    deploy: CommandFile,
    #[serde(default)]
    rollback: Option<CommandFile>,
    #[serde(default)]
    restart: Option<CommandFile>,
    #[serde(default)]
    health: Option<CommandFile>,
}

/// A command to run: argv (never a shell string; `{version}` is substituted) and
/// how long it may take before its whole process group is killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

impl CommandSpec {
    /// The argv with `{version}` replaced.
    pub fn with_version(&self, version: &str) -> Vec<String> {
        self.argv.iter().map(|a| a.replace("{version}", version)).collect()
    }
}

/// `commands:` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    pub deploy: CommandSpec,
    /// Defaults to the deploy command with the previous version.
    pub rollback: Option<CommandSpec>,
    pub restart: Option<CommandSpec>,
    /// Without one, the host is reported healthy.
    pub health: Option<CommandSpec>,
}

impl Commands {
    /// Validates `commands:` of the file at `path` (errors name `commands.NAME.field`).
    pub fn check(file: CommandsFile, path: &str) -> Result<Commands, Error> {
        let invalid = |field: &str, message: String| Error::invalid(path, field, message);
        let command = |name: &str, c: CommandFile| -> Result<CommandSpec, Error> {
            if c.argv.is_empty() || c.argv[0].trim().is_empty() {
                return Err(invalid(
                    &format!("commands.{name}.argv"),
                    "is empty: give the program and its arguments as a list".into(),
                ));
            }
            let timeout = parse_duration(&c.timeout).map_err(|m| invalid(&format!("commands.{name}.timeout"), m))?;
            if timeout.is_zero() {
                return Err(invalid(
                    &format!("commands.{name}.timeout"),
                    "must be more than 0s".into(),
                ));
            }
            Ok(CommandSpec { argv: c.argv, timeout })
        };
        Ok(Commands {
            deploy: command("deploy", file.deploy)?,
            rollback: file.rollback.map(|x| command("rollback", x)).transpose()?,
            restart: file.restart.map(|x| command("restart", x)).transpose()?,
            health: file.health.map(|x| command("health", x)).transpose()?,
        })
    }
}
