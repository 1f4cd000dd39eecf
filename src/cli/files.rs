//! The offline commands over the files people write: `plan check`, `notify check`
//! and `fleet generate`. None needs a controller.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{GenerateArgs, ImportArgs, Output, read, write_atomically};
use crate::inventory::{FleetFile, GenerateOptions, generate};
use crate::plan::Plan;
use crate::{Error, Result};

pub(super) fn plan_check(files: &[PathBuf], output: Output) -> Result<ExitCode> {
    let mut bad = 0;
    let mut checked = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let plan = read(path, "plan").and_then(|text| Ok(Plan::from_yaml(&text, &shown)?));
        if output == Output::Json {
            bad += usize::from(plan.is_err());
            checked.push(match plan {
                Ok(plan) => serde_json::json!({
                    "file": shown,
                    "ok": true,
                    "name": plan.name,
                    "kind": plan.kind.as_str(),
                    "waves": plan.waves.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                    "max_parallel": plan.max_parallel,
                    "bake": crate::text::format_duration(plan.bake),
                    "gates": plan.gates.iter().map(|g| g.describe()).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({"file": shown, "ok": false, "error": e.to_string()}),
            });
            continue;
        }
        match plan {
            Ok(plan) => {
                println!(
                    "ok: {shown}: {} `{}`, {} waves ({}), max_parallel {}, bake {}",
                    plan.kind.as_str(),
                    plan.name,
                    plan.waves.len(),
                    plan.waves.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(" "),
                    plan.max_parallel,
                    crate::text::format_duration(plan.bake)
                );
                for gate in &plan.gates {
                    println!("    gate {}", gate.describe());
                }
            }
            Err(e) => {
                bad += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if output == Output::Json {
        println!("{}", serde_json::Value::Array(checked));
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub(super) fn notify_check(files: &[PathBuf]) -> Result<ExitCode> {
    let mut bad = 0;
    for path in files {
        match crate::notify::Sinks::load(path) {
            Ok(sinks) => {
                println!("ok: {}: {} sinks", path.display(), sinks.0.len());
                for sink in &sinks.0 {
                    println!("    {}", sink.describe());
                }
            }
            Err(e) => {
                bad += 1;
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub(super) fn fleet_import(args: &ImportArgs) -> Result<ExitCode> {
    let inventory = read(&args.ansible, "Ansible inventory")?;
    let customers = FleetFile::load(&args.customers)?.customers;
    let how = crate::inventory::ansible::Import {
        user: args.user.clone(),
        label_vars: args.label_vars.clone(),
    };
    let fleet = crate::inventory::ansible::import(&inventory, customers, &how)
        .map_err(|e| Error::Usage(format!("{}: {e}", args.ansible.display())))?;
    let yaml = fleet.to_yaml();
    // Checked as any fleet file is before it is written.
    FleetFile::parse(&yaml, "the imported fleet")?;
    write_fleet(&yaml, &fleet, args.output.as_deref())
}

/// Writes a fleet file to `output` (atomically) or standard output.
fn write_fleet(yaml: &str, fleet: &FleetFile, output: Option<&std::path::Path>) -> Result<ExitCode> {
    match output {
        Some(path) => {
            write_atomically(path, yaml.as_bytes())?;
            eprintln!(
                "wrote {} hosts and {} customers to {}",
                fleet.hosts.len(),
                fleet.customers.len(),
                path.display()
            );
        }
        None => print!("{yaml}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn fleet_generate(args: &GenerateArgs) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.unhealthy_rate) {
        return Err(Error::Usage("--unhealthy-rate must be between 0 and 1".into()));
    }
    let fleet = generate(&GenerateOptions {
        hosts: args.hosts,
        agent: args.agent.clone(),
        seed: args.seed,
        unhealthy_rate: args.unhealthy_rate,
    });
    let yaml = fleet.to_yaml();
    write_fleet(&yaml, &fleet, args.output.as_deref())
}
