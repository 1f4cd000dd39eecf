//! The sinks file's rules, each refusal with its line, column and field.

use super::*;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bridge.secret"), format!("{}\n", new_secret())).unwrap();
        std::fs::write(dir.path().join("short.secret"), "whsec_c2hvcnQ=\n").unwrap();
        std::fs::write(dir.path().join("plain.secret"), "hunter2\n").unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn good(&self) -> String {
        format!(
            "sinks:\n  - name: incident-bridge\n    kind: webhook\n    url: https://hooks.internal/rollout?token=abc\n    events: [\"rollout.*\", \"restart.*\"]\n    rollouts: [\"exo-*\"]\n    secret_file: {}\n    timeout: 3s\n  - name: ops-channel\n    kind: slack\n    url: https://hooks.slack.test/services/T0/B0/XYZ\n  - name: pager\n    kind: alertmanager\n    url: http://127.0.0.1:9093\n",
            self.path("bridge.secret")
        )
    }
}

#[test]
fn a_good_file_reads_with_its_defaults() {
    let files = Files::new();
    let sinks = Sinks::parse(&files.good(), "sinks.yaml").unwrap().0;
    assert_eq!(sinks.len(), 3);
    let bridge = &sinks[0];
    assert_eq!(bridge.kind, SinkKind::Webhook);
    assert_eq!(bridge.secret.as_ref().map(|s| s.bytes().len()), Some(32));
    assert_eq!(
        (bridge.timeout, bridge.give_up_after),
        (Duration::from_secs(3), DEFAULT_GIVE_UP)
    );
    assert!(bridge.wants("rollout.wave.completed", "exo-retry-fix"));
    assert!(
        !bridge.wants("rollout.wave.completed", "mailbox-canary"),
        "not its rollouts"
    );
    assert!(bridge.wants("restart.completed", ""), "restart jobs name no rollout");
    assert!(!bridge.wants("controller.leader_changed", ""));
    // Slack's default is the events people read; the rest take every event.
    assert!(sinks[1].wants("rollout.halted", "x") && !sinks[1].wants("rollout.wave.started", "x"));
    assert!(sinks[2].wants("controller.leader_changed", ""));
    // Nothing secret is shown: not the key, not the URL's query.
    let shown = format!("{:?} {}", bridge, bridge.describe());
    assert!(!shown.contains("token=abc"), "{shown}");
    let key = std::fs::read_to_string(files.path("bridge.secret")).unwrap();
    assert!(!shown.contains(key.trim().trim_start_matches("whsec_")), "{shown}");
    assert!(bridge.describe().starts_with("incident-bridge: webhook to https://hooks.internal:443 (rollout.*, restart.*; rollouts exo-*; signed; timeout 3s"));
}

#[test]
fn each_rule_names_the_line_the_field_and_the_fix() {
    let files = Files::new();
    let good = files.good();
    let refused = |from: &str, to: &str| {
        let text = good.replace(from, to);
        assert_ne!(text, good, "the test changes nothing: {from}");
        Sinks::parse(&text, "sinks.yaml").unwrap_err().to_string()
    };
    assert_eq!(
        refused("kind: slack", "kind: teams"),
        "sinks.yaml:10:5: sinks[1].kind: `teams` is not a kind of sink: use webhook, slack or alertmanager"
    );
    assert!(refused("name: pager", "name: Pager").starts_with("sinks.yaml:12:5: sinks[2].name: `Pager` may use only"));
    assert!(refused("name: pager", "name: ops-channel").contains("sinks[2].name: `ops-channel` names two sinks"));
    assert!(
        refused("\"restart.*\"", "\"restart.done\"")
            .contains("sinks[0].events: `restart.done` matches no event type; the types are rollout.submitted")
    );
    assert!(
        refused("url: http://127.0.0.1:9093", "url: ftp://127.0.0.1")
            .contains("sinks[2].url: ftp://127.0.0.1:21 is not an http:// or https:// URL")
    );
    assert!(refused("timeout: 3s", "timeout: 2m").contains("sinks[0].timeout: 2m is not between 1s and 1m"));
    assert!(refused("timeout: 3s", "tiemout: 3s").contains("unknown field `tiemout`"));
    let e = refused(&files.path("bridge.secret"), &files.path("plain.secret"));
    assert!(
        e.contains("does not start with whsec_") && !e.contains("hunter2"),
        "{e}"
    );
    assert!(refused(&files.path("bridge.secret"), &files.path("short.secret")).contains("the key is 5 bytes"));
    assert!(
        refused(&files.path("bridge.secret"), &files.path("missing.secret"))
            .contains("sinks[0].secret_file: cannot read")
    );
    let unsigned = good.replace(&format!("    secret_file: {}\n", files.path("bridge.secret")), "");
    let e = Sinks::parse(&unsigned, "sinks.yaml").unwrap_err().to_string();
    assert!(e.contains("sinks[0].secret_file: is required for a webhook"), "{e}");
    let e = Sinks::parse("sinks: []\n", "sinks.yaml").unwrap_err().to_string();
    assert!(e.contains("sinks: is empty"), "{e}");
}
