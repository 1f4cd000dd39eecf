//! The role table: what each role may do ([`Role::allows`]) and what each RPC needs
//! ([`need`]). The whole of authorisation, in one place a reviewer reads at once.

use std::fmt;

/// What a principal may do. Each of viewer, operator and admin may do everything
/// the one before it may; `Agent` may only send heartbeats (for its own hosts), and
/// `Controller` nothing of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Another controller of this site (a `certificates:` entry): may do nothing of
    /// its own, only forward a caller whose certificate it checked, under that
    /// caller's identity (see [`FORWARDED_SUBJECT`]).
    Controller,
    /// An agent: Heartbeat only.
    Agent,
    /// Get, List, Watch.
    Viewer,
    /// Also submit, pause, resume, abort, restart.
    Operator,
    /// Also inventory changes (hosts registering by heartbeat included).
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "agent" => Some(Role::Agent),
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            "controller" => Some(Role::Controller),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Controller => "controller",
        }
    }

    /// The table: may this role make a call that needs `need`?
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Nothing => true,
            Need::Heartbeat => matches!(self, Role::Agent | Role::Admin),
            Need::View => self >= Role::Viewer,
            Need::Change => self >= Role::Operator,
            // The gate decides (operator or admin, as the plan says), so that a
            // viewer's attempt is refused against the rollout and audited there.
            Need::Approve => self >= Role::Viewer,
            Need::Inventory | Need::Freeze => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health checks: anyone, without credentials.
    Nothing,
    /// An agent's heartbeat (it registers or updates its host).
    Heartbeat,
    /// Reading: Get, List, Watch, reflection, the audit log.
    View,
    /// Changing the fleet: submit, pause, resume, abort, restart, cancel.
    Change,
    /// Approving a rollout's gate: passed to the gate, which needs operator or admin
    /// and refuses anyone below it (PermissionDenied, in the audit log).
    Approve,
    /// Changing the inventory by hand.
    Inventory,
    /// Stopping the line (`rollout freeze`, `rollout unfreeze`).
    Freeze,
}

impl Need {
    /// The least role that has it, for refusals.
    pub fn least_role(self) -> &'static str {
        match self {
            Need::Nothing => "none",
            Need::Heartbeat => "agent (or admin)",
            Need::View => "viewer",
            Need::Change | Need::Approve => "operator",
            Need::Inventory | Need::Freeze => "admin",
        }
    }

    /// True for calls that change something: audited and rate-limited.
    pub fn mutates(self) -> bool {
        matches!(self, Need::Change | Need::Approve | Need::Inventory | Need::Freeze)
    }
}

/// What a gRPC method (its HTTP/2 path, `/rollout.v1.Controller/SubmitPlan`) needs.
/// A method this table does not know needs admin: new calls are closed by default.
pub fn need(path: &str) -> Need {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match service {
        "grpc.health.v1.Health" => Need::Nothing,
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => Need::View,
        "rollout.v1.Controller" => match method {
            "GetRollout" | "ListRollouts" | "WatchRollout" | "GetRestartJob" | "ListRestartJobs"
            | "WatchRestartJob" | "ListHosts" | "ListEvents" | "ListRolloutHosts" | "ListControllers"
            | "NotifyStatus" | "ListFreezes" => Need::View,
            "SubmitPlan" | "PauseRollout" | "ResumeRollout" | "AbortRollout" | "RetryRollout" | "TriggerRestart"
            | "CancelRestartJob" | "NotifyTest" | "ApproveRestartJob" => Need::Change,
            "ApproveRollout" => Need::Approve,
            "Heartbeat" => Need::Heartbeat,
            // Stopping the line holds every team's changes: an admin's call.
            "Freeze" | "Unfreeze" => Need::Freeze,
            _ => Need::Inventory,
        },
        _ => Need::Inventory,
    }
}
