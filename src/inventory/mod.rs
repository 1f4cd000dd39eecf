//! The fleet inventory: hosts (with their agent's address, labels, customers and
//! version) and customers (with their time zone and working hours).
//!
//! Read from a fleet file (`rollout serve --fleet`, `rollout agent --simulate`),
//! written by `rollout fleet generate`. The file format is a contract that scripts
//! rely on (see DESIGN.md); it is validated as strictly as a plan.

pub mod ansible;
mod generate;
mod labels;
mod pieces;

pub use labels::Labels;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use generate::{GenerateOptions, generate};

pub use crate::hours::Customer;
use crate::hours::{Calendar, parse_hours, parse_weekday};
use crate::intern::intern;
use crate::plan::Selector;
use crate::proto::v1 as pb;

/// Fleet files hold up to a few million hosts; beyond this, something is wrong.
const MAX_FLEET_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Why a fleet file was refused.
pub use crate::yamlfile::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// Owned copies of interned strings (for a message).
pub fn strings(shared: &[Arc<str>]) -> Vec<String> {
    shared.iter().map(|s| s.to_string()).collect()
}

/// A host's repeated strings (address, customers, version) read as the shared
/// copies of [`crate::intern`]: a million hosts name a few thousand customers.
mod interned {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer};

    use crate::intern::intern;

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        Ok(intern(&String::deserialize(d)?))
    }

    pub fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Arc<str>>, D::Error> {
        let all = Vec::<String>::deserialize(d)?;
        Ok(all.iter().map(|s| intern(s)).collect())
    }

    pub fn maybe<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(|s| intern(&s)))
    }
}

/// A machine with an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub id: String,
    /// `host:port` of its agent; every host of a simulated fleet shares one.
    #[serde(deserialize_with = "interned::one")]
    pub address: Arc<str>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default, deserialize_with = "interned::many")]
    pub customers: Vec<Arc<str>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "interned::maybe"
    )]
    pub version: Option<Arc<str>>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub healthy: bool,
}

impl Host {
    /// True when every key of the selector has one of its values among the host's labels.
    pub fn matches(&self, selector: &Selector) -> bool {
        selector
            .iter()
            .all(|(key, values)| self.labels.get(key).is_some_and(|v| values.iter().any(|x| x == v)))
    }
}

/// The fleet file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    #[serde(default)]
    pub customers: Vec<Customer>,
    #[serde(default)]
    pub hosts: Vec<Host>,
}

impl FleetFile {
    /// Reads and validates a fleet file.
    pub fn load(path: &Path) -> Result<FleetFile> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| Error::Read {
            path: shown.clone(),
            what: "fleet file",
            source,
        })?;
        if meta.len() > MAX_FLEET_BYTES {
            return Err(Error::invalid(
                &shown,
                "file",
                format!("is {} bytes; the limit is 2 GiB", meta.len()),
            ));
        }
        let text = crate::yamlfile::read(path, "fleet file")?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates a fleet file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<FleetFile> {
        let fleet = match pieces::parse(text) {
            Some(fleet) => fleet,
            None => crate::yamlfile::parse(text, path)?,
        };
        // A rule broken after parsing is still shown at its line and column.
        fleet.validate(path).map_err(|e| match e {
            Error::Invalid { path, field, message } => Error::at(&path, text, &field, message),
            other => other,
        })?;
        Ok(fleet)
    }

    /// Checks the rules the format promises: unique ids, known customers, real time
    /// zones, well-formed hours, days and dates.
    pub fn validate(&self, path: &str) -> Result<()> {
        let invalid = |field: String, message: String| Error::invalid(path, field, message);
        let mut customer_ids = HashSet::with_capacity(self.customers.len());
        for (i, c) in self.customers.iter().enumerate() {
            let field = |name: &str| format!("customers[{i}].{name}");
            crate::ident::customer_id(&c.id).map_err(|e| invalid(field("id"), e.to_string()))?;
            if !customer_ids.insert(c.id.as_str()) {
                return Err(invalid(
                    field("id"),
                    format!("`{}` appears twice; customer ids are unique", c.id),
                ));
            }
            if jiff::tz::TimeZone::get(&c.timezone).is_err() {
                return Err(invalid(
                    field("timezone"),
                    format!(
                        "`{}` is not an IANA time zone (like Asia/Seoul or America/New_York)",
                        c.timezone
                    ),
                ));
            }
            parse_hours(&c.hours).map_err(|m| invalid(field("hours"), m))?;
            if c.workdays.is_empty() {
                return Err(invalid(
                    field("workdays"),
                    "is empty: list days like [mon, tue, wed, thu, fri]".into(),
                ));
            }
            for (d, day) in c.workdays.iter().enumerate() {
                if parse_weekday(day).is_none() {
                    return Err(invalid(
                        format!("customers[{i}].workdays[{d}]"),
                        format!("`{day}` is not a day: use mon, tue, wed, thu, fri, sat or sun"),
                    ));
                }
            }
            for (d, date) in c.holidays.iter().enumerate() {
                if date.parse::<jiff::civil::Date>().is_err() {
                    return Err(invalid(
                        format!("customers[{i}].holidays[{d}]"),
                        format!("`{date}` is not a date: write it like 2026-12-25"),
                    ));
                }
            }
        }
        let mut host_ids = HashSet::with_capacity(self.hosts.len());
        for (i, h) in self.hosts.iter().enumerate() {
            let field = |name: &str| format!("hosts[{i}].{name}");
            check_host(h).map_err(|(name, message)| invalid(field(&name), message))?;
            if !host_ids.insert(h.id.as_str()) {
                return Err(invalid(
                    field("id"),
                    format!("`{}` appears twice; host ids are unique", h.id),
                ));
            }
            for (c, cust) in h.customers.iter().enumerate() {
                if !customer_ids.contains(&**cust) {
                    return Err(invalid(
                        format!("hosts[{i}].customers[{c}]"),
                        format!("`{cust}` is not a customer of this file: add it under customers"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The inventory as store records, moved (a million hosts are never held twice).
    pub fn into_records(self) -> (Vec<pb::HostRecord>, Vec<pb::CustomerRecord>) {
        let hosts = self
            .hosts
            .into_iter()
            .map(|h| pb::HostRecord {
                id: h.id,
                address: h.address.to_string(),
                labels: h.labels.into_iter().collect(),
                customers: strings(&h.customers),
                version: h.version.as_deref().unwrap_or_default().to_string(),
                healthy: h.healthy,
            })
            .collect();
        let customers = self
            .customers
            .into_iter()
            .map(|c| pb::CustomerRecord {
                id: c.id,
                timezone: c.timezone,
                hours: c.hours,
                workdays: c.workdays,
                holidays: c.holidays,
                weight: c.weight,
            })
            .collect();
        (hosts, customers)
    }

    /// The inventory back from store records.
    pub fn from_records(hosts: Vec<pb::HostRecord>, customers: Vec<pb::CustomerRecord>) -> FleetFile {
        FleetFile {
            hosts: hosts
                .into_iter()
                .map(|h| Host {
                    id: h.id,
                    address: intern(&h.address),
                    labels: h.labels.into_iter().collect(),
                    customers: h.customers.iter().map(|c| intern(c)).collect(),
                    version: (!h.version.is_empty()).then(|| intern(&h.version)),
                    healthy: h.healthy,
                })
                .collect(),
            customers: customers
                .into_iter()
                .map(|c| Customer {
                    id: c.id,
                    timezone: c.timezone,
                    hours: c.hours,
                    workdays: c.workdays,
                    holidays: c.holidays,
                    weight: c.weight,
                })
                .collect(),
        }
    }

    /// Writes the file as YAML.
    pub fn to_yaml(&self) -> String {
        // Serialising plain structs of strings cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

/// A host's own fields against the one grammar ([`crate::ident`]): its id, address,
/// label keys, customer ids and version. The error names the field (`id`,
/// `labels.KEY`, ...) and says what is wrong, quoting the value escaped (an address
/// with a password is never quoted). Every way a host enters uses it: fleet files,
/// Ansible import and heartbeats.
pub fn check_host(h: &Host) -> std::result::Result<(), (String, String)> {
    use crate::ident;
    ident::host_id(&h.id).map_err(|e| ("id".to_string(), e.to_string()))?;
    check_address(&h.address).map_err(|e| ("address".to_string(), e))?;
    for (key, _) in h.labels.iter() {
        ident::label_key(key).map_err(|e| (format!("labels.{}", ident::escaped(key)), e.to_string()))?;
    }
    for (i, c) in h.customers.iter().enumerate() {
        ident::customer_id(c).map_err(|e| (format!("customers[{i}]"), e.to_string()))?;
    }
    if let Some(v) = &h.version {
        ident::version(v).map_err(|e| ("version".to_string(), e.to_string()))?;
    }
    Ok(())
}

/// An agent's `host:port` (or `http(s)://host:port`), or an SSH host's
/// `ssh://USER@HOST[:PORT]`. Credentials never go in an address: an `ssh://` address
/// with a password is refused without being echoed.
pub fn check_address(address: &str) -> std::result::Result<(), String> {
    if address.is_empty() {
        return Err("is empty: give the agent's host:port, or ssh://USER@HOST[:PORT]".into());
    }
    if address.starts_with("ssh://") {
        return crate::reach::ssh::config::Target::parse(address).map(drop);
    }
    if address.contains('@') {
        return Err(
            "an agent's address is host:port (or https://host:port); credentials never go in an address, and this one is not shown"
                .into(),
        );
    }
    if address.len() > 300 || address.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("`{}` is not host:port", crate::ident::escaped(address)));
    }
    Ok(())
}

/// The controller's view of the fleet: hosts in a stable order with an index by id,
/// and the customers' business-hours calendar.
#[derive(Debug, Default)]
pub struct Inventory {
    hosts: Vec<Host>,
    /// Host id -> index in `hosts` (foldhash: SipHash was 4% of a resume's CPU).
    by_id: HashMap<String, usize, foldhash::fast::RandomState>,
    customers: HashMap<String, Customer>,
    calendar: Calendar,
}

impl Inventory {
    /// Builds the inventory of a validated fleet file.
    pub fn new(fleet: FleetFile) -> Result<Inventory> {
        let calendar =
            Calendar::new(&fleet.customers).map_err(|message| Error::invalid("inventory", "customers", message))?;
        let mut hosts = fleet.hosts;
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        let by_id = hosts.iter().enumerate().map(|(i, h)| (h.id.clone(), i)).collect();
        let customers = fleet.customers.into_iter().map(|c| (c.id.clone(), c)).collect();
        Ok(Inventory {
            hosts,
            by_id,
            customers,
            calendar,
        })
    }

    /// The inventory with `host` added or replaced (a heartbeat registered it).
    /// Rebuilds the index: registrations are rare next to heartbeats.
    pub fn with_host(&self, host: Host) -> Result<Inventory> {
        let mut hosts: Vec<Host> = self.hosts.iter().filter(|h| h.id != host.id).cloned().collect();
        hosts.push(host);
        Inventory::new(FleetFile {
            customers: self.customers.values().cloned().collect(),
            hosts,
        })
    }

    /// Every customer's working hours.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    pub fn host(&self, id: &str) -> Option<&Host> {
        self.by_id.get(id).map(|&i| &self.hosts[i])
    }

    /// Where host `id` is in [`Inventory::hosts`].
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.get(id)
    }

    pub fn customers(&self) -> impl Iterator<Item = &Customer> {
        self.customers.values()
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hosts matching the selector, by id.
    pub fn select<'a>(&'a self, selector: &'a Selector) -> impl Iterator<Item = &'a Host> + 'a {
        self.hosts.iter().filter(move |h| h.matches(selector))
    }
}

impl serde::Serialize for Inventory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut customers: Vec<&Customer> = self.customers.values().collect();
        customers.sort_by(|a, b| a.id.cmp(&b.id));
        #[derive(Serialize)]
        struct View<'a> {
            customers: Vec<&'a Customer>,
            hosts: &'a [Host],
        }
        View {
            customers,
            hosts: &self.hosts,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = "\
customers:
  - id: contoso
    timezone: Asia/Seoul
    hours: \"09:00-18:00\"
    workdays: [mon, tue, wed, thu, fri]
    holidays: [2026-12-25]
    weight: 5
hosts:
  - id: apac-exo-0001
    address: 10.1.2.3:7070
    labels: {region: apac, service: exchange-routing, ring: \"1\"}
    customers: [contoso]
    version: 15.20.8207.11
  - id: apac-exo-0002
    address: 10.1.2.4:7070
    labels: {region: apac, service: outlook-web}
    healthy: false
";

    #[test]
    fn the_design_example_parses_and_selects() {
        let fleet = FleetFile::parse(FLEET, "f.yaml").unwrap();
        assert!(!fleet.hosts[1].healthy);
        let inv = Inventory::new(fleet).unwrap();
        let sel: Selector = [("service".to_string(), vec!["exchange-routing".to_string()])].into();
        let ids: Vec<_> = inv.select(&sel).map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["apac-exo-0001"]);
    }

    #[test]
    fn bad_fleets_name_the_field() {
        let cases = [
            (FLEET.replace("Asia/Seoul", "Asia/Nowhere"), "customers[0].timezone"),
            (FLEET.replace("09:00-18:00", "9-18"), "customers[0].hours"),
            (FLEET.replace("[mon, tue", "[monday, tue"), "customers[0].workdays[0]"),
            (
                FLEET.replace("customers: [contoso]", "customers: [fabrikam]"),
                "hosts[0].customers[0]",
            ),
            (FLEET.replace("apac-exo-0002", "apac-exo-0001"), "hosts[1].id"),
            (FLEET.replace("2026-12-25", "25/12/2026"), "customers[0].holidays[0]"),
        ];
        for (text, field) in cases {
            // Named at its line and column, the field first.
            match FleetFile::parse(&text, "f.yaml") {
                Err(Error::Syntax { line, message, .. }) => {
                    assert!(
                        line > 0 && message.starts_with(&format!("{field}: ")),
                        "{field}: {message}"
                    )
                }
                other => panic!("{field}: expected a located error, got {other:?}"),
            }
        }
        assert!(matches!(
            FleetFile::parse("hosts: [{id: a, address: x, colour: red}]", "f.yaml"),
            Err(Error::Syntax { .. })
        ));
    }
}
