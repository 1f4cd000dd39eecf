//! Real host agents as real processes (`rollout agent --config`), each with its own
//! directory: deploy and health scripts, config, state file and a log of every run.

use std::path::{Path, PathBuf};

use rollout::cli::process::Spawned;

use super::within;

pub const EXE: &str = env!("CARGO_BIN_EXE_rollout");

/// A host's directory: its deploy script, health script, config and state.
pub struct HostDir {
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl HostDir {
    /// `deploy` is the body of a shell script run as `sh deploy.sh VERSION`; it can
    /// use `$DIR`. Every run appends a line to `runs.log`.
    pub fn new(root: &Path, host: &str, deploy: &str, timeout: &str) -> HostDir {
        let dir = root.join(host);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("deploy.sh"),
            format!(
                "DIR={d}\necho \"$ROLLOUT_OPERATION_ID $1\" >> $DIR/runs.log\n{deploy}\necho \"$1\" > $DIR/version\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("health.sh"), format!("test ! -f {d}/sick\n")).unwrap();
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "host_id: {host}\nlisten: 127.0.0.1:0\nstate_file: {d}/state.json\ncommands:\n  deploy: {{argv: [sh, {d}/deploy.sh, \"{{version}}\"], timeout: {timeout}}}\n  health: {{argv: [sh, {d}/health.sh], timeout: 5s}}\n"
            ),
        )
        .unwrap();
        HostDir { dir, config }
    }

    pub async fn start(&self, listen: &str) -> Spawned {
        let args = [
            "agent".as_ref(),
            "--config".as_ref(),
            self.config.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
        ];
        within(
            60,
            "an agent to start",
            Spawned::start(Path::new(EXE), args, Some(&self.dir.join("agent.log"))),
        )
        .await
        .expect("agent starts")
    }

    pub fn runs(&self, op: &str) -> usize {
        std::fs::read_to_string(self.dir.join("runs.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&format!("{op} ")))
            .count()
    }
}
