//! Plans: the ones shipped in plans/ are valid and select hosts of a generated fleet;
//! invalid ones are refused with InvalidArgument naming the field, and nothing is stored.

mod common;

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::plan::Plan;
use rollout::proto::v1 as pb;

const GOOD: &str = "\
name: retry-fix
kind: fix
description: cap retries
selector:
  service: exchange-routing
  region: [apac, emea]
version: 15.20.8207.12
waves: [1%, 10%, 30%, 60%, 90%, 100%]
order: stable
max_parallel: 200
bake: 5m
on_failure:
  max_failed: 2%
  action: halt
";

/// Every plan in plans/ passes validation, and a dry run against a generated fleet
/// selects hosts for every wave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_plans_are_valid_and_select_hosts() {
    let h = Harness::start(3_000, SimulatorOptions::default()).await;
    let mut client = h.client.clone();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/plans")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let shown = path.display().to_string();
        let plan = Plan::from_yaml(&text, &shown).unwrap_or_else(|e| panic!("{e}"));
        let preview = client
            .submit_plan(pb::SubmitPlanRequest {
                plan: Some(pb::submit_plan_request::Plan::Yaml(text)),
                source_name: shown.clone(),
                dry_run: true,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{shown}: {}", e.message()))
            .into_inner();
        assert_eq!(preview.preview.len(), plan.waves.len(), "{shown}");
        // Small selections may round two waves to the same count; the first wave and
        // the total are what must hold.
        assert!(preview.preview[0].new_hosts > 0, "{shown}: the first wave has hosts");
        let last = preview.preview.last().unwrap();
        assert_eq!(
            last.cumulative_hosts,
            preview.rollout.unwrap().hosts_selected,
            "{shown}"
        );
        names.push(plan.name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "apac-network-rollback",
            "exo-retry-fix",
            "mailbox-canary",
            "safe-network-change"
        ]
    );
    h.stop().await;
}

/// (what is wrong, the plan text, the field the error must name)
fn invalid_plans() -> Vec<(&'static str, String, &'static str)> {
    let with = |from: &str, to: &str| {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replace(from, to)
    };
    vec![
        ("not YAML", "name: \"unterminated\nkind: fix".into(), "quoted scalar"),
        ("empty", String::new(), "empty"),
        ("a list, not a plan", "- a\n- b\n".into(), "invalid type"),
        ("unknown field", with("bake: 5m", "bake: 5m\nbaek: 5m"), "baek"),
        (
            "unknown nested field",
            with("action: halt", "action: halt\n  max_fail: 3"),
            "max_fail",
        ),
        ("missing name", with("name: retry-fix\n", ""), "name"),
        (
            "name too long",
            with("name: retry-fix", &format!("name: {}", "a".repeat(64))),
            "name",
        ),
        ("name with capitals", with("name: retry-fix", "name: Retry_Fix"), "name"),
        ("name ending in a dash", with("name: retry-fix", "name: retry-"), "name"),
        ("unknown kind", with("kind: fix", "kind: hotfix"), "kind"),
        (
            "missing version for a fix",
            with("version: 15.20.8207.12\n", ""),
            "version",
        ),
        (
            "version with spaces",
            with("version: 15.20.8207.12", "version: \"15 20\""),
            "version",
        ),
        (
            "waves not increasing",
            with("[1%, 10%, 30%", "[1%, 30%, 10%"),
            "waves[2]",
        ),
        ("waves repeating", with("[1%, 10%, 30%", "[1%, 10%, 10%"), "waves[2]"),
        ("wave over 100%", with("90%, 100%]", "90%, 120%]"), "waves[5]"),
        ("waves not ending at 100%", with("90%, 100%]", "90%]"), "waves[4]"),
        ("wave without a percent sign", with("[1%, 10%", "[1, 10%"), "waves[0]"),
        ("wave of 0%", with("[1%, 10%", "[0%, 10%"), "waves[0]"),
        (
            "no waves",
            with("waves: [1%, 10%, 30%, 60%, 90%, 100%]", "waves: []"),
            "waves",
        ),
        (
            "too many waves",
            with(
                "waves: [1%, 10%, 30%, 60%, 90%, 100%]",
                &format!(
                    "waves: [{}100%]",
                    (1..=20).map(|i| format!("{i}%, ")).collect::<String>()
                ),
            ),
            "waves",
        ),
        ("wave with three decimals", with("[1%, 10%", "[0.125%, 10%"), "waves[0]"),
        ("bad duration", with("bake: 5m", "bake: soon"), "bake"),
        ("duration without a unit", with("bake: 5m", "bake: 5"), "bake"),
        ("bake over a day", with("bake: 5m", "bake: 30h"), "bake"),
        (
            "max_parallel zero",
            with("max_parallel: 200", "max_parallel: 0"),
            "max_parallel",
        ),
        (
            "max_parallel negative",
            with("max_parallel: 200", "max_parallel: -4"),
            "max_parallel",
        ),
        (
            "max_parallel too large",
            with("max_parallel: 200", "max_parallel: 1000001"),
            "max_parallel",
        ),
        (
            "max_failed over 100%",
            with("max_failed: 2%", "max_failed: 200%"),
            "on_failure.max_failed",
        ),
        (
            "max_failed words",
            with("max_failed: 2%", "max_failed: a few"),
            "on_failure.max_failed",
        ),
        (
            "unknown failure action",
            with("action: halt", "action: panic"),
            "on_failure.action",
        ),
        (
            "continue without an explicit threshold",
            with("  max_failed: 2%\n  action: halt", "  action: continue"),
            "on_failure.action",
        ),
        (
            "min_healthy without a bake",
            with("bake: 5m", "bake: 0s\nmin_healthy: 90%"),
            "min_healthy",
        ),
        (
            "min_healthy as a count",
            with("bake: 5m", "bake: 5m\nmin_healthy: 900"),
            "min_healthy",
        ),
        ("unknown order", with("order: stable", "order: random"), "order"),
        (
            "empty selector",
            with(
                "selector:\n  service: exchange-routing\n  region: [apac, emea]\n",
                "selector: {}\n",
            ),
            "selector",
        ),
        (
            "selector with no values",
            with("region: [apac, emea]", "region: []"),
            "selector.region",
        ),
        (
            "selector matching no host",
            with("service: exchange-routing", "service: no-such-service"),
            "selector",
        ),
        (
            "description too long",
            with(
                "description: cap retries",
                &format!("description: {}", "x".repeat(2_100)),
            ),
            "description",
        ),
    ]
}

/// Each invalid plan gets InvalidArgument with a message naming the field (and the
/// line for YAML), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_plans_are_refused_with_the_field_named() {
    let h = Harness::start(500, SimulatorOptions::default()).await;
    let mut client = h.client.clone();
    let cases = invalid_plans();
    assert!(cases.len() >= 25);
    for (what, text, field) in cases {
        let err = client
            .submit_plan(pb::SubmitPlanRequest {
                plan: Some(pb::submit_plan_request::Plan::Yaml(text)),
                source_name: "plans/bad.yaml".into(),
                ..Default::default()
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {}", err.message());
        let message = err.message();
        assert!(message.contains(field), "{what}: `{message}` does not name `{field}`");
        assert!(
            message.starts_with("plans/bad.yaml"),
            "{what}: `{message}` does not name the file"
        );
        assert!(!message.contains('\n'), "{what}: one line");
    }
    // Semantic errors in YAML carry the line and column of the field.
    let err = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Yaml(GOOD.replace("90%, 100%]", "90%]"))),
            source_name: "plans/bad.yaml".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "plans/bad.yaml:8:28: waves[4]: waves must end at 100%, got 90%"
    );
    // A structured plan is validated by the same rules.
    let mut spec = plan("structured", &["50%", "40%", "100%"], "0");
    let err = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("plan: waves[1]:"), "{}", err.message());
    spec.waves = vec!["100%".into()];
    spec.version.clear();
    let err = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("plan: version:"), "{}", err.message());
    let missing = client.submit_plan(pb::SubmitPlanRequest::default()).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);

    let list = client
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.rollouts.is_empty(),
        "nothing was stored: {:?}",
        list.rollouts.len()
    );
    h.stop().await;
}

/// Hostile plans: huge, alias bombs, deep nesting, NUL bytes, huge numbers, thousands
/// of waves. Each is refused with InvalidArgument (ResourceExhausted past the gRPC
/// message limit), quickly, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plans_are_refused_quickly() {
    let h = Harness::start(50, SimulatorOptions::default()).await;
    let mut client = h.client.clone();
    let mut bomb = String::from(
        "name: x\nkind: fix\nversion: \"1\"\nwaves: [100%]\nselector:\n  k0: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10u8 {
        let (name, prev) = ((b'a' + i) as char, (b'a' + i - 1) as char);
        bomb.push_str(&format!(
            "  k{i}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(", ")
        ));
    }
    let cases: Vec<(&str, String, tonic::Code)> = vec![
        (
            "over 1 MiB",
            format!("name: x\ndescription: {}\n", "x".repeat(1_100_000)),
            tonic::Code::InvalidArgument,
        ),
        (
            "over the gRPC limit",
            "#".repeat(3 * 1024 * 1024),
            tonic::Code::ResourceExhausted,
        ),
        ("billion laughs", bomb, tonic::Code::InvalidArgument),
        (
            "deep nesting",
            format!("name: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            tonic::Code::InvalidArgument,
        ),
        (
            "NUL byte",
            "name: a\u{0}b\nkind: fix\n".into(),
            tonic::Code::InvalidArgument,
        ),
        (
            "huge number",
            GOOD.replace("max_parallel: 200", &format!("max_parallel: {}", "9".repeat(400))),
            tonic::Code::InvalidArgument,
        ),
        (
            "thousands of waves",
            GOOD.replace(
                "[1%, 10%, 30%, 60%, 90%, 100%]",
                &format!("[{}100%]", "1%, ".repeat(5_000)),
            ),
            tonic::Code::InvalidArgument,
        ),
    ];
    for (what, text, code) in cases {
        let started = std::time::Instant::now();
        let err = client
            .submit_plan(pb::SubmitPlanRequest {
                plan: Some(pb::submit_plan_request::Plan::Yaml(text)),
                source_name: "hostile.yaml".into(),
                ..Default::default()
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what} took {:?}",
            started.elapsed()
        );
    }
    // Plan text that is not UTF-8, sent as raw bytes in the `yaml` field.
    let err = submit_raw_yaml(&h, b"name: caf\xe9\nkind: fix\n".to_vec()).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("UTF-8"), "{}", err.message());
    let list = client
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.rollouts.is_empty());
    h.stop().await;
}

/// `SubmitPlanRequest` with field 1 (`yaml`) as bytes: what a client that does not
/// check its strings can put on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSubmit {
    #[prost(bytes = "vec", tag = "1")]
    yaml: Vec<u8>,
}

async fn submit_raw_yaml(h: &Harness, yaml: Vec<u8>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(h.controller.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/rollout.v1.Controller/SubmitPlan");
    let codec = tonic_prost::ProstCodec::<RawSubmit, pb::Rollout>::default();
    grpc.unary(tonic::Request::new(RawSubmit { yaml }), path, codec)
        .await
        .expect_err("non-UTF-8 plan text is refused")
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2_000, ..Default::default() })]

    /// Arbitrary text never panics the plan parser.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = Plan::from_yaml(&text, "fuzz.yaml");
    }

    /// A good plan with one line replaced by arbitrary text never panics either, and
    /// an error always names the file.
    #[test]
    fn mutated_plans_never_panic(line in 0usize..13, junk in "[ -~]{0,60}") {
        let mut lines: Vec<&str> = GOOD.lines().collect();
        lines[line] = &junk;
        let text = lines.join("\n");
        if let Err(e) = Plan::from_yaml(&text, "fuzz.yaml") {
            proptest::prop_assert!(e.to_string().starts_with("fuzz.yaml"));
        }
    }
}
