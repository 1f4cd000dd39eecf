//! Plans as gRPC clients send them: any bytes, decoded as a `SubmitPlanRequest` the
//! way the server decodes it, then validated (text or structured).
//!
//! Invariants: never a panic; every refusal is one line; every accepted plan survives
//! the round trip through its stored form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use rollout::plan::Plan;
use rollout::proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = pb::SubmitPlanRequest::decode(data) else {
        return;
    };
    let checked = match request.plan {
        Some(pb::submit_plan_request::Plan::Yaml(text)) => Plan::from_yaml(&text, "fuzz.yaml"),
        Some(pb::submit_plan_request::Plan::Spec(spec)) => Plan::from_spec(&spec),
        None => return,
    };
    match checked {
        Ok(plan) => {
            let again = Plan::from_spec(&plan.to_spec()).expect("a stored plan validates again");
            assert_eq!(again, plan, "the stored form of a plan is the plan");
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "a refusal is one line: {e}"),
    }
});
