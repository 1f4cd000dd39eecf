//! The agent's memory, in a small JSON file written atomically (write a temporary
//! file, fsync, rename, fsync the directory): the version it runs, the one before,
//! and the recent operations with their results, so that a repeated operation_id is
//! never run twice, even after the agent restarts.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Operations remembered; older ones are forgotten first.
const KEEP: usize = 1_000;

/// One operation as remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub action: String,
    /// False from the moment it starts until it finishes: a restarted agent that finds
    /// an unfinished operation knows it was interrupted and does not run it again.
    pub finished: bool,
    pub ok: bool,
    pub detail: String,
    pub version: String,
    pub previous_version: String,
    pub healthy: bool,
}

/// What the agent keeps across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub version: String,
    pub previous_version: String,
    pub operations: VecDeque<Operation>,
    /// Operations actually run (replays excluded), for operators and tests.
    pub executed: u64,
    /// The highest controller epoch seen: a lower one is refused.
    #[serde(default)]
    pub epoch: u64,
}

impl AgentState {
    /// Reads the state file; a missing one is a fresh state.
    pub fn load(path: &Path) -> std::io::Result<AgentState> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not an agent state file ({e}); move it away to start fresh",
                        path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state whole or not at all.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir: PathBuf = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }

    pub fn find(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().rev().find(|o| o.id == id)
    }

    /// Records an operation (replacing an earlier record of the same id).
    pub fn remember(&mut self, op: Operation) {
        self.operations.retain(|o| o.id != op.id);
        self.operations.push_back(op);
        while self.operations.len() > KEEP {
            self.operations.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_save_and_load_and_forgets_old_operations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let mut s = AgentState::load(&path).unwrap();
        assert_eq!(s, AgentState::default());
        for i in 0..(KEEP + 5) {
            s.remember(Operation {
                id: format!("op-{i}"),
                action: "deploy".into(),
                finished: true,
                ok: true,
                detail: String::new(),
                version: "2".into(),
                previous_version: "1".into(),
                healthy: true,
            });
        }
        s.version = "2".into();
        s.save(&path).unwrap();
        let back = AgentState::load(&path).unwrap();
        assert_eq!(back, s);
        assert!(back.find("op-0").is_none() && back.find(&format!("op-{}", KEEP + 4)).is_some());
        std::fs::write(&path, "not json").unwrap();
        assert!(
            AgentState::load(&path)
                .unwrap_err()
                .to_string()
                .contains("move it away")
        );
    }
}
