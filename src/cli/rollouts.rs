//! The rollout verbs of the command line: `submit` (and its dry run), `status`,
//! `retry`, and `pause`/`resume`/`abort` as one act: each a gRPC call to the
//! controller, its answer rendered.

use std::process::ExitCode;

use super::*;

/// How `rollout submit` was asked.
pub(super) struct Submission {
    pub dry_run: bool,
    /// With a dry run: as at this instant.
    pub at: Option<i64>,
    pub request_id: String,
    pub output: Output,
}

pub(super) async fn submit(server: &str, file: &std::path::Path, asked: Submission) -> Result<ExitCode> {
    let Submission {
        dry_run,
        at,
        request_id,
        output,
    } = asked;
    let text = read(file, "plan")?;
    let shown = file.display().to_string();
    // Validate locally first: a bad plan is reported the same way with or without a controller.
    Plan::from_yaml(&text, &shown)?;
    let mut client = connect(server).await?;
    let response = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Yaml(text)),
            source_name: shown,
            dry_run,
            request_id,
            at_unix_ms: at.unwrap_or(0),
        })
        .await?
        .into_inner();
    if output == Output::Json {
        json::print(&json::submitted(&response, dry_run));
        return Ok(ExitCode::SUCCESS);
    }
    let r = response.rollout.unwrap_or_default();
    if dry_run {
        if let Some(at) = at {
            println!(
                "what-if: ordered and explained as at {} (not now)",
                crate::clock::format_instant(at)
            );
        }
        if !r.drill_clock.is_empty() {
            println!("{}", r.drill_clock);
        }
        print!("{}", render::preview(&r, &response.preview));
        let act = match r.kind.as_str() {
            "fix" => "deploy",
            "rollback" => "rollback",
            _ => "restart",
        };
        if let Some(line) = restart::price_line_of(&response.prices, act) {
            println!("{line}");
        }
        for c in &response.conflicts {
            println!(
                "held elsewhere: {} of these hosts belong to {}; a real submission is refused unless it preempts that rollout",
                c.shared_hosts, c.holder
            );
        }
    } else if response.replayed {
        println!(
            "already submitted with this request id: rollout `{}` (id {}) is {}",
            r.name,
            r.id,
            render::state_name(r.state())
        );
    } else {
        println!(
            "submitted rollout `{}` (id {}): {} hosts in {} waves; follow it with `rollout watch {}`",
            r.name,
            r.id,
            r.hosts_selected,
            r.waves.len(),
            r.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn status(server: &str, name: Option<&str>, output: Output, summary: bool) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    match name {
        Some(name) => {
            let r = client::rollout_named(&mut client, name).await?;
            match output {
                _ if summary => println!("{}", r.summary),
                Output::Text => print!("{}", render::detail(&r)),
                Output::Json => println!("{}", render::json(&r)),
            }
        }
        None => {
            let list = client
                .list_rollouts(pb::ListRolloutsRequest::default())
                .await?
                .into_inner();
            match output {
                Output::Text => {
                    if let Some(drill) = list.rollouts.first().map(|r| &r.drill_clock).filter(|d| !d.is_empty()) {
                        println!("{drill}");
                    }
                    print!("{}", render::table(&list.rollouts))
                }
                Output::Json => println!(
                    "{}",
                    serde_json::Value::Array(list.rollouts.iter().map(render::json).collect())
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rollout retry NAME`: the failed hosts run again as a new attempt.
pub(super) async fn retry(server: &str, name: &str, request_id: String, output: Output) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let r = client
        .retry_rollout(pb::RolloutActionRequest {
            name: name.to_string(),
            request_id,
            ..Default::default()
        })
        .await?
        .into_inner();
    if output == Output::Json {
        json::print(&render::json(&r));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "retrying the failed hosts of `{}` (retry {}); follow it with `rollout watch {}`",
        r.name, r.retries, r.name
    );
    println!("{}", render::one_line(&r));
    Ok(ExitCode::SUCCESS)
}

pub(super) enum Act {
    Pause,
    Resume,
    /// `asked`: show the rollout and ask first (without --yes).
    Abort {
        reason: String,
        rollback: bool,
        asked: bool,
    },
}

/// `rollout pause|resume|abort NAME`.
pub(super) async fn act(server: &str, name: &str, act: Act, request_id: String, output: Output) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let mut request = pb::RolloutActionRequest {
        name: name.to_string(),
        request_id,
        ..Default::default()
    };
    let r = match act {
        Act::Pause => client.pause_rollout(request).await?,
        Act::Resume => client.resume_rollout(request).await?,
        Act::Abort {
            reason,
            rollback,
            asked,
        } => {
            if reason.trim().is_empty() {
                return Err(Error::Usage(
                    "--reason is empty: say why (an incident id, \"wrong build\"); it is kept with the rollout and in every notification".into(),
                ));
            }
            if asked && output == Output::Json {
                return Err(Error::Usage(
                    "with --output json nobody reads the rollout before confirming: pass --yes to abort it".into(),
                ));
            }
            if asked {
                let r = client
                    .get_rollout(pb::GetRolloutRequest {
                        name: name.to_string(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                println!("{}", render::one_line(&r));
                let question = if rollback {
                    format!("abort `{}` for good and roll back every host it touched?", r.name)
                } else {
                    format!("abort `{}` for good?", r.name)
                };
                if !super::ask::confirm(&question, "look at the rollout above and pass --yes to abort it")? {
                    println!("not aborted");
                    return Ok(ExitCode::FAILURE);
                }
            }
            request.reason = reason;
            request.rollback = rollback;
            client.abort_rollout(request).await?
        }
    }
    .into_inner();
    match output {
        Output::Json => json::print(&render::json(&r)),
        Output::Text => println!("{}", render::one_line(&r)),
    }
    Ok(ExitCode::SUCCESS)
}
