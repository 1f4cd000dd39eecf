//! One grammar for every identifier that comes from outside: host ids, customer ids,
//! label keys and versions, wherever they enter (fleet files, Ansible import,
//! heartbeats, plans, restart requests, the agent's config). A host id
//! becomes a path on the host (`state_dir: /var/lib/rollout/{host}`), an argument of
//! the host program and a line of a Slack message; a version becomes an argument of
//! the operator's own script. Checked here once, at the edge, nothing past it needs
//! to re-check or quote them.
//!
//! Below everything that uses it: this module imports only [`crate::text`].

use std::fmt;

/// The longest host id (a DNS name's limit).
pub const MAX_HOST_ID: usize = 253;
/// The longest customer id.
pub const MAX_CUSTOMER_ID: usize = 253;
/// The longest label key (as plans have always said).
pub const MAX_LABEL_KEY: usize = 63;
/// The longest version (as plans have always said).
pub const MAX_VERSION: usize = 128;
/// The longest name of a person (an e-mail address's limit).
pub const MAX_PERSON: usize = 254;

/// Which kind of identifier, for the rule and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `apac-exo-0001`, `db1.example.com`, `fe80::1`: letters, digits, `. _ - :`.
    HostId,
    /// `contoso`: as host ids.
    CustomerId,
    /// `region`, `app.kubernetes.io/name`: as host ids, and `/` (never in a path).
    LabelKey,
    /// `15.20.8207.12`, `1.2.3+build.7`: letters, digits, `. _ + -`.
    Version,
    /// A controller's `--advertise` URL, `https://rollout-a.corp:7443`: `http://` or
    /// `https://`, then a host and port (letters, digits, `. - : [ ]`).
    ControllerUrl,
    /// A person signed in by single sign-on, as the identity provider names them
    /// (`alice@example.com`, `00u1a2b3c`): letters, digits, `. _ - + @`. It becomes
    /// audit text, a Slack line and the four-eyes rule's name.
    Person,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::HostId => "host id",
            Kind::CustomerId => "customer id",
            Kind::LabelKey => "label key",
            Kind::Version => "version",
            Kind::ControllerUrl => "controller URL",
            Kind::Person => "person's name",
        }
    }

    fn max(self) -> usize {
        match self {
            Kind::HostId => MAX_HOST_ID,
            Kind::CustomerId => MAX_CUSTOMER_ID,
            Kind::LabelKey => MAX_LABEL_KEY,
            Kind::Version => MAX_VERSION,
            Kind::ControllerUrl => "https://".len() + MAX_HOST_ID + ":65535".len(),
            Kind::Person => MAX_PERSON,
        }
    }

    fn allowed(self, c: u8) -> bool {
        c.is_ascii_alphanumeric()
            || match self {
                Kind::HostId | Kind::CustomerId => b"._-:".contains(&c),
                Kind::LabelKey => b"._-:/".contains(&c),
                Kind::Version => b"._+-".contains(&c),
                Kind::ControllerUrl => b".-:[]".contains(&c),
                Kind::Person => b"._-+@".contains(&c),
            }
    }

    fn rule(self) -> String {
        let chars = match self {
            Kind::HostId | Kind::CustomerId => "letters, digits, . _ - and :",
            Kind::LabelKey => "letters, digits, . _ - : and /",
            Kind::Version => "letters, digits, . _ + and -",
            Kind::Person => "letters, digits, . _ - + and @",
            Kind::ControllerUrl => {
                return format!(
                    "a controller URL is http:// or https:// and a host and port of letters, digits, . - : [ and ] ({} at most), as `https://rollout-a.corp:7443`",
                    self.max()
                );
            }
        };
        format!(
            "a {} starts with a letter or digit and holds only {chars} ({} at most)",
            self.what(),
            self.max()
        )
    }
}

/// Why an identifier was refused: the value (escaped) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// What was refused, escaped for one line (never more than 80 characters of it).
    pub shown: String,
    pub kind: Kind,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a valid {}: {}",
            self.shown,
            self.kind.what(),
            self.kind.rule()
        )
    }
}

/// Checks `value` against the grammar of `kind`.
pub fn check(kind: Kind, value: &str) -> Result<(), Invalid> {
    let rest = match kind {
        Kind::ControllerUrl => value.strip_prefix("http://").or_else(|| value.strip_prefix("https://")),
        _ => Some(value),
    };
    let b = rest.unwrap_or_default().as_bytes();
    let first = |c: u8| c.is_ascii_alphanumeric() || (kind == Kind::ControllerUrl && c == b'[');
    let ok = !b.is_empty() && value.len() <= kind.max() && first(b[0]) && b.iter().all(|&c| kind.allowed(c));
    if ok {
        Ok(())
    } else {
        Err(Invalid {
            shown: escaped(value),
            kind,
        })
    }
}

/// A host id, or why not.
pub fn host_id(value: &str) -> Result<(), Invalid> {
    check(Kind::HostId, value)
}

/// A customer id, or why not.
pub fn customer_id(value: &str) -> Result<(), Invalid> {
    check(Kind::CustomerId, value)
}

/// A label key, or why not.
pub fn label_key(value: &str) -> Result<(), Invalid> {
    check(Kind::LabelKey, value)
}

/// A version, or why not.
pub fn version(value: &str) -> Result<(), Invalid> {
    check(Kind::Version, value)
}

/// A controller's advertised URL, or why not.
pub fn controller_url(value: &str) -> Result<(), Invalid> {
    check(Kind::ControllerUrl, value)
}

/// A person's name from an identity provider, or why not.
pub fn person(value: &str) -> Result<(), Invalid> {
    check(Kind::Person, value)
}

/// `value` as it may be quoted in one line of an error: control characters escaped
/// ([`crate::text::one_line`]), backticks escaped, at most 80 characters (then `…`).
pub fn escaped(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in crate::text::one_line(value).chars().enumerate() {
        if i == 80 {
            out.push('…');
            break;
        }
        if c == '`' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids() {
        for ok in [
            "apac-exo-0001",
            "db1.example.com",
            "fe80::1",
            "0",
            "a_b",
            &"a".repeat(253),
        ] {
            assert_eq!(host_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "-rf",
            ".hidden",
            "a b",
            "a\nb",
            "ä",
            &"a".repeat(254),
        ] {
            assert!(host_id(bad).is_err(), "{bad:?}");
        }
        let e = host_id("../x\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "`../x\\n` is not a valid host id: a host id starts with a letter or digit and holds only letters, digits, . _ - and : (253 at most)"
        );
    }

    #[test]
    fn versions_never_look_like_options() {
        for ok in ["15.20.8207.12", "1.2.3+build.7", "v2_rc-1"] {
            assert_eq!(version(ok), Ok(()), "{ok}");
        }
        for bad in ["-rf", "--help", "", "..", "1 2", "$(id)", "a/b", &"1".repeat(129)] {
            assert!(version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_keys_and_customers() {
        assert_eq!(label_key("app.kubernetes.io/name"), Ok(()));
        assert!(label_key("/etc").is_err());
        assert!(label_key(&"k".repeat(64)).is_err());
        assert_eq!(customer_id("contoso-seoul"), Ok(()));
        assert!(customer_id("contoso seoul").is_err());
    }

    #[test]
    fn controller_urls_are_a_scheme_and_an_authority() {
        for ok in [
            "https://rollout-a.corp:7443",
            "http://127.0.0.1:7070",
            "http://[::1]:7070",
            "http://a",
        ] {
            assert_eq!(controller_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "http://",
            "ftp://a:1",
            "127.0.0.1:7070",
            "http://a:1/path",
            "http://a:1\n",
            "https://user@a:1",
            "http://-a",
            &format!("http://{}", "a".repeat(300)),
        ] {
            assert!(controller_url(bad).is_err(), "{bad:?}");
        }
        let e = controller_url("http://a b").unwrap_err().to_string();
        assert!(e.contains("http:// or https://"), "{e}");
    }

    #[test]
    fn people_are_named_as_providers_name_them() {
        for ok in [
            "alice@example.com",
            "00u1a2b3cD4",
            "bob.smith+sre@corp.example",
            "carol_x-1",
        ] {
            assert_eq!(person(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "@corp",
            "a b",
            "alice\n",
            "<script>",
            "a`b",
            "ä@x",
            &"a".repeat(255),
        ] {
            assert!(person(bad).is_err(), "{bad:?}");
        }
        let e = person("Alice Smith").unwrap_err().to_string();
        assert!(e.contains("person's name") && e.contains("@"), "{e}");
    }

    #[test]
    fn long_values_are_cut_and_backticks_escaped() {
        let e = host_id(&format!("`{}", "x".repeat(200))).unwrap_err();
        assert!(e.shown.starts_with("\\`xxx") && e.shown.ends_with('…'), "{}", e.shown);
    }
}
