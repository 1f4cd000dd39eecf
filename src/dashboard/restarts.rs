//! The restart jobs' views: the list of jobs, and one job with who went first and
//! why and the head of its queue.

use maud::{Markup, html};

use super::views::{LIST, bar, count, drill_banner, pct, tier_class};
use crate::engine::RestartQueueView;
use crate::proto::v1 as pb;

fn job_state(s: pb::RestartJobState) -> (&'static str, &'static str) {
    match s {
        pb::RestartJobState::Running => ("running", "run"),
        pb::RestartJobState::Succeeded => ("succeeded", "ok"),
        pb::RestartJobState::Failed => ("failed", "bad"),
        pb::RestartJobState::Cancelled => ("cancelled", "warn"),
        pb::RestartJobState::CompletedWithFailures => ("completed-with-failures", "warn"),
        pb::RestartJobState::Unspecified => ("unknown", "idle"),
    }
}

/// The restart jobs (a fragment).
pub fn restarts(jobs: &[std::sync::Arc<pb::RestartJob>]) -> Markup {
    html! {
        @if jobs.is_empty() {
            p.empty { "No restart job yet. " code { "rollout restart --unhealthy" } " starts one." }
        } @else {
            table.rollouts {
                thead { tr { th { "job" } th { "state" } th { "order" } th.wide { "restarted" } th { "tiers (restarted/picked)" } } }
                tbody {
                    @for j in jobs.iter().take(LIST) {
                        @let (name, class) = job_state(j.state());
                        tr {
                            td { a href=(format!("/restarts/{}", j.id)) { "#" (j.id) } }
                            td { span class=(format!("badge {class}")) { (name) } }
                            td { (j.order) }
                            td.wide {
                                (bar(j.hosts_total, &[("ok", j.hosts_restarted), ("bad", j.hosts_failed), ("run", j.hosts_in_flight)]))
                                span.num { (j.hosts_restarted) " of " (j.hosts_total) }
                            }
                            td { @for t in &j.tiers { span.tier { (t.tier) " " (t.restarted) "/" (t.total) } } }
                        }
                    }
                }
            }
        }
    }
}

/// One restart job (a fragment): its counts, who went first and why, and who is
/// next in the queue.
pub fn restart(j: &pb::RestartJob, queue: &RestartQueueView, drill: Option<&str>) -> Markup {
    let (name, class) = job_state(j.state());
    html! {
        div.headline {
            h1 { "Restart job #" (j.id) " " span class=(format!("badge {class}")) { (name) } }
            p.sub { "order " (j.order) ", " (j.max_parallel) " at once, at most " (j.max_unavailable) " of a customer's healthy hosts down" }
        }
        (drill_banner(drill))
        @if !j.reason.is_empty() { div.reason { (j.reason) } }
        div.big {
            div.figure {
                span #percent data-percent=(format!("{:.1}", pct(j.hosts_restarted, j.hosts_total))) { (format!("{:.1}%", pct(j.hosts_restarted, j.hosts_total))) }
                span.label { "of " (j.hosts_total) " hosts restarted" }
            }
            (bar(j.hosts_total, &[("ok", j.hosts_restarted), ("bad", j.hosts_failed), ("run", j.hosts_in_flight)]))
        }
        div.counts {
            (count("restarted", j.hosts_restarted, "ok"))
            (count("failed", j.hosts_failed, "bad"))
            (count("in flight", j.hosts_in_flight, "run"))
            (count("waiting", j.hosts_pending, "idle"))
        }
        @if !j.tiers.is_empty() {
            h2 { "By business-hours tier" }
            div.counts { @for t in &j.tiers { (count(&format!("{} restarted of {}", t.tier, t.total), t.restarted, &tier_class(&t.tier))) } }
        }
        h2 { "Next in the queue" }
        @if queue.waiting.is_empty() {
            p.empty { "Nobody waiting." }
        } @else {
            (restart_hosts(&queue.waiting))
            @if queue.count > queue.waiting.len() { p.more { (queue.count - queue.waiting.len()) " more waiting" } }
        }
        @if !queue.picked.is_empty() {
            h2 { "Restarted first, and why" }
            (restart_hosts(&queue.picked))
        }
        @if !j.skipped.is_empty() {
            h2 { "Left alone" }
            ul { @for s in j.skipped.iter().take(20) { li { code { (s.host_id) } ": " (s.reason) } } }
        }
    }
}

fn restart_hosts(hosts: &[pb::RestartHost]) -> Markup {
    html! {
        table.queue {
            thead { tr { th { "#" } th { "host" } th { "customer" } th { "tier" } th { "why" } } }
            tbody {
                @for h in hosts {
                    tr {
                        td { (h.position) }
                        td { code { (h.host_id) } }
                        td { (h.customer) }
                        td { span class=(format!("badge {}", tier_class(&h.tier))) { (h.tier) } }
                        td { (h.why) }
                    }
                }
            }
        }
    }
}
