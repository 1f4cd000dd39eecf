//! Plan files as people (or attackers) write them: any bytes, read as a plan's text.
//!
//! Invariants: never a panic; bytes that are not UTF-8 are refused like the server
//! refuses them; every refusal is one line; every accepted plan survives the round
//! trip through the structured message that the store keeps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollout::plan::Plan;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Plan::from_yaml(text, "fuzz.yaml") {
        Ok(plan) => {
            let again = Plan::from_spec(&plan.to_spec()).expect("a stored plan validates again");
            assert_eq!(again, plan, "the stored form of a plan is the plan");
        }
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "a refusal is one line: {line:?}");
        }
    }
});
