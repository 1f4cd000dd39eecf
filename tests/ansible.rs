//! `rollout fleet import --ansible` on the JSON a real `ansible-inventory`
//! (ansible-core from PyPI, in a venv made here) prints from an INI inventory with
//! groups, children and host and group variables. Skipped without Python's venv or a
//! package index, failing instead with ROLLOUT_PYTHON_TESTS=required.

mod common;

use common::*;
use rollout::inventory::FleetFile;

const INVENTORY: &str = "\
[apac]
exo-1 ansible_host=127.0.0.1 ansible_port=2222 ansible_user=exo rollout_customers=contoso region=apac
exo-2 ansible_host=10.0.0.2 rollout_customers=contoso,fabrikam region=apac

[emea]
exo-3 ansible_host=10.0.0.3 ansible_user=ops region=emea

[exchange:children]
apac
emea

[exchange:vars]
service=exchange-routing
";

const CUSTOMERS: &str = "customers:
  - {id: contoso, timezone: Asia/Seoul, hours: \"09:00-18:00\"}
  - {id: fabrikam, timezone: Europe/Berlin, hours: \"09:00-18:00\"}
";

/// `rollout fleet import --ansible` reads what a real `ansible-inventory --list`
/// (ansible-core from PyPI) prints: its hosts become SSH hosts with their labels and
/// customers.
#[ignore = "needs Python 3 with venv and PyPI; cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ansible_inventory_becomes_a_fleet_of_ssh_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = common::python::venv(dir.path(), &["ansible-core==2.17.7"], "ansible-inventory") else {
        return;
    };
    let ini = dir.path().join("inventory.ini");
    std::fs::write(&ini, INVENTORY).unwrap();
    let listed = std::process::Command::new(bin.join("ansible-inventory"))
        .arg("-i")
        .arg(&ini)
        .arg("--list")
        .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-tmp"))
        .env("ANSIBLE_HOME", dir.path().join("ansible-home"))
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let json = dir.path().join("inventory.json");
    std::fs::write(&json, &listed.stdout).unwrap();
    let customers = dir.path().join("customers.yaml");
    std::fs::write(&customers, CUSTOMERS).unwrap();
    let out = dir.path().join("fleet.yaml");
    let (j, c, o) = (
        json.display().to_string(),
        customers.display().to_string(),
        out.display().to_string(),
    );
    let args = [
        "fleet",
        "import",
        "--ansible",
        &j,
        "--customers",
        &c,
        "--user",
        "deploy",
        "--label-var",
        "region",
        "--label-var",
        "service",
        "-o",
        &o,
    ];
    let ran = rollout(&args).await;
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let fleet = FleetFile::load(&out).unwrap();
    let host = |id: &str| {
        fleet
            .hosts
            .iter()
            .find(|h| h.id == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    assert_eq!(&*host("exo-1").address, "ssh://exo@127.0.0.1:2222");
    assert_eq!(
        &*host("exo-2").address,
        "ssh://deploy@10.0.0.2:22",
        "--user where ansible_user is missing"
    );
    assert_eq!(&*host("exo-3").address, "ssh://ops@10.0.0.3:22");
    let one = host("exo-1");
    assert_eq!(one.labels.get("apac"), Some("true"));
    assert_eq!(one.labels.get("exchange"), Some("true"), "a parent group too");
    assert_eq!(one.labels.get("emea"), None);
    assert_eq!(one.labels.get("region"), Some("apac"));
    assert_eq!(one.labels.get("service"), Some("exchange-routing"), "a group variable");
    assert_eq!(
        rollout::inventory::strings(&host("exo-2").customers),
        ["contoso", "fabrikam"]
    );
    assert_eq!(fleet.customers.len(), 2);

    // A customer the customers file lacks: one line, nothing written.
    std::fs::write(&customers, "customers: []\n").unwrap();
    std::fs::remove_file(&out).unwrap();
    let refused = rollout(&args).await;
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.contains("customer `contoso`") && said.contains("customers file"),
        "{said}"
    );
    assert!(!out.exists(), "nothing written");
}
