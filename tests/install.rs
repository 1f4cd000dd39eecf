//! What installing `rollout` as a service needs, through the real binary: a version
//! that names its commit, completions bash loads, manual pages, and help that shows
//! each command only the flags it uses.

mod common;

use common::*;

#[tokio::test]
async fn the_version_names_the_release_the_commit_and_the_store_schema() {
    let out = rollout(&["--version"]).await;
    assert!(out.status.success());
    let said = text(&out.stdout);
    let release = env!("CARGO_PKG_VERSION");
    assert!(said.starts_with(&format!("rollout {release} (commit ")), "{said}");
    assert!(said.trim_end().ends_with(", store schema 5)"), "{said}");
    // Built from this checkout: the commit is git's, when git is here to say it.
    if let Ok(git) = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        && git.status.success()
    {
        let head = text(&git.stdout);
        let commit = said
            .split("(commit ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or("");
        assert_eq!(commit.len(), 12, "{said}");
        assert_eq!(head.trim(), commit, "the binary names the commit it was built from");
    }
    // The changelog has this release.
    let changelog = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains(&format!("## [{release}] - ")),
        "CHANGELOG.md lacks {release}"
    );
    let license = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
}

#[tokio::test]
async fn bash_loads_the_completions_and_they_complete_commands_and_flags() {
    // CI runs in bash (`bash .ci/run`): it is always there.
    let bash = "bash";
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rollout.bash");
    let out = rollout(&["completions", "bash"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(&script, &out.stdout).unwrap();
    // Loaded as bash-completion would, then asked as the shell asks at a TAB.
    let probe = format!(
        "source {}\ncomplete -p rollout\nCOMP_WORDS=(rollout sub); COMP_CWORD=1; COMP_LINE='rollout sub'; COMP_POINT=11\n_rollout rollout sub rollout\necho \"words: ${{COMPREPLY[*]}}\"\nCOMP_WORDS=(rollout serve --max-in); COMP_CWORD=2; COMP_LINE='rollout serve --max-in'; COMP_POINT=22\n_rollout rollout --max-in serve\necho \"flags: ${{COMPREPLY[*]}}\"\n",
        script.display()
    );
    let out = std::process::Command::new(bash)
        .args(["--norc", "-c", &probe])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("complete -") && said.contains(" rollout\n"), "{said}");
    assert!(said.contains("words: submit"), "{said}");
    assert!(said.contains("flags: --max-in-flight"), "{said}");
    for shell in ["zsh", "fish"] {
        let out = rollout(&["completions", shell]).await;
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}

#[tokio::test]
async fn manual_pages_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let out = rollout(&["man", "--dir", man.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("wrote "), "{}", text(&out.stdout));
    let serve = std::fs::read_to_string(man.join("rollout-serve.1")).unwrap();
    assert!(serve.contains(".TH rollout-serve 1"), "{serve}");
    assert!(serve.contains("max\\-in\\-flight"), "its flags");
    assert!(
        !serve.contains("\\fB\\-\\-token\\-file\\fR") && !serve.contains("\\fB\\-\\-server\\fR"),
        "no client flag on the controller's page"
    );
    for page in [
        "rollout.1",
        "rollout-plan-check.1",
        "rollout-restart.1",
        "rollout-freeze.1",
    ] {
        assert!(man.join(page).exists(), "{page}");
    }
    // man reads it, where man is installed.
    if let Ok(man_cmd) = which("man") {
        let out = std::process::Command::new(man_cmd)
            .args(["-l", "-P", "cat"])
            .arg(man.join("rollout-serve.1"))
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let page = text(&out.stdout);
        assert!(out.status.success() && page.contains("--max-in-flight"), "{page}");
    }
}

#[tokio::test]
async fn each_commands_help_shows_only_the_flags_it_uses() {
    let help = |args: &'static [&'static str]| async move {
        let out = rollout(args).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let offline = help(&["plan", "check", "--help"]).await;
    assert!(
        !offline.contains("--server") && !offline.contains("--log-format"),
        "{offline}"
    );
    let client = help(&["status", "--help"]).await;
    assert!(
        client.contains("--server") && client.contains("--token-file"),
        "{client}"
    );
    assert!(!client.contains("--log-format"), "{client}");
    let serve = help(&["serve", "--help"]).await;
    assert!(
        serve.contains("--log-format") && !serve.contains("--token-file"),
        "{serve}"
    );
    // The connection flags are taken before the command too, as scripts wrote them.
    let out = rollout(&["--server", "http://127.0.0.1:1", "status"]).await;
    let err = text(&out.stderr);
    assert!(err.contains("nothing listens at http://127.0.0.1:1"), "{err}");
    let out = rollout(&["status", "--server", "http://127.0.0.1:1"]).await;
    assert!(text(&out.stderr).contains("nothing listens at http://127.0.0.1:1"));
    // And an offline command refuses them, naming the flag.
    let out = rollout(&["plan", "check", "x.yaml", "--server", "http://127.0.0.1:1"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--server"), "{}", text(&out.stderr));
}

/// An outside program's path.
fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
