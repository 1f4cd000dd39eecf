//! The dashboard's HTML, rendered on the server with maud (every value escaped).
//! Each page is a layout around one or more fragments; a fragment is also what the
//! live stream sends when what it shows changes, so the first paint and every update
//! come from the same function. Aggregates and the top of queues only: a page never
//! lists every host, whatever the fleet's size.

use maud::{DOCTYPE, Markup, html};

use super::sun::{Placed, Sun};
use crate::auth::Principal;

use crate::hours::Tier;
use crate::proto::v1 as pb;

/// Rollouts on the list page, newest first.
pub const LIST: usize = 100;

/// A full page: navigation, who is looking (and their session's CSRF token, which
/// the sign-out form carries), and `body`.
pub fn page(title: &str, who: Option<(&Principal, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - rollout" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/live.js" defer {}
            }
            body {
                header {
                    span.brand { "rollout" }
                    nav {
                        a href="/" { "Rollouts" }
                        a href="/restarts" { "Restarts" }
                        a href="/sun" { "Follow the sun" }
                        a href="/controllers" { "Controllers" }
                    }
                    span.liveness #liveness {}
                    @if let Some((p, csrf)) = who {
                        @if *p == Principal::anonymous() {
                            span.who { "open: no authentication (loopback)" }
                        } @else {
                            form.who method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                span { (p.name) " (" (p.role) ")" }
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An element the live script keeps up to date from `stream`.
pub fn live(stream: &str, fragment: Markup) -> Markup {
    html! { div.live data-live=(stream) { (fragment) } }
}

/// A path segment, percent-encoded (rollout names are plain, but never trust that).
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn state_class(s: pb::RolloutState) -> &'static str {
    match s {
        pb::RolloutState::Succeeded => "ok",
        pb::RolloutState::Failed | pb::RolloutState::Aborted => "bad",
        pb::RolloutState::Halted | pb::RolloutState::CompletedWithFailures => "warn",
        pb::RolloutState::Paused | pb::RolloutState::AwaitingApproval => "warn",
        _ => "run",
    }
}

/// A horizontal bar of segments (succeeded, failed, in flight), each a share of `total`.
pub(super) fn bar(total: u64, segments: &[(&str, u64)]) -> Markup {
    html! {
        div.bar {
            @for (class, n) in segments {
                @if *n > 0 {
                    span class=(class) style=(format!("width:{:.3}%", pct(*n, total))) {}
                }
            }
        }
    }
}

/// The rollouts list (a fragment).
pub fn rollouts(list: &[std::sync::Arc<pb::Rollout>]) -> Markup {
    html! {
        @if list.is_empty() {
            p.empty { "No rollout yet. " code { "rollout submit plans/PLAN.yaml" } " starts one." }
        } @else {
            table.rollouts {
                thead { tr { th { "rollout" } th { "kind" } th { "version" } th { "started" } th { "state" } th { "wave" } th.wide { "hosts on the new version" } th { "customers mitigated" } } }
                tbody {
                    @for r in list.iter().take(LIST) {
                        tr data-rollout=(r.name) {
                            td { a href=(format!("/rollouts/{}", encode(&r.name))) { (r.name) } }
                            td { (r.kind) }
                            td.version { (version_of(r)) }
                            td.started { (super::wall::clock(r.created_at_unix_ms)) }
                            td {
                                span class=(format!("badge {}", state_class(r.state()))) { (r.state().label()) }
                                @if !r.halt_reason.is_empty() {
                                    div.why title=(r.halt_reason) { (super::wall::short_reason(&r.halt_reason)) }
                                }
                            }
                            td { (r.current_wave + 1) "/" (r.waves.len()) }
                            td.wide {
                                (bar(r.hosts_selected, &[("ok", r.hosts_succeeded), ("bad", r.hosts_failed), ("run", r.hosts_in_flight)]))
                                span.num { (format!("{:.1}%", r.percent_complete)) " of " (r.hosts_selected) }
                            }
                            td { (r.customers_mitigated) " of " (r.customers_affected) }
                        }
                    }
                }
            }
            @if list.len() > LIST { p.more { (list.len() - LIST) " older rollouts not shown" } }
        }
    }
}

/// One rollout (a fragment): the headline bar, a bar per wave, hosts by state,
/// customers, the halt reason, and the timeline.
pub fn rollout(r: &pb::Rollout, timeline: &[pb::EventRecord], drill: Option<&str>, now_ms: i64) -> Markup {
    let state = r.state();
    let customers = pct(r.customers_mitigated, r.customers_affected);
    html! {
        div.headline {
            h1 { (r.name) " " span class=(format!("badge {}", state_class(state))) { (state.label()) } }
            p.sub { (crate::summary::change(r)) @if !r.description.is_empty() { " - " (r.description) } }
        }
        p.summary #summary { (headline(r, drill)) }
        (super::wall::times(r, now_ms))
        (drill_banner(drill))
        @if !r.limits.is_empty() {
            div.reason.limits #limits { strong { "Limited: " } (r.limits) }
        }
        @if let Some(g) = r.gate.as_ref().filter(|_| state == pb::RolloutState::AwaitingApproval) {
            (gate_banner(r, g))
        }
        @if !r.halt_reason.is_empty() {
            div.reason #halt-reason {
                strong { (if state == pb::RolloutState::CompletedWithFailures { "Not a success: " } else { "Why it stopped: " }) }
                (r.halt_reason)
            }
        }
        div.big {
            div.figure {
                span #percent data-percent=(format!("{:.1}", r.percent_complete)) { (format!("{:.1}%", r.percent_complete)) }
                span.label { "of " (r.hosts_selected) " selected hosts " (done_on(r)) }
            }
            (bar(r.hosts_selected, &[("ok", r.hosts_succeeded), ("bad", r.hosts_failed), ("run", r.hosts_in_flight)]))
            div.figure.small {
                span #customers data-percent=(format!("{customers:.1}")) { (format!("{customers:.1}%")) }
                span.label { "of customers mitigated (" (r.customers_mitigated) " of " (r.customers_affected) ")" }
            }
        }
        div.counts {
            (count("succeeded", r.hosts_succeeded, "ok"))
            (count("failed", r.hosts_failed, "bad"))
            (count("in flight", r.hosts_in_flight, "run"))
            (count("pending", r.hosts_pending, "idle"))
            @if r.hosts_unhealthy > 0 { (count("unhealthy at a gate", r.hosts_unhealthy, "warn")) }
        }
        @if !r.failures.is_empty() {
            h2 { "Failures by reason" }
            (failure_groups(r))
        }
        @if !r.stages.is_empty() {
            h2 { "Stages" }
            table.waves.stages {
                thead { tr { @for s in &r.stages { th { (s.name) } } } }
                tbody { tr {
                    @for s in &r.stages {
                        td class=(if s.state == "running" { "current" } else { "" }) {
                            (bar(s.hosts, &[("ok", s.succeeded), ("bad", s.failed)]))
                            span.num { (s.succeeded) " of " (s.hosts) ", " (s.state) }
                        }
                    }
                } }
            }
        }
        h2 { "Waves" }
        (waves(r))
        @if r.bake_until_unix_ms > 0 {
            p.sub { "Baking: the health gate runs at " (time(r.bake_until_unix_ms)) }
        }
        @if r.plan.as_ref().is_some_and(|p| p.analysis.is_some()) {
            h2 { "Analysis" }
            (super::chart::analysis(r))
        }
        h2 { "Timeline" }
        (events(timeline))
    }
}

/// A bar per wave, the current one marked.
fn waves(r: &pb::Rollout) -> Markup {
    let state = r.state();
    html! {
        table.waves {
            thead { tr { th { "wave" } th { "share" } th { "hosts" } th.wide { "done" } th { "state" } } }
            tbody {
                @for w in &r.waves {
                    tr class=(if w.index == r.current_wave && !state.is_terminal() { "current" } else { "" }) {
                        td { (w.index + 1) }
                        td { (crate::summary::wave_name(w)) }
                        td { (w.size) }
                        td.wide {
                            (bar(w.size, &[("ok", w.succeeded), ("bad", w.failed), ("run", w.in_flight)]))
                            span.num { (w.succeeded) " ok" @if w.failed > 0 { ", " (w.failed) " failed (tolerates " (w.max_failed) ")" } }
                        }
                        td { (w.state().label()) }
                    }
                }
            }
        }
    }
}

/// Which hosts failed and why, grouped by reason: the same groups as `rollout status`.
fn failure_groups(r: &pb::Rollout) -> Markup {
    html! {
        table.failures {
            thead { tr { th { "hosts" } th { "kind" } th.wide { "reason" } th { "first hosts" } } }
            tbody {
                @for g in &r.failures {
                    tr {
                        td.num { (g.hosts) }
                        td { span class=(format!("badge {}", if g.kind == "failed" { "bad" } else { "warn" })) { (g.kind) } }
                        td.wide { (g.reason) }
                        td {
                            (g.host_ids.join(", "))
                            @if g.hosts > g.host_ids.len() as u64 { " (+" (g.hosts - g.host_ids.len() as u64) " more)" }
                        }
                    }
                }
            }
        }
        p.sub { "Every host with its reason: " code { "rollout hosts --rollout " (r.name) " --failed" } "; run them again: " code { "rollout retry " (r.name) } }
    }
}

/// The version a rollout brings: the build, or what a rollback returns hosts to.
fn version_of(r: &pb::Rollout) -> String {
    match (r.kind.as_str(), r.version.as_str(), r.rolls_back.as_str()) {
        ("rollback", "", "") => "each host's previous".to_string(),
        ("rollback", "", from) => format!("{from} → previous"),
        ("rollback", to, _) => format!("back to {to}"),
        (_, "", _) => "-".to_string(),
        (_, v, _) => v.to_string(),
    }
}

/// What the hosts counted done have: "on 15.20.8207.12", "rolled back", "restarted".
fn done_on(r: &pb::Rollout) -> String {
    match (r.kind.as_str(), r.version.as_str()) {
        ("fix", v) | ("rollback", v) if !v.is_empty() => format!("on {v}"),
        ("rollback", _) => "rolled back".to_string(),
        _ => "restarted".to_string(),
    }
}

/// Says plainly that business hours follow a drill clock, not the real time.
pub(super) fn drill_banner(drill: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = drill {
            div.reason.drill { strong { "Drill: " } (text) }
        }
    }
}

/// The status text, as every notification says it (with the drill clock in force).
/// The reason a stopped rollout gives is in its own box below, said once.
fn headline(r: &pb::Rollout, drill: Option<&str>) -> String {
    let mut shown = r.clone();
    shown.drill_clock = drill.unwrap_or_default().to_string();
    if !shown.halt_reason.is_empty() {
        shown.halt_reason = "why is below".into();
    }
    crate::summary::rollout(&shown)
}

/// The open gate: what it waits for, who approved, the deadline, what the next wave
/// will take. The `Approve` button is above it, outside the live view (a form the
/// stream would redraw while someone types).
fn gate_banner(r: &pb::Rollout, g: &pb::Gate) -> Markup {
    let e = g.evidence.clone().unwrap_or_default();
    let next = e.next_wave.unwrap_or_default();
    html! {
        div.reason.gate #gate data-gate-id=(g.gate_id) {
            strong { "Awaiting approval: " }
            "the gate after " (g.after) " (wave " (g.wave) ") needs " (g.approvals_needed) " more of "
            (g.approvals_required) " approvals (" (g.role) " or above" @if g.four_eyes { ", not the submitter " (r.submitted_by) } "). "
            @if g.approvals.is_empty() {
                "Nobody has approved yet. "
            } @else {
                "Approved by "
                @for (i, a) in g.approvals.iter().enumerate() {
                    @if i > 0 { ", " }
                    (a.principal) " (" (a.role) ", " (time(a.at_unix_ms)) ")"
                }
                ". "
            }
            @if g.deadline_unix_ms > 0 {
                "Deadline " (time(g.deadline_unix_ms)) ", then " (g.on_timeout) ". "
            } @else {
                "No deadline. "
            }
            br;
            "Wave " (g.wave) ": " (e.hosts_succeeded) " of " (e.wave_size) " hosts succeeded, " (e.hosts_failed) " failed, "
            (e.hosts_unhealthy) " unhealthy after the bake. Next, wave " (next.index + 1) " (" (next.percent) ") takes "
            (next.new_hosts) " hosts"
            @if !next.customers.is_empty() {
                ": "
                @for (i, c) in next.customers.iter().take(5).enumerate() {
                    @if i > 0 { "; " }
                    (c.customer) " (" (c.hosts) " hosts, " (c.why) ")"
                }
            }
            ". "
            "Approve with " code { "rollout approve " (r.name) } " (gate " code { (g.gate_id) } ")."
        }
    }
}

pub(super) fn count(label: &str, n: u64, class: &str) -> Markup {
    html! { div class=(format!("count {class}")) { span.n { (n) } span.label { (label) } } }
}

/// "09:14:03 UTC".
fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Audit lines, newest first.
pub fn events(list: &[pb::EventRecord]) -> Markup {
    html! {
        @if list.is_empty() { p.empty { "Nothing recorded yet." } }
        ol.timeline {
            @for e in list.iter().rev() {
                li class=(if e.result == "ok" { "" } else { "refused" }) {
                    span.when { (time(e.at_unix_ms)) }
                    span.kind { (e.kind) }
                    span.what { (e.detail) }
                    span.who { (e.principal) @if e.result != "ok" { " - " (e.result) } }
                }
            }
        }
    }
}

/// The controllers sharing the store (a fragment): who leads, since when, with which
/// epoch; the standbys forward calls to it and show its dashboard.
pub fn controllers(all: Result<&[pb::ControllerInfo], &str>) -> Markup {
    html! {
        @match all {
            Err(e) => p.error { "The controllers cannot be read: " (e) },
            Ok(all) => table.rollouts {
                thead { tr { th { "controller" } th { "role" } th { "epoch" } th { "since" } th { "dashboard" } } }
                tbody {
                    @for c in all {
                        @let class = if c.role == "leader" { "ok" } else { "idle" };
                        tr {
                            td { code { (c.advertise) } }
                            td { span class=(format!("badge {class}")) { (c.role) } }
                            td.num { @if c.role == "leader" { (c.epoch) } }
                            td { (time(c.since_unix_ms)) }
                            td { @if !c.dashboard.is_empty() { a href=(c.dashboard) { (c.dashboard) } } }
                        }
                    }
                }
            },
        }
    }
}

pub(super) fn tier_class(tier: &str) -> String {
    format!("tier-{tier}")
}

const BAND_W: f64 = 1200.0;
const DOT: f64 = 11.0;
const BASE: f64 = 64.0;

/// The follow-the-sun view (a fragment): a 24-hour band of local time, each time zone
/// a column at its local time now, its customers stacked on it, coloured by tier and
/// ringed red when some of their hosts are down; then whose day starts next.
pub fn sun(s: &Sun, drill: Option<&str>) -> Markup {
    let tallest = s.zones.iter().map(|z| z.customers.len()).max().unwrap_or(0) as f64;
    let height = BASE + 30.0 + tallest * DOT;
    let x = |minute: u16| 30.0 + f64::from(minute) / 1440.0 * BAND_W;
    let baseline = height - BASE;
    html! {
        (drill_banner(drill))
        div.legend {
            span { "Now: " (s.now_utc) @if drill.is_some() { " (drill clock)" } }
            @for tier in [Tier::InHours, Tier::StartingSoon, Tier::OffHours] {
                @let t = s.tiers.get(&tier).cloned().unwrap_or_default();
                span class=(format!("key {}", tier_class(tier.as_str()))) {
                    (tier.as_str()) ": " (t.customers) " customers, " (t.down) " of " (t.hosts) " hosts down"
                    @if t.unknown > 0 { ", " (t.unknown) " unknown" }
                }
            }
            span.key.down { "red ring: some hosts down" }
            span { "unknown: health never reported or stale (" code { "rollout hosts --probe" } " asks)" }
        }
        svg.sun #sun viewBox=(format!("0 0 {} {height}", BAND_W + 60.0)) role="img" {
            title { "Customers at their local time now" }
            rect.night x=(x(0)) y="0" width=(x(360) - x(0)) height=(baseline) {}
            rect.work x=(x(540)) y="0" width=(x(1020) - x(540)) height=(baseline) {}
            rect.night x=(x(1260)) y="0" width=(x(1440) - x(1260)) height=(baseline) {}
            line.axis x1=(x(0)) y1=(baseline) x2=(x(1440)) y2=(baseline) {}
            @for h in (0..=24).step_by(3) {
                text.tick x=(x(h * 60)) y=(baseline + 16.0) { (format!("{h:02}:00")) }
            }
            @for (k, z) in s.zones.iter().enumerate() {
                @let cx = x(z.minute);
                // Three rows of labels, so that neighbouring zones do not overlap.
                text.zone x=(cx) y=(baseline + 30.0 + (k % 3) as f64 * 13.0) { title { (z.names.join(", ")) " " (z.local) } (z.offset) }
                @for (i, c) in z.customers.iter().enumerate() {
                    circle class=(dot_class(c)) cx=(cx) cy=(baseline - 8.0 - i as f64 * DOT) r="4.5" {
                        title { (c.id) ": " (c.why) "; " (health_words(c)) }
                    }
                }
                @if z.more > 0 {
                    text.more x=(cx) y=(baseline - 12.0 - z.customers.len() as f64 * DOT) { "+" (z.more) }
                }
            }
        }
        h2 { "Whose day starts next" }
        @if s.next.is_empty() { p.empty { "Every customer is in hours, or none has a workday ahead." } }
        table.queue {
            tbody {
                @for c in &s.next {
                    tr {
                        td { (c.id) }
                        td { span class=(format!("badge {}", tier_class(c.tier.as_str()))) { (c.tier.as_str()) } }
                        td { (c.why) }
                        td { (health_words(c)) }
                    }
                }
            }
        }
    }
}

/// "7/10 hosts known healthy, 2 down, 1 unknown": never more healthy than measured.
fn health_words(c: &Placed) -> String {
    let healthy = c.hosts.saturating_sub(c.down + c.unknown);
    let mut words = format!("{healthy}/{} hosts known healthy", c.hosts);
    if c.down > 0 {
        words.push_str(&format!(", {} down", c.down));
    }
    if c.unknown > 0 {
        words.push_str(&format!(", {} unknown", c.unknown));
    }
    words
}

fn dot_class(c: &Placed) -> String {
    let down = if c.down > 0 { " down" } else { "" };
    format!("dot {}{down}", tier_class(c.tier.as_str()))
}

/// A one-line fragment in place of what is gone.
pub fn message_fragment(text: &str) -> Markup {
    html! { p { (text) } }
}

/// A one-line page for a refusal or a missing rollout.
pub fn message(title: &str, who: Option<(&Principal, &str)>, text: &str) -> Markup {
    page(
        title,
        who,
        html! { h1 { (title) } p { (text) } p { a href="/" { "All rollouts" } } },
    )
}
