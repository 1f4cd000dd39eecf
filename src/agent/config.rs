//! The agent's configuration file (`rollout agent --config agent.yaml`), strict like
//! every file people write here. The format is a contract; see DESIGN.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::text::parse_duration;
pub use crate::yamlfile::commands::CommandSpec;
use crate::yamlfile::commands::{Commands, CommandsFile};

/// Why an agent config was refused.
pub use crate::yamlfile::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    host_id: String,
    listen: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    controller: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    customers: Vec<String>,
    state_file: PathBuf,
    #[serde(default)]
    heartbeat: Option<String>,
    commands: CommandsFile,
}

/// A validated agent config.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub host_id: String,
    pub listen: String,
    /// The address the controller should call (default: the bound listen address).
    pub address: Option<String>,
    /// Where heartbeats go, when set.
    pub controller: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub customers: Vec<String>,
    pub state_file: PathBuf,
    pub heartbeat: Duration,
    pub deploy: CommandSpec,
    /// Defaults to the deploy command with the previous version.
    pub rollback: Option<CommandSpec>,
    pub restart: Option<CommandSpec>,
    /// Without one, the host is reported healthy.
    pub health: Option<CommandSpec>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, Error> {
        let text = crate::yamlfile::read(path, "agent config")?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<AgentConfig, Error> {
        let file: ConfigFile = crate::yamlfile::parse(text, path)?;
        let invalid = |field: &str, message: String| Error::at(path, text, field, message);
        crate::ident::host_id(&file.host_id).map_err(|e| invalid("host_id", e.to_string()))?;
        for key in file.labels.keys() {
            crate::ident::label_key(key).map_err(|e| invalid("labels", e.to_string()))?;
        }
        for (i, c) in file.customers.iter().enumerate() {
            crate::ident::customer_id(c).map_err(|e| invalid(&format!("customers[{i}]"), e.to_string()))?;
        }
        let heartbeat = match file.heartbeat.as_deref() {
            None => Duration::from_secs(10),
            Some(h) => parse_duration(h).map_err(|m| invalid("heartbeat", m))?,
        };
        if heartbeat < Duration::from_millis(100) {
            return Err(invalid("heartbeat", "is shorter than 100ms; 10s is usual".into()));
        }
        let c = Commands::check(file.commands, path)?;
        Ok(AgentConfig {
            host_id: file.host_id,
            listen: file.listen,
            address: file.address.filter(|a| !a.is_empty()),
            controller: file.controller.filter(|c| !c.is_empty()),
            labels: file.labels,
            customers: file.customers,
            state_file: file.state_file,
            heartbeat,
            deploy: c.deploy,
            rollback: c.rollback,
            restart: c.restart,
            health: c.health,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
host_id: apac-exo-0001
listen: 0.0.0.0:7070
controller: https://controller.internal:50051
labels: {region: apac, service: exchange-routing}
customers: [contoso]
state_file: /var/lib/rollout-agent/state.json
heartbeat: 10s
commands:
  deploy:   {argv: ["/opt/exo/deploy.sh", "{version}"], timeout: 5m}
  rollback: {argv: ["/opt/exo/deploy.sh", "{version}"], timeout: 5m}
  restart:  {argv: ["systemctl", "restart", "exo-routing"], timeout: 2m}
  health:   {argv: ["/opt/exo/healthcheck"], timeout: 10s}
"#;

    #[test]
    fn the_design_example_parses() {
        let c = AgentConfig::parse(CONFIG, "agent.yaml").unwrap();
        assert_eq!(c.deploy.timeout, Duration::from_secs(300));
        assert_eq!(c.restart.unwrap().argv, ["systemctl", "restart", "exo-routing"]);
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (text, field) in [
            (
                CONFIG.replace("timeout: 10s", "timeout: soon"),
                "commands.health.timeout",
            ),
            (
                CONFIG.replace("[\"/opt/exo/healthcheck\"]", "[]"),
                "commands.health.argv",
            ),
            (CONFIG.replace("host_id: apac-exo-0001", "host_id: \"\""), "host_id"),
            (CONFIG.replace("heartbeat: 10s", "heartbeat: 1ms"), "heartbeat"),
        ] {
            // Named at its line and column where it can be found, the field first.
            match AgentConfig::parse(&text, "a.yaml") {
                Err(Error::Syntax { line, message, .. }) => {
                    assert!(
                        line > 0 && message.starts_with(&format!("{field}: ")),
                        "{field}: {message}"
                    )
                }
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected an error naming the field, got {other:?}"),
            }
        }
        assert!(matches!(
            AgentConfig::parse(&CONFIG.replace("heartbeat:", "hartbeat:"), "a.yaml"),
            Err(Error::Syntax { .. })
        ));
    }
}
