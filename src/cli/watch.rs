//! Following a rollout live: `rollout watch`, and the demo's view.
//!
//! On a terminal there is a progress bar per wave and one for the whole rollout;
//! elsewhere (CI logs, pipes) a line is printed whenever the state or wave changes
//! or another tenth of the selection is done. When the controller goes away (it was
//! restarted), the watcher reconnects and carries on.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::connect;
use super::render::{is_terminal, one_line, state_name, wave_label};
use crate::proto::v1 as pb;
use crate::{Error, Result};

/// Prints lines above the progress bars, from any task; to standard error when
/// standard output carries JSON lines.
#[derive(Clone)]
pub struct Printer(Option<MultiProgress>, bool);

impl Printer {
    pub fn line(&self, text: &str) {
        match &self.0 {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None if self.1 => eprintln!("{text}"),
            None => println!("{text}"),
        }
    }
}

/// Shows snapshots as they come.
pub struct Progress {
    bars: Option<Bars>,
    /// JSON lines (`rollout watch --output json`): a rollout's JSON per change.
    json: bool,
    last: Option<(i32, u32, u64, u64)>,
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    waves: Vec<ProgressBar>,
}

impl Progress {
    /// Bars when stdout is a terminal, lines otherwise.
    pub fn new() -> Progress {
        Progress {
            bars: std::io::stdout().is_terminal().then(|| Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                overall: ProgressBar::hidden(),
                waves: Vec::new(),
            }),
            json: false,
            last: None,
        }
    }

    /// A line of JSON (the rollout, as `rollout status --output json` shows it) each
    /// time the state, the wave, the whole percent done or the failures change; notes
    /// go to standard error.
    pub fn json() -> Progress {
        Progress {
            bars: None,
            json: true,
            last: None,
        }
    }

    /// True when showing bars (a terminal), false when printing lines.
    pub fn has_bars(&self) -> bool {
        self.bars.is_some()
    }

    /// Prints a line above the bars (or just a line).
    pub fn note(&self, text: &str) {
        self.printer().line(text);
    }

    /// A handle other tasks can print through without breaking the bars.
    pub fn printer(&self) -> Printer {
        Printer(self.bars.as_ref().map(|b| b.multi.clone()), self.json)
    }

    pub fn update(&mut self, r: &pb::Rollout) {
        match &mut self.bars {
            Some(b) => b.update(r),
            None => {
                // Lines each tenth of the selection, JSON each whole percent.
                let steps = if self.json { 100 } else { 10 };
                let key = (
                    r.state,
                    r.current_wave,
                    r.hosts_succeeded * steps / r.hosts_selected.max(1),
                    r.hosts_failed,
                );
                if self.last != Some(key) {
                    self.last = Some(key);
                    if self.json {
                        println!("{}", super::render::json(r));
                    } else {
                        println!("{}", one_line(r));
                    }
                }
            }
        }
    }

    /// Leaves the bars as they are on screen.
    pub fn finish(&mut self) {
        if let Some(b) = &self.bars {
            for bar in b.waves.iter().chain([&b.overall]) {
                bar.abandon();
            }
        }
    }
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Bars {
    fn update(&mut self, r: &pb::Rollout) {
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:40.cyan/blue}] {pos:>7}/{len:<7} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        if self.waves.is_empty() {
            for w in &r.waves {
                let bar = self.multi.add(ProgressBar::new(w.size));
                bar.set_style(style.clone());
                bar.set_prefix(format!("wave {} {}", w.index + 1, w.percent));
                self.waves.push(bar);
            }
            self.overall = self.multi.add(ProgressBar::new(r.hosts_selected));
            self.overall.set_style(style);
            self.overall.set_prefix("overall");
        }
        for (bar, w) in self.waves.iter().zip(&r.waves) {
            bar.set_position(w.succeeded + w.failed);
            let failed = if w.failed > 0 {
                format!(", {} failed", w.failed)
            } else {
                String::new()
            };
            bar.set_message(format!("{}{failed}", super::render::wave_state_name(w.state())));
        }
        self.overall.set_position(r.hosts_succeeded);
        self.overall.set_message(format!(
            "{:.1}% {} {}",
            r.percent_complete,
            state_name(r.state()),
            wave_label(r)
        ));
    }
}

/// Follows rollout `name` until it ends or halts (or, with `exit_on_gate`, awaits
/// approval). A gate that opens is shown once. A lost controller is waited for up to
/// `reconnect` (it may be restarting); the last snapshot is returned.
pub async fn follow(
    server: &str,
    name: &str,
    reconnect: Duration,
    exit_on_gate: bool,
    progress: &mut Progress,
) -> Result<pb::Rollout> {
    let mut last: Option<pb::Rollout> = None;
    // The gate last shown (when it opened, its id, its approvals): a gate that opens
    // is shown whole, and then each new approval or new evidence in a line.
    let mut shown_gate: (i64, String, usize) = (0, String::new(), 0);
    let mut lost_since: Option<Instant> = None;
    loop {
        let attempt = async {
            let mut client = connect(server).await?;
            let request = pb::GetRolloutRequest {
                name: name.to_string(),
                id: 0,
            };
            Ok::<_, Error>(client.watch_rollout(request).await?.into_inner())
        }
        .await;
        let mut stream = match attempt {
            Ok(s) => s,
            Err(e) => {
                // The controller is restarting: refused connections, a connection that
                // broke under the call (tonic says Unknown "transport error"), or one
                // that is shutting down.
                let retryable = matches!(&e, Error::Unreachable(_))
                    || matches!(&e, Error::Transport { .. })
                    || matches!(
                        &e,
                        Error::Remote {
                            code: tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled,
                            ..
                        }
                    );
                let since = *lost_since.get_or_insert_with(Instant::now);
                if last.is_none() || !retryable || since.elapsed() > reconnect {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if lost_since.take().is_some() {
            progress.note("reconnected to the controller");
        }
        loop {
            match stream.message().await {
                Ok(Some(r)) => {
                    progress.update(&r);
                    let waiting = r.state() == pb::RolloutState::AwaitingApproval;
                    if let Some(g) = r.gate.as_ref().filter(|_| waiting) {
                        note_gate(progress, &r.name, g, &mut shown_gate);
                    }
                    let stop =
                        is_terminal(r.state()) || r.state() == pb::RolloutState::Halted || (exit_on_gate && waiting);
                    last = Some(r);
                    if stop {
                        progress.finish();
                        return last.ok_or_else(|| Error::Usage("no snapshot".into()));
                    }
                }
                Ok(None) | Err(_) => {
                    progress.note("lost the controller; waiting for it to come back");
                    lost_since = Some(Instant::now());
                    break;
                }
            }
        }
    }
}

/// Shows an open gate once when it opens, then a line for each approval and each new
/// gate id (the analysis measured again while it waits).
fn note_gate(progress: &Progress, name: &str, g: &pb::Gate, shown: &mut (i64, String, usize)) {
    if shown.0 != g.opened_at_unix_ms {
        progress.note(&format!(
            "awaiting approval (`rollout approve {name}`):\n{}",
            super::approve::gate(g).trim_end()
        ));
    } else {
        for a in g.approvals.iter().skip(shown.2) {
            progress.note(&format!(
                "approved by {} ({}): {} of {}, {} more needed",
                a.principal,
                a.role,
                g.approvals.len(),
                g.approvals_required,
                g.approvals_needed
            ));
        }
        if shown.1 != g.gate_id {
            let verdicts = g.evidence.as_ref().map_or(0, |e| e.measurements.len());
            progress.note(&format!(
                "new evidence at the gate: {verdicts} measurements so far; the gate id is now {}",
                g.gate_id
            ));
        }
    }
    *shown = (g.opened_at_unix_ms, g.gate_id.clone(), g.approvals.len());
}
