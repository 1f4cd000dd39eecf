//! `rollout fleet import --ansible FILE`: the JSON `ansible-inventory -i INVENTORY
//! --list` prints, as a fleet file of SSH hosts. Each host's address is
//! `ssh://ansible_user@ansible_host:ansible_port` (the inventory name when there is
//! no `ansible_host`, port 22 by default, `--user` when there is no
//! `ansible_user`); each group it is in (but `all` and `ungrouped`) becomes a label
//! `GROUP: "true"`, and the host variables asked for become labels of their own;
//! its customers are the `rollout_customers` variable (comma-separated ids), each of
//! which the customers file must define.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::{Customer, FleetFile, Host, Labels};

/// The host variable naming a host's customers.
pub const CUSTOMERS_VAR: &str = "rollout_customers";

/// How to read an inventory.
#[derive(Debug, Clone, Default)]
pub struct Import {
    /// The SSH user of hosts without `ansible_user`.
    pub user: Option<String>,
    /// Host variables copied as labels.
    pub label_vars: Vec<String>,
}

/// The fleet file for `inventory` (the JSON text of `ansible-inventory --list`) with
/// `customers`; one line saying what is wrong otherwise.
pub fn import(inventory: &str, customers: Vec<Customer>, how: &Import) -> Result<FleetFile, String> {
    let json: Value = serde_json::from_str(inventory)
        .map_err(|e| format!("the inventory is not the JSON `ansible-inventory --list` prints: {e}"))?;
    let Some(groups) = json.as_object() else {
        return Err("the inventory is not a JSON object of groups".into());
    };
    let hostvars = json["_meta"]["hostvars"].as_object().cloned().unwrap_or_default();
    // Each host's groups, every level down (a group's children included).
    let mut member: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in hostvars.keys() {
        member.entry(name.clone()).or_default();
    }
    for (group, body) in groups {
        if group == "_meta" {
            continue;
        }
        for host in hosts_of(groups, group, &mut BTreeSet::new()) {
            let set = member.entry(host).or_default();
            if group != "all" && group != "ungrouped" {
                set.insert(group.clone());
            }
        }
        if !body.is_object() {
            return Err(format!("group `{group}` is not an object with hosts and children"));
        }
    }
    if member.is_empty() {
        return Err("the inventory has no hosts".into());
    }
    let known: BTreeSet<&str> = customers.iter().map(|c| c.id.as_str()).collect();
    let mut hosts = Vec::with_capacity(member.len());
    for (name, in_groups) in member {
        let vars = hostvars.get(&name).cloned().unwrap_or(Value::Null);
        let text = |key: &str| -> Option<String> {
            match &vars[key] {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        let user = text("ansible_user")
            .or_else(|| how.user.clone())
            .ok_or_else(|| format!("host {name} has no ansible_user: set it in the inventory, or give --user"))?;
        let address = text("ansible_host").unwrap_or_else(|| name.clone());
        let port: u16 = match text("ansible_port") {
            None => 22,
            Some(p) => p
                .parse()
                .map_err(|_| format!("host {name}: ansible_port `{p}` is not a port"))?,
        };
        let host_part = if address.contains(':') {
            format!("[{address}]")
        } else {
            address
        };
        let mut labels = Labels::default();
        for g in in_groups {
            labels.insert(g, "true".into());
        }
        for var in &how.label_vars {
            if let Some(v) = text(var) {
                if labels.get(var).is_some() {
                    return Err(format!(
                        "host {name}: variable `{var}` has the name of one of its groups; label it under another name"
                    ));
                }
                labels.insert(var.clone(), v);
            }
        }
        let mut its_customers = Vec::new();
        for id in text(CUSTOMERS_VAR)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if !known.contains(id) {
                return Err(format!(
                    "host {name}: customer `{id}` ({CUSTOMERS_VAR}) is not in the customers file; add it there"
                ));
            }
            its_customers.push(Arc::from(id));
        }
        if !crate::reach::ssh::config::is_user(&user) {
            return Err(format!(
                "host {}: ansible_user `{}` is not a user name (letters, digits, _ . -, starting with a letter, digit or _)",
                crate::ident::escaped(&name),
                crate::ident::escaped(&user)
            ));
        }
        let host = Host {
            id: name,
            address: Arc::from(format!("ssh://{user}@{host_part}:{port}")),
            labels,
            customers: its_customers,
            version: None,
            healthy: true,
        };
        super::check_host(&host)
            .map_err(|(field, message)| format!("host {}: {field}: {message}", crate::ident::escaped(&host.id)))?;
        hosts.push(host);
    }
    Ok(FleetFile { customers, hosts })
}

/// The hosts of `group` and of its children, every level down.
fn hosts_of(groups: &serde_json::Map<String, Value>, group: &str, seen: &mut BTreeSet<String>) -> Vec<String> {
    if !seen.insert(group.to_string()) {
        return Vec::new();
    }
    let body = &groups.get(group).cloned().unwrap_or(Value::Null);
    let mut out: Vec<String> = body["hosts"]
        .as_array()
        .map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    for child in body["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.extend(hosts_of(groups, child, seen));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"{
      "_meta": {"hostvars": {
        "exo-1": {"ansible_host": "10.0.0.1", "ansible_port": 2222, "ansible_user": "exo", "region": "apac", "rollout_customers": "contoso, fabrikam"},
        "exo-2": {"ansible_host": "::1", "region": "emea"}
      }},
      "all": {"children": ["ungrouped", "exchange"]},
      "exchange": {"children": ["apac"], "hosts": ["exo-2"]},
      "apac": {"hosts": ["exo-1"]},
      "ungrouped": {"hosts": []}
    }"#;

    fn customers() -> Vec<Customer> {
        let f = FleetFile::parse(
            "customers:\n  - {id: contoso, timezone: Asia/Seoul, hours: \"09:00-18:00\"}\n  - {id: fabrikam, timezone: Europe/Berlin, hours: \"09:00-18:00\"}\n",
            "customers.yaml",
        )
        .unwrap();
        f.customers
    }

    #[test]
    fn hosts_become_ssh_hosts_with_their_groups_and_customers() {
        let how = Import {
            user: Some("ops".into()),
            label_vars: vec!["region".into()],
        };
        let f = import(INVENTORY, customers(), &how).unwrap();
        assert_eq!(f.hosts.len(), 2);
        let one = &f.hosts[0];
        assert_eq!(&*one.address, "ssh://exo@10.0.0.1:2222");
        assert_eq!(
            (one.labels.get("apac"), one.labels.get("exchange")),
            (Some("true"), Some("true"))
        );
        assert_eq!(one.labels.get("region"), Some("apac"));
        assert_eq!(super::super::strings(&one.customers), ["contoso", "fabrikam"]);
        let two = &f.hosts[1];
        assert_eq!(&*two.address, "ssh://ops@[::1]:22");
        assert_eq!(two.labels.get("apac"), None);
        // The result is a fleet file like any other.
        FleetFile::parse(&f.to_yaml(), "imported.yaml").unwrap();
    }

    #[test]
    fn what_cannot_be_imported_is_said_in_one_line() {
        let e = import(INVENTORY, customers(), &Import::default()).unwrap_err();
        assert_eq!(
            e,
            "host exo-2 has no ansible_user: set it in the inventory, or give --user"
        );
        let e = import(
            INVENTORY,
            Vec::new(),
            &Import {
                user: Some("ops".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("customer `contoso`") && e.contains("customers file"), "{e}");
        assert!(import("[1]", Vec::new(), &Import::default()).is_err());
    }
}
