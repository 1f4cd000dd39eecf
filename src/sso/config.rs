//! The `--oidc` file: which identity provider signs people in, as which client, and
//! which of its claims name the person and give the role. Read strictly: an unknown
//! field, a role that is not a person's, a URL that would send codes in clear text
//! are refused at start, with file:line:column and the fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::auth::Role;
use crate::yamlfile::Error;

/// Where the provider sends the browser back: the dashboard's route.
pub const CALLBACK_PATH: &str = "/oidc/callback";

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    issuer: String,
    client_id: String,
    client_secret_file: PathBuf,
    redirect_url: String,
    #[serde(default)]
    principal_claim: Option<String>,
    roles: RolesFile,
    /// Scopes asked for besides `openid`; by default those of `email`, `profile`
    /// and the two claims' names that the provider's discovery lists.
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    claim: String,
    map: BTreeMap<String, String>,
}

/// The client secret: never shown.
#[derive(Clone)]
pub struct Secret(pub(super) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A checked `--oidc` file.
#[derive(Debug, Clone)]
pub struct Config {
    /// As written: discovery compares it with the provider's own, character for
    /// character (a trailing `/` matters).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// As written: the provider compares it with the registered one.
    pub redirect_url: String,
    /// The claim whose value is the principal's name (default `sub`).
    pub principal_claim: String,
    /// The claim whose values map to roles.
    pub roles_claim: String,
    /// Claim value to role; the highest of a person's values wins.
    pub roles: BTreeMap<String, Role>,
    /// Scopes asked for besides `openid`, when the file lists them.
    pub scopes: Option<Vec<String>>,
}

impl Config {
    /// Reads and checks the file at `path`, and the client secret it names (a
    /// relative `client_secret_file` is beside the file).
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = crate::yamlfile::read(path, "OIDC file")?;
        let shown = path.display().to_string();
        let dir = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &shown, |file| {
            let file = dir.join(file);
            let secret = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(secret.lines().next().unwrap_or_default().trim().to_string())
        })
    }

    /// Checks `text` (shown as `shown`), reading the secret through `read_secret`.
    pub fn parse(
        text: &str,
        shown: &str,
        read_secret: impl FnOnce(&Path) -> Result<String, String>,
    ) -> Result<Config, Error> {
        let file: File = crate::yamlfile::parse(text, shown)?;
        let at = |field: &str, message: String| Error::at(shown, text, field, message);
        let issuer = endpoint(&file.issuer).map_err(|m| at("issuer", m))?;
        if issuer.query().is_some() {
            return Err(at(
                "issuer",
                "has a query: the issuer is a plain URL, as the provider's discovery document names it".into(),
            ));
        }
        let redirect_url = endpoint(&file.redirect_url).map_err(|m| at("redirect_url", m))?;
        if !redirect_url.path().ends_with(CALLBACK_PATH) || redirect_url.query().is_some() {
            return Err(at(
                "redirect_url",
                format!(
                    "must end in {CALLBACK_PATH} (where the dashboard takes the provider's answer), as `https://rollout.example.com{CALLBACK_PATH}`"
                ),
            ));
        }
        if file.client_id.trim().is_empty() || file.client_id.chars().any(char::is_control) {
            return Err(at(
                "client_id",
                "is empty: the client id the provider registered for rollout".into(),
            ));
        }
        let secret = read_secret(&file.client_secret_file).map_err(|e| {
            at(
                "client_secret_file",
                format!("cannot be read ({e}): put the client secret the provider issued there, on one line"),
            )
        })?;
        if secret.is_empty() {
            return Err(at(
                "client_secret_file",
                format!(
                    "{} holds no secret: put the client secret the provider issued there, on one line",
                    file.client_secret_file.display()
                ),
            ));
        }
        let principal_claim = file.principal_claim.unwrap_or_else(|| "sub".into());
        claim_name(&principal_claim).map_err(|m| at("principal_claim", m))?;
        claim_name(&file.roles.claim).map_err(|m| at("roles.claim", m))?;
        if file.roles.map.is_empty() {
            return Err(at(
                "roles.map",
                "is empty: nobody could sign in; map claim values to viewer, operator or admin".into(),
            ));
        }
        let mut roles = BTreeMap::new();
        for (value, role) in &file.roles.map {
            let field = format!("roles.map.{value}");
            match Role::parse(role) {
                Some(r @ (Role::Viewer | Role::Operator | Role::Admin)) => {
                    roles.insert(value.clone(), r);
                }
                _ => {
                    return Err(at(
                        &field,
                        format!(
                            "`{}` is not a role for a person: use viewer, operator or admin",
                            crate::ident::escaped(role)
                        ),
                    ));
                }
            }
        }
        if let Some(scopes) = &file.scopes {
            for s in scopes {
                if s.is_empty() || !s.bytes().all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\\') {
                    return Err(at(
                        "scopes",
                        format!(
                            "`{}` is not a scope: printable ASCII without spaces",
                            crate::ident::escaped(s)
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            issuer: file.issuer,
            client_id: file.client_id.trim().to_string(),
            client_secret: Secret(secret),
            redirect_url: file.redirect_url,
            principal_claim,
            roles_claim: file.roles.claim,
            roles,
            scopes: file.scopes,
        })
    }

    /// The highest role any of `claims`' role values maps to, and the values seen
    /// (for the refusal when none maps).
    pub fn role(&self, claims: &serde_json::Map<String, Value>) -> (Option<Role>, Vec<String>) {
        let values: Vec<String> = match claim(claims, &self.roles_claim) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        let role = values.iter().filter_map(|v| self.roles.get(v)).max().copied();
        (role, values)
    }

    /// The principal's name: the principal claim, a string that passes the grammar
    /// of people's names.
    pub fn principal(&self, claims: &serde_json::Map<String, Value>) -> Result<String, String> {
        // An address the provider itself says is unverified names nobody yet.
        if self.principal_claim == "email" && claims.get("email_verified") == Some(&Value::Bool(false)) {
            return Err(
                "the provider says this e-mail address is not verified: verify it there, or set principal_claim to sub"
                    .into(),
            );
        }
        match claim(claims, &self.principal_claim) {
            Some(Value::String(name)) => {
                crate::ident::person(name).map_err(|e| format!("the `{}` claim: {e}", self.principal_claim))?;
                Ok(name.clone())
            }
            Some(_) => Err(format!(
                "the `{}` claim is not a string: set principal_claim to one that names the person",
                self.principal_claim
            )),
            None => Err(format!(
                "the provider did not say `{}`: set principal_claim to a claim it gives (or ask for its scope under scopes:)",
                self.principal_claim
            )),
        }
    }

    /// Whether `claims` hold both claims this file reads.
    pub fn complete(&self, claims: &serde_json::Map<String, Value>) -> bool {
        claim(claims, &self.principal_claim).is_some() && claim(claims, &self.roles_claim).is_some()
    }
}

/// A claim by its name, or (when no claim has that name) by a dotted path into
/// nested objects, as Keycloak's `realm_access.roles`. Auth0's namespaced claims
/// (`https://example.com/groups`) hold dots too, so the whole name is tried first.
pub fn claim<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut at = claims.get(parts.next()?)?;
    for part in parts {
        at = at.as_object()?.get(part)?;
    }
    Some(at)
}

/// A URL the browser or the controller is sent to: https, or http on loopback only
/// (codes and tokens must not cross a network in clear text).
fn endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{}` is not a URL: {e}", crate::ident::escaped(text)))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "`{}` is plain http: use https (http is for loopback tests only)",
                crate::ident::escaped(text)
            ));
        }
        _ => return Err(format!("`{}` is not an https URL", crate::ident::escaped(text))),
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{}` holds credentials or a fragment: give the plain URL",
            crate::ident::escaped(text)
        ));
    }
    Ok(url)
}

/// A claim's name: printable ASCII, no spaces.
fn claim_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.len() <= 256 && name.bytes().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a claim name: printable ASCII without spaces, as `email` or `groups`",
            crate::ident::escaped(name)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GOOD: &str = "issuer: https://login.example.com/\nclient_id: rollout\nclient_secret_file: /etc/rollout/oidc.secret\nredirect_url: https://rollout.example.com/oidc/callback\nprincipal_claim: email\nroles:\n  claim: groups\n  map: {sre-oncall: operator, sre-leads: admin, everyone: viewer}\n";

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, "oidc.yaml", |p| {
            assert_eq!(p, Path::new("/etc/rollout/oidc.secret"));
            Ok("s3cret".into())
        })
    }

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn the_issues_example_is_read() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.issuer, "https://login.example.com/");
        assert_eq!(c.principal_claim, "email");
        assert_eq!(c.roles["sre-leads"], Role::Admin);
        assert_eq!(c.client_secret.0, "s3cret");
        assert_eq!(
            format!("{c:?}").matches("s3cret").count(),
            0,
            "the secret is never shown"
        );
        let default = parse(&GOOD.replace("principal_claim: email\n", "")).unwrap();
        assert_eq!(default.principal_claim, "sub");
    }

    #[test]
    fn the_highest_mapped_role_wins() {
        let c = parse(GOOD).unwrap();
        let (role, _) = c.role(&claims(json!({"groups": ["everyone", "sre-oncall", "unmapped"]})));
        assert_eq!(role, Some(Role::Operator));
        let (role, _) = c.role(&claims(json!({"groups": "sre-leads"})));
        assert_eq!(role, Some(Role::Admin));
        let (role, seen) = c.role(&claims(json!({"groups": ["contractors"]})));
        assert_eq!((role, seen), (None, vec!["contractors".to_string()]));
        assert_eq!(c.role(&claims(json!({"email": "a@b"}))).0, None);
    }

    #[test]
    fn nested_and_namespaced_claims_are_found() {
        let nested = claims(json!({"realm_access": {"roles": ["sre-leads"]}, "https://x.example/groups": ["g"]}));
        assert_eq!(claim(&nested, "realm_access.roles"), Some(&json!(["sre-leads"])));
        assert_eq!(claim(&nested, "https://x.example/groups"), Some(&json!(["g"])));
        assert_eq!(claim(&nested, "realm_access.nothing"), None);
    }

    #[test]
    fn the_principal_passes_the_grammar_of_names() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.principal(&claims(json!({"email": "alice@example.com"}))),
            Ok("alice@example.com".into())
        );
        let e = c.principal(&claims(json!({"email": "alice\n<b>"}))).unwrap_err();
        assert!(e.contains("`email` claim") && e.contains("person's name"), "{e}");
        let e = c.principal(&claims(json!({"sub": "x"}))).unwrap_err();
        assert!(e.contains("did not say `email`"), "{e}");
        assert!(
            c.principal(&claims(json!({"email": 7})))
                .unwrap_err()
                .contains("not a string")
        );
        let unverified = claims(json!({"email": "mallory@example.com", "email_verified": false}));
        assert!(c.principal(&unverified).unwrap_err().contains("not verified"));
    }

    #[test]
    fn bad_files_are_refused_at_their_line() {
        for (change, want) in [
            (
                (
                    "issuer: https://login.example.com/",
                    "issuer: http://login.example.com/",
                ),
                "oidc.yaml:1:1: issuer: `http://login.example.com/` is plain http",
            ),
            (
                (
                    "redirect_url: https://rollout.example.com/oidc/callback",
                    "redirect_url: https://rollout.example.com/cb",
                ),
                "oidc.yaml:4:1: redirect_url: must end in /oidc/callback",
            ),
            (
                ("everyone: viewer", "everyone: agent"),
                "roles.map.everyone: `agent` is not a role for a person",
            ),
            (
                ("principal_claim: email", "principal_claim: e mail"),
                "oidc.yaml:5:1: principal_claim: `e mail` is not a claim name",
            ),
            (
                ("principal_claim: email", "principal_claim: email\ntenant: x"),
                "oidc.yaml:6:1: unknown field `tenant`",
            ),
            (("client_id: rollout", "client_id: ''"), "client_id: is empty"),
            (
                (
                    "issuer: https://login.example.com/",
                    "issuer: https://user:pw@login.example.com/",
                ),
                "holds credentials",
            ),
        ] {
            let text = GOOD.replace(change.0, change.1);
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{change:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(
            parse(&GOOD.replace(
                "  map: {sre-oncall: operator, sre-leads: admin, everyone: viewer}",
                "  map: {}"
            ))
            .unwrap_err()
            .to_string()
            .contains("roles.map: is empty")
        );
        let loopback = GOOD
            .replace("https://login.example.com/", "http://127.0.0.1:9000/")
            .replace("https://rollout.example.com", "http://[::1]:8080");
        assert!(parse(&loopback).is_ok(), "plain http on loopback is for tests");
    }

    #[test]
    fn an_unreadable_or_empty_secret_is_refused_without_showing_it() {
        let e = Config::parse(GOOD, "oidc.yaml", |_| {
            Err("/etc/rollout/oidc.secret: No such file".into())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("client_secret_file: cannot be read (/etc/rollout/oidc.secret: No such file)"),
            "{e}"
        );
        let e = Config::parse(GOOD, "oidc.yaml", |_| Ok(String::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no secret"), "{e}");
    }
}
