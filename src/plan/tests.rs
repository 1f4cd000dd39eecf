//! The plan's parsing and validation, through YAML and the structured form.

use super::*;

/// Found by `cargo fuzz run plan_yaml` in its first minute: serde_yaml quotes an
/// unknown key, newlines and all, and the refusal spanned many lines.
#[test]
fn a_refusal_quoting_input_stays_on_one_line() {
    for text in ["\"th\\ne\\r\\nhalt\": 1\n", "th\r\r\re\n\n halt\n", "name: \"a\\nb\"\n"] {
        let e = Plan::from_yaml(text, "fuzz\n.yaml").unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains('\r'), "{e:?}");
    }
}

const GOOD: &str = "\
name: exo-retry-fix
kind: fix
selector:
  service: exchange-routing
  region: [apac, emea]
version: 15.20.8207.12
waves: [1%, 10%, 30%, 60%, 90%, 100%]
max_parallel: 200
bake: 5m
on_failure:
  max_failed: 2%
  action: halt
";

#[test]
fn a_good_plan_round_trips_through_the_structured_form() {
    let plan = Plan::from_yaml(GOOD, "good.yaml").unwrap();
    assert_eq!(plan.waves.len(), 6);
    assert_eq!(plan.max_failed, Threshold::Share(Percent::from_basis_points(200)));
    assert_eq!(Plan::from_spec(&plan.to_spec()).unwrap(), plan);
}

/// `max_parallel` as a share of the selection: resolved into hosts for the
/// selection (at least one; a rollback four times it), kept beside the number in
/// the stored form, which reads back as the same plan.
#[test]
fn max_parallel_as_a_share_resolves_for_the_selection() {
    let plan = Plan::from_yaml(&GOOD.replace("max_parallel: 200", "max_parallel: 25%"), "p.yaml").unwrap();
    assert_eq!(plan.max_parallel_share, Some(Percent::from_basis_points(2_500)));
    assert_eq!(plan.max_parallel, 0, "unresolved until the selection is known");
    let resolved = plan.clone().resolved(10);
    assert_eq!((resolved.max_parallel, resolved.rollback_max_parallel), (3, 12));
    assert_eq!(plan.clone().resolved(1).max_parallel, 1);
    let all = Plan::from_yaml(&GOOD.replace("max_parallel: 200", "max_parallel: 100%"), "p.yaml").unwrap();
    assert_eq!(all.resolved(1_000_000).max_parallel, 1_000_000);
    let stored = resolved.to_spec();
    assert_eq!((stored.max_parallel, stored.max_parallel_share.as_str()), (3, "25%"));
    assert_eq!(Plan::from_spec(&stored).unwrap(), resolved);
    let numbered = Plan::from_yaml(&GOOD.replace("max_parallel: 200", "max_parallel: 1000000"), "p.yaml").unwrap();
    assert_eq!(
        numbered.clone().resolved(5),
        numbered,
        "a number of hosts stays as given"
    );
    for (bad, says) in [
        ("1000001", "between 1 and 1000000"),
        ("0%", "0% would send nothing"),
        ("150%", "over 100%"),
        ("lots", "nor a share of the selection"),
    ] {
        let e = Plan::from_yaml(
            &GOOD.replace("max_parallel: 200", &format!("max_parallel: {bad}")),
            "p.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_parallel") && e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn errors_point_at_the_field() {
    let text = GOOD.replace("90%, 100%", "90%");
    let err = Plan::from_yaml(&text, "p.yaml").unwrap_err();
    assert_eq!(err.field, "waves[4]");
    assert_eq!(err.location, Some((7, 28)));
    assert_eq!(
        err.to_string(),
        "p.yaml:7:28: waves[4]: waves must end at 100%, got 90%"
    );
}

#[test]
fn unknown_fields_are_refused_with_a_location() {
    let text = GOOD.replace("bake: 5m", "bake: 5m\nbaek: 5m");
    let err = Plan::from_yaml(&text, "p.yaml").unwrap_err();
    assert!(err.message.contains("unknown field `baek`"), "{err}");
    assert_eq!(err.location.map(|l| l.0), Some(10));
}

#[test]
fn gates_are_read_strictly_and_point_at_the_field() {
    let gated = format!(
        "{GOOD}gates:\n  - after: 10%\n    approvals: 2\n    four_eyes: true\n    timeout: 2h\n    on_timeout: rollback\n"
    );
    let plan = Plan::from_yaml(&gated, "p.yaml").unwrap();
    let gate = &plan.gates[0];
    assert_eq!((gate.wave, gate.approvals, gate.four_eyes), (1, 2, true));
    assert_eq!(gate.on_timeout, OnTimeout::Rollback);
    assert_eq!(
        gate.describe(),
        "after 10%: 2 approvals (operator or above), four-eyes (not the submitter), times out after 2h (then rollback)"
    );
    assert_eq!(Plan::from_spec(&plan.to_spec()).unwrap(), plan);
    let refused = |from: &str, to: &str| {
        Plan::from_yaml(&gated.replace(from, to), "p.yaml")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused("after: 10%", "after: 20%"),
        "p.yaml:14:5: gates[0].after: 20% is not a wave of this plan: use one of 1%, 10%, 30%, 60%, 90%"
    );
    assert!(refused("after: 10%", "after: 100%").contains("gates[0].after: 100% is the last wave"));
    assert!(refused("approvals: 2", "approvals: 11").contains("gates[0].approvals: 11 is over the limit of 10"));
    assert!(
        refused("four_eyes: true", "role: viewer").contains("gates[0].role: `viewer` is not a role that may approve")
    );
    assert!(refused("timeout: 2h", "timeout: soon").starts_with("p.yaml:17:"));
    assert!(refused("on_timeout: rollback", "on_timeout: pray").contains("use halt, abort or rollback"));
    assert!(refused("four_eyes: true", "four_eye: true").contains("unknown field `four_eye`"));
    let restart = gated
        .replace("kind: fix", "kind: restart")
        .replace("version: 15.20.8207.12\n", "");
    let e = Plan::from_yaml(&restart, "p.yaml").unwrap_err().to_string();
    assert!(e.contains("rollback is for fix plans only"), "{e}");
    let forever = gated.replace("    timeout: 2h\n", "");
    let e = Plan::from_yaml(&forever, "p.yaml").unwrap_err().to_string();
    assert!(e.contains("gates[0].on_timeout: acts when the gate times out"), "{e}");
}
