//! `rollout notify status` and `rollout notify test SINK`: how each sink of the
//! controller's `--notify` is doing, and one test event sent now.

use std::process::ExitCode;

use super::Output;
use super::client::connect;
use crate::Result;
use crate::clock::{Clock, SystemClock};
use crate::proto::v1 as pb;

pub async fn status(server: &str, output: Output) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let status = client.notify_status(pb::NotifyStatusRequest {}).await?.into_inner();
    if output == Output::Json {
        let sinks: Vec<serde_json::Value> = status
            .sinks
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "kind": s.kind,
                    "url": s.url,
                    "delivered": s.delivered,
                    "pending": s.pending,
                    "oldest_pending_unix_ms": s.oldest_pending_unix_ms,
                    "last_error": s.last_error,
                    "last_error_at_unix_ms": s.last_error_at_unix_ms,
                    "undeliverable": s.undeliverable,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "site": status.site, "sinks": sinks }));
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemClock.now_ms();
    let rows = status.sinks.iter().map(|s| {
        vec![
            s.name.clone(),
            s.kind.clone(),
            s.delivered.to_string(),
            s.pending.to_string(),
            if s.oldest_pending_unix_ms == 0 {
                "-".into()
            } else {
                let age =
                    std::time::Duration::from_millis((now - s.oldest_pending_unix_ms).max(0) as u64 / 1000 * 1000);
                crate::text::format_duration(age)
            },
            s.undeliverable.to_string(),
            if s.last_error.is_empty() {
                "-".into()
            } else {
                format!("{} ({})", s.last_error, super::render::when(s.last_error_at_unix_ms))
            },
        ]
    });
    println!("site {}", status.site);
    print!(
        "{}",
        super::render::grid(
            &[
                "SINK",
                "KIND",
                "DELIVERED",
                "PENDING",
                "OLDEST",
                "UNDELIVERABLE",
                "LAST ERROR"
            ],
            &[2, 3, 5],
            rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn test(server: &str, sink: &str, output: Output) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let answer = client
        .notify_test(pb::NotifyTestRequest { sink: sink.to_string() })
        .await?
        .into_inner();
    if output == Output::Json {
        super::json::print(&super::json::notify_test(&answer));
        return Ok(if answer.delivered {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if answer.delivered {
        println!(
            "delivered: test event {} to sink {} ({}, {} ms)",
            answer.id, answer.sink, answer.answer, answer.took_ms
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: sink {} did not take test event {}: {} ({} ms)",
            answer.sink, answer.id, answer.answer, answer.took_ms
        );
        Ok(ExitCode::FAILURE)
    }
}
