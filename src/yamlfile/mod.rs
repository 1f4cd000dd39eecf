//! The YAML files operators write besides plans (fleet files, agent configs, tokens
//! files): read, parsed strictly, and refused with one error type that names the file
//! and the line and column, or the field.

pub mod commands;
mod locate;

use std::path::Path;

pub use locate::locate;

use serde::de::DeserializeOwned;

/// Why such a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: cannot read the {what}: {source}")]
    Read {
        path: String,
        /// What the file is ("fleet file", "agent config", "tokens file").
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A field breaks a rule.
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

impl Error {
    /// A field of the file's `text` that breaks a rule, at its line and column when
    /// it can be found there.
    pub fn at(path: &str, text: &str, field: &str, message: impl Into<String>) -> Error {
        match locate(text, field) {
            Some((line, column)) => Error::Syntax {
                path: path.to_string(),
                line,
                column,
                message: format!("{field}: {}", message.into()),
            },
            None => Error::invalid(path, field, message),
        }
    }

    pub fn invalid(path: &str, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: path.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The text of `path`; `what` names the kind of file in the error.
pub fn read(path: &Path, what: &'static str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        what,
        source,
    })
}

/// `text` as a `T`; `path` names the file in the error, with line and column.
pub fn parse<T: DeserializeOwned>(text: &str, path: &str) -> Result<T, Error> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column, message) = yaml_error(&e);
        Error::Syntax {
            path: path.to_string(),
            line,
            column,
            message,
        }
    })
}

/// A serde_yaml error as (line, column, message without serde_yaml's own location);
/// every file people write here reports it as `file:line:column: message`.
pub fn yaml_error(e: &serde_yaml::Error) -> (usize, usize, String) {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    (line, column, strip_location(&e.to_string()))
}

/// serde_yaml appends " at line L column C"; we print the location our own way. The
/// input it quotes may hold newlines; they are escaped. A misspelt field gets the
/// field it was meant to be.
pub fn strip_location(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    did_you_mean(&crate::text::one_line(message))
}

/// serde's "unknown field `max_paralel`, expected one of `name`, ... (every field)"
/// as "unknown field `max_paralel`: did you mean `max_parallel`?" when one field is
/// close; the message unchanged otherwise.
fn did_you_mean(message: &str) -> String {
    const UNKNOWN: &str = "unknown field `";
    let Some(start) = message.find(UNKNOWN) else {
        return message.to_string();
    };
    let rest = &message[start + UNKNOWN.len()..];
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match crate::text::closest(field, &names) {
        Some(near) => format!("{}{UNKNOWN}{field}`: did you mean `{near}`?", &message[..start]),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_field_names_the_field_it_was_meant_to_be() {
        assert_eq!(
            strip_location(
                "unknown field `max_paralel`, expected one of `name`, `kind`, `max_parallel`, `bake` at line 3 column 1"
            ),
            "unknown field `max_paralel`: did you mean `max_parallel`?"
        );
        assert_eq!(
            strip_location("analysis: unknown field `intervl`, expected one of `prometheus`, `interval`"),
            "analysis: unknown field `intervl`: did you mean `interval`?"
        );
        let far = "unknown field `health`, expected one of `name`, `kind`";
        assert_eq!(strip_location(far), far, "nothing close: every field, as serde says");
    }
}
