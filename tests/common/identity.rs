//! Who calls in the tests: one token per principal, the tokens file that gives each
//! a role (and binds an agent to its hosts), and clients that present them.

use std::path::{Path, PathBuf};

use rollout::auth::hash_token;
use rollout::cli::{Client, Credentials, connect_with};

/// The bearer token `principal` presents.
pub fn token(principal: &str) -> String {
    format!("token-of-{principal}-0123456789")
}

/// The text of a tokens file: each `(principal, role, hosts)` with [`token`]'s hash;
/// `hosts` (for an agent) binds the token to those hosts, empty leaves it unbound.
pub fn tokens_yaml(entries: &[(&str, &str, &[&str])]) -> String {
    let mut text = String::from("tokens:\n");
    for (principal, role, hosts) in entries {
        text.push_str(&format!(
            "  - principal: {principal}\n    role: {role}\n    sha256: {}\n",
            hash_token(&token(principal))
        ));
        if !hosts.is_empty() {
            let quoted: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
            text.push_str(&format!("    hosts: [{}]\n", quoted.join(", ")));
        }
    }
    text
}

/// `dir/tokens.yaml` giving each `(principal, role)` its role; its path.
pub fn tokens_file(dir: &Path, people: &[(&str, &str)]) -> PathBuf {
    let entries: Vec<(&str, &str, &[&str])> = people.iter().map(|(p, r)| (*p, *r, &[][..])).collect();
    bound_tokens_file(dir, &entries)
}

/// `dir/tokens.yaml` for `entries` (see [`tokens_yaml`]); its path.
pub fn bound_tokens_file(dir: &Path, entries: &[(&str, &str, &[&str])]) -> PathBuf {
    let path = dir.join("tokens.yaml");
    std::fs::write(&path, tokens_yaml(entries)).expect("write the tokens file");
    path
}

/// The credentials of `principal` (its token, no client certificate).
pub fn as_token(principal: &str) -> Credentials {
    Credentials {
        token: Some(token(principal)),
        ..Default::default()
    }
}

/// A client of `server` speaking as `principal`.
pub async fn as_who(server: &str, principal: &str) -> Client {
    connect_with(server, &as_token(principal)).await.expect("connect")
}

/// `rollout ARGS` as `who` (its token in a file under `dir`) against `server`:
/// (success, stdout, stderr).
pub async fn as_person(who: &str, dir: &Path, server: &str, args: &[&str]) -> (bool, String, String) {
    let token_file = dir.join(format!("{who}.token"));
    std::fs::write(&token_file, format!("{}\n", token(who))).expect("write the token file");
    let mut all = args.to_vec();
    all.extend([
        "--server",
        server,
        "--token-file",
        token_file.to_str().unwrap_or_default(),
    ]);
    let out = super::rollout(&all).await;
    (out.status.success(), super::text(&out.stdout), super::text(&out.stderr))
}
