//! `rollout store copy`: a stopped sled controller's state into etcd, so that a site
//! can move from one controller to several without losing its history (unfinished
//! rollouts included: the controllers on etcd resume them).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::store::Store;
use crate::store::etcd_backend::{EtcdAddress, EtcdBackend};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a data dir (no controller may hold it) into an empty etcd prefix.
    Copy {
        /// The sled data dir (`rollout serve --data`).
        #[arg(long)]
        from: PathBuf,
        /// Where to: etcd://HOST:PORT[,HOST:PORT...][/PREFIX].
        #[arg(long)]
        to: EtcdAddress,
    },
}

pub fn run(command: StoreCommand) -> Result<ExitCode> {
    match command {
        StoreCommand::Copy { from, to } => copy(&from, &to).map(|()| ExitCode::SUCCESS),
    }
}

fn copy(from: &std::path::Path, to: &EtcdAddress) -> Result<()> {
    if !from.join("conf").exists() {
        return Err(Error::Usage(format!(
            "--from {}: not a controller's data dir (no sled database there)",
            from.display()
        )));
    }
    // Opening takes the directory's lock (refused while a controller holds it) and
    // brings it to this version's schema first.
    let source = Store::open(from)?;
    let target = EtcdBackend::connect(to).map_err(crate::store::Error::Backend)?;
    let name = format!(
        "etcd prefix {} at {}",
        String::from_utf8_lossy(&to.prefix),
        to.endpoints.join(",")
    );
    let copied = source.copy_to(&target, &name)?;
    println!("copied {copied} records from {} into the {name}", from.display());
    Ok(())
}
