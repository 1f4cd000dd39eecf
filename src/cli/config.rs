//! `rollout serve --config FILE`: the controller's flags as a YAML file, for a service
//! manager's unit to name one file instead of thirty flags. Each key is a flag of
//! `rollout serve` without its dashes (`max-in-flight: 8192`, `auth:
//! /etc/rollout/tokens.yaml`); a flag also given on the command line wins. A key
//! that is not a flag is refused, naming the closest one. `--print-config` prints the
//! effective configuration in the same form (defaults included, unset flags as
//! comments); every secret the controller takes is a file, so it shows paths only.
//!
//! The file becomes flags, placed before the command line's own: one parser checks
//! both, and the command line overrides (the serve command overrides its own flags).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::ArgMatches;

use crate::{Error, Result};

/// Flags of `rollout serve` that are not settings.
const NOT_SETTINGS: [&str; 3] = ["config", "print_config", "help"];

/// A configuration file read: where, and the flags it set.
pub struct Read {
    pub path: PathBuf,
    /// Each flag it set, as `--name`.
    pub flags: Vec<String>,
}

impl Read {
    /// A parse error caused by a value of this file, said in one line naming it;
    /// None for an error of the command line's own.
    pub fn blame(&self, error: &clap::Error) -> Option<String> {
        let clap::error::ContextValue::String(arg) = error.get(clap::error::ContextKind::InvalidArg)? else {
            return None;
        };
        let flag = arg.split([' ', '=']).next()?;
        if !self.flags.iter().any(|f| f == flag) {
            return None;
        }
        let said = error.to_string();
        let first = said.lines().next().unwrap_or_default().trim_start_matches("error: ");
        Some(format!(
            "--config {}: `{}`: {first}",
            self.path.display(),
            flag.trim_start_matches("--")
        ))
    }
}

/// `args` with the settings of `--config FILE` (when `args` run `rollout serve` with
/// one) placed right after `serve`, and the file read; `args` unchanged otherwise.
pub fn expanded(args: Vec<OsString>, serve: &clap::Command) -> Result<(Vec<OsString>, Option<Read>)> {
    let Some(at) = serve_position(&args) else {
        return Ok((args, None));
    };
    let Some(path) = config_path(&args[at + 1..]) else {
        return Ok((args, None));
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Usage(format!("--config {}: cannot read it: {e}", path.display())))?;
    let flags = flags_of(&text, serve).map_err(|e| Error::Usage(format!("--config {}: {e}", path.display())))?;
    let mut out = args[..=at].to_vec();
    out.extend(flags.iter().cloned());
    out.extend_from_slice(&args[at + 1..]);
    let flags = flags
        .iter()
        .filter_map(|f| f.to_str()?.split('=').next().map(str::to_string))
        .collect();
    Ok((out, Some(Read { path, flags })))
}

/// Where `serve` is in `args`: after the program and the top-level flags (those that
/// take a value take the next word unless written `--flag=value`).
fn serve_position(args: &[OsString]) -> Option<usize> {
    const VALUED: [&str; 6] = ["--server", "--ca", "--cert", "--key", "--token-file", "--log-format"];
    let mut i = 1;
    while let Some(word) = args.get(i).and_then(|w| w.to_str()) {
        if !word.starts_with('-') {
            return (word == "serve").then_some(i);
        }
        i += if VALUED.contains(&word) { 2 } else { 1 };
    }
    None
}

/// The value of `--config` among serve's own arguments.
fn config_path(args: &[OsString]) -> Option<std::path::PathBuf> {
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let Some(text) = word.to_str() else { continue };
        if text == "--" {
            return None;
        }
        if text == "--config" {
            return words.next().map(std::path::PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    None
}

/// The flags a configuration file's text stands for, checked against `serve`'s.
fn flags_of(text: &str, serve: &clap::Command) -> std::result::Result<Vec<OsString>, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let map = match doc {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return Ok(Vec::new()),
        _ => return Err("must be a mapping of flags to values (listen: 127.0.0.1:50051)".into()),
    };
    let known: Vec<&clap::Arg> = settings(serve).collect();
    let mut flags = Vec::new();
    for (key, value) in map {
        let key = match key {
            serde_yaml::Value::String(k) => k,
            other => {
                return Err(format!(
                    "key {} is not a flag's name",
                    scalar(&other).unwrap_or_default()
                ));
            }
        };
        let Some(arg) = known.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            return Err(unknown_key(&key, &known));
        };
        let flag = format!("--{key}");
        let takes_value = arg.get_action().takes_values();
        let values = match value {
            serde_yaml::Value::Null => Vec::new(),
            serde_yaml::Value::Sequence(items) => items
                .iter()
                .map(|v| scalar(v).ok_or_else(|| format!("`{key}`: each item is a plain value")))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            other => vec![scalar(&other).ok_or_else(|| format!("`{key}`: a plain value, not a mapping"))?],
        };
        if !takes_value {
            match values.as_slice() {
                [] => {}
                [v] if v == "true" => flags.push(flag.into()),
                [v] if v == "false" => {}
                _ => return Err(format!("`{key}` is a switch: true or false")),
            }
            continue;
        }
        for v in values {
            flags.push(format!("{flag}={v}").into());
        }
    }
    Ok(flags)
}

/// The settings among `serve`'s arguments.
fn settings(serve: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    serve
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !NOT_SETTINGS.contains(&a.get_id().as_str()))
}

/// A scalar as the flag's text.
fn scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// "`max-inflight` is not a flag of `rollout serve`: did you mean `max-in-flight`?"
fn unknown_key(key: &str, known: &[&clap::Arg]) -> String {
    let names: Vec<&str> = known.iter().filter_map(|a| a.get_long()).collect();
    match crate::text::closest(key, &names) {
        Some(near) => format!(
            "`{}` is not a flag of `rollout serve`: did you mean `{near}`? (each key is a flag without its dashes)",
            crate::ident::escaped(key)
        ),
        None => format!(
            "`{}` is not a flag of `rollout serve` (each key is a flag without its dashes; `rollout serve --help` lists them)",
            crate::ident::escaped(key)
        ),
    }
}

/// The effective configuration of a `rollout serve` run, as a `--config` file: each
/// setting with its value (defaults included), unset ones as comments.
pub fn effective(serve: &clap::Command, matches: &ArgMatches, config: Option<&Path>) -> String {
    let mut out = format!(
        "# rollout serve's effective configuration, rollout {}{}\n# Each key is a flag without its dashes; secrets are files, named here, never shown.\n",
        super::VERSION.as_str(),
        config
            .map(|p| format!(", from {} and the command line", p.display()))
            .unwrap_or_default()
    );
    for arg in settings(serve) {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        match raw.as_slice() {
            [] => out.push_str(&format!("# {long}:\n")),
            [one] => out.push_str(&format!("{long}: {}\n", yaml_scalar(one))),
            many => {
                out.push_str(&format!("{long}:\n"));
                for v in many {
                    out.push_str(&format!("  - {}\n", yaml_scalar(v)));
                }
            }
        }
    }
    out
}

/// `text` as a YAML scalar: numbers and switches as they are, other text quoted
/// when YAML would read it otherwise.
fn yaml_scalar(text: &str) -> String {
    if text == "true" || text == "false" || text.parse::<i64>().is_ok() || text.parse::<f64>().is_ok() {
        return text.to_string();
    }
    match serde_yaml::to_string(text) {
        Ok(s) => s.trim_end().to_string(),
        Err(_) => format!("{text:?}"),
    }
}
