//! `rollout controllers`: every controller sharing the store, which one leads, with
//! its epoch and since when (asked of any controller: a standby forwards the call).

use std::process::ExitCode;

use super::Output;
use super::client::connect;
use crate::Result;
use crate::proto::v1 as pb;

pub async fn list(server: &str, output: Output) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let controllers = client
        .list_controllers(pb::ListControllersRequest {})
        .await?
        .into_inner()
        .controllers;
    if output == Output::Json {
        let list: Vec<serde_json::Value> = controllers
            .iter()
            .map(|c| {
                serde_json::json!({
                    "advertise": c.advertise,
                    "role": c.role,
                    "epoch": c.epoch,
                    "since_unix_ms": c.since_unix_ms,
                    "dashboard": c.dashboard,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = controllers.iter().map(|c| {
        vec![
            c.advertise.clone(),
            c.role.clone(),
            if c.epoch == 0 { "-".into() } else { c.epoch.to_string() },
            super::render::when(c.since_unix_ms),
            if c.dashboard.is_empty() {
                "-".into()
            } else {
                c.dashboard.clone()
            },
        ]
    });
    print!(
        "{}",
        super::render::grid(&["CONTROLLER", "ROLE", "EPOCH", "SINCE", "DASHBOARD"], &[2], rows)
    );
    Ok(ExitCode::SUCCESS)
}
