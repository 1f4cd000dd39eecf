//! `rollout freeze`, `rollout unfreeze`, `rollout freezes`: stop the line, start it
//! again, and see what is frozen (the freezes people set and the freeze calendar's
//! next windows).

use std::process::ExitCode;

use super::Output;
use super::client::connect;
use crate::proto::v1 as pb;
use crate::{Error, Result};

/// `--until`: an RFC 3339 instant, or a span from now (`2h`, `90m`).
pub fn parse_until(s: &str) -> std::result::Result<i64, String> {
    if let Ok(span) = crate::text::parse_duration(s) {
        let now = jiff::Timestamp::now().as_millisecond();
        return Ok(now + span.as_millis() as i64);
    }
    super::parse_instant(s)
        .map_err(|_| format!("`{s}` is neither a span (2h, 90m) nor an RFC 3339 instant (2026-12-07T14:00:00Z)"))
}

/// What `rollout freeze` asks for.
pub struct Asked {
    pub reason: String,
    pub until: Option<i64>,
    pub request_id: String,
}

pub async fn freeze(server: &str, asked: Asked, selector: &[String], output: Output) -> Result<ExitCode> {
    let Asked {
        reason,
        until,
        request_id,
    } = asked;
    let selector = super::restart::selector(selector)?;
    let mut client = connect(server).await?;
    let answer = client
        .freeze(pb::FreezeRequest {
            reason,
            until_unix_ms: until.unwrap_or(0),
            selector: selector.into_iter().collect(),
            request_id,
        })
        .await?
        .into_inner();
    let f = answer
        .freeze
        .ok_or_else(|| Error::Usage("the controller answered without the freeze".into()))?;
    if output == Output::Json {
        let mut shown = super::json::freeze(&f);
        shown["replayed"] = serde_json::Value::Bool(answer.replayed);
        super::json::print(&shown);
        return Ok(ExitCode::SUCCESS);
    }
    let again = if answer.replayed {
        " (this request had set it already)"
    } else {
        ""
    };
    println!("{}{again}", line(&f));
    println!("`rollout unfreeze {}` ends it.", f.id);
    Ok(ExitCode::SUCCESS)
}

pub async fn unfreeze(server: &str, id: u64, request_id: String, output: Output) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let f = client
        .unfreeze(pb::UnfreezeRequest { id, request_id })
        .await?
        .into_inner();
    if output == Output::Json {
        super::json::print(&super::json::freeze(&f));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "freeze {} ended ({}): {}",
        f.id,
        f.ended_by,
        crate::freeze::scope(&crate::freeze::selector(&f))
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list(server: &str, all: bool, output: Output) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let list = client
        .list_freezes(pb::ListFreezesRequest { include_ended: all })
        .await?
        .into_inner();
    if output == Output::Json {
        let shown = super::json::freeze;
        let json = serde_json::json!({
            "freezes": list.freezes.iter().map(shown).collect::<Vec<_>>(),
            "calendar": list.calendar.iter().map(shown).collect::<Vec<_>>(),
            "calendar_file": list.calendar_file,
            "calendar_error": list.calendar_error,
        });
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    if list.freezes.is_empty() {
        println!("No freeze set by a person is in force.");
    }
    for f in &list.freezes {
        println!("{}", line(f));
    }
    if !list.calendar_file.is_empty() {
        println!();
        println!("Freeze calendar {}: next windows", list.calendar_file);
        if list.calendar.is_empty() {
            println!("  none in the next 35 days");
        }
        for w in &list.calendar {
            println!(
                "  {} .. {}  {}{}",
                crate::clock::format_instant(w.started_at_unix_ms),
                crate::clock::format_instant(w.until_unix_ms),
                w.reason,
                if w.drill_clock { " (on the drill clock)" } else { "" }
            );
        }
        if !list.calendar_error.is_empty() {
            println!("  the last re-read was refused: {}", list.calendar_error);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// "freeze 3 in force: every host until 2026-12-07T14:00:00Z, set by alice at ...: INC-1234".
fn line(f: &pb::Freeze) -> String {
    let state = if f.ended_at_unix_ms != 0 {
        format!(
            "ended {} ({})",
            crate::clock::format_instant(f.ended_at_unix_ms),
            f.ended_by
        )
    } else {
        "in force".to_string()
    };
    let until = match f.until_unix_ms {
        0 => "until unfrozen".to_string(),
        ms => format!("until {}", crate::clock::format_instant(ms)),
    };
    format!(
        "freeze {} {state}: {} {until}, set by {} at {}: {}",
        f.id,
        crate::freeze::scope(&crate::freeze::selector(f)),
        f.set_by,
        crate::clock::format_instant(f.started_at_unix_ms),
        f.reason
    )
}
