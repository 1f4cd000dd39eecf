//! `rollout fleet generate`: a realistic fleet for demos, tests and benchmarks.
//!
//! Several regions (three availability zones each: the `zone` label) and services, customers spread over more than fifteen IANA time
//! zones (including half-hour and 45-minute offsets and both hemispheres' DST), a few
//! customers with hundreds of hosts and many with a handful. Deterministic for a seed.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Customer, FleetFile, Host};

/// The version every generated host starts on; the sample fix plan deploys the next build.
pub const BASE_VERSION: &str = "15.20.8207.11";

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub hosts: usize,
    /// The agent address written on every host (the simulator serves them all).
    pub agent: String,
    pub seed: u64,
    /// Share of hosts that start unhealthy (0.0 ..= 1.0).
    pub unhealthy_rate: f64,
}

/// (region, time zone, weekly workdays) of the places customers work in.
const ZONES: &[(&str, &str, &[&str])] = &[
    ("apac", "Asia/Seoul", WEEK),
    ("apac", "Asia/Tokyo", WEEK),
    ("apac", "Asia/Shanghai", WEEK),
    ("apac", "Asia/Singapore", WEEK),
    ("apac", "Asia/Kolkata", WEEK),
    ("apac", "Asia/Kathmandu", WEEK),
    ("apac", "Australia/Sydney", WEEK),
    ("apac", "Australia/Adelaide", WEEK),
    ("apac", "Pacific/Auckland", WEEK),
    ("emea", "Europe/London", WEEK),
    ("emea", "Europe/Berlin", WEEK),
    ("emea", "Europe/Paris", WEEK),
    ("emea", "Europe/Istanbul", WEEK),
    ("emea", "Asia/Riyadh", SUN_THU),
    ("emea", "Asia/Dubai", WEEK),
    ("emea", "Africa/Johannesburg", WEEK),
    ("emea", "Africa/Lagos", WEEK),
    ("amer", "America/New_York", WEEK),
    ("amer", "America/Chicago", WEEK),
    ("amer", "America/Denver", WEEK),
    ("amer", "America/Los_Angeles", WEEK),
    ("amer", "America/St_Johns", WEEK),
    ("amer", "America/Sao_Paulo", WEEK),
    ("amer", "America/Mexico_City", WEEK),
];

const WEEK: &[&str] = &["mon", "tue", "wed", "thu", "fri"];
const SUN_THU: &[&str] = &["sun", "mon", "tue", "wed", "thu"];

/// (service label, short name for host ids, share of hosts in percent).
const SERVICES: &[(&str, &str, u32)] = &[
    ("exchange-routing", "exr", 50),
    ("exchange-mailbox", "mbx", 30),
    ("outlook-web", "owa", 20),
];

const NAMES: &[&str] = &[
    "contoso",
    "fabrikam",
    "northwind",
    "adventure-works",
    "tailspin",
    "wingtip",
    "woodgrove",
    "litware",
    "proseware",
    "fourth-coffee",
    "alpine-ski",
    "blue-yonder",
    "coho-winery",
    "datum",
    "graphic-design",
    "humongous",
    "lucerne",
    "margies-travel",
    "nod-publishers",
    "relecloud",
    "southridge",
    "trey-research",
    "wide-world",
    "consolidated-messenger",
];

const HOURS: &[&str] = &[
    "09:00-18:00",
    "08:00-17:00",
    "09:00-17:30",
    "07:30-16:30",
    "22:00-06:00",
];

/// Builds a fleet file for the options.
pub fn generate(opts: &GenerateOptions) -> FleetFile {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let customer_count = (opts.hosts / 40).clamp(ZONES.len().min(opts.hosts.max(1)), 5_000);
    let mut customers = Vec::with_capacity(customer_count);
    for i in 0..customer_count {
        // Round-robin over zones first so that every zone has customers.
        let (_, tz, days) = ZONES[if i < ZONES.len() {
            i
        } else {
            rng.random_range(0..ZONES.len())
        }];
        let name = NAMES[i % NAMES.len()];
        let city = tz
            .rsplit('/')
            .next()
            .unwrap_or(tz)
            .to_ascii_lowercase()
            .replace('_', "-");
        let hours = if rng.random_bool(0.08) {
            HOURS[4]
        } else {
            HOURS[rng.random_range(0..4)]
        };
        customers.push(Customer {
            id: format!("{name}-{city}-{:03}", i / NAMES.len()),
            timezone: tz.to_string(),
            hours: hours.to_string(),
            workdays: days.iter().map(|d| d.to_string()).collect(),
            holidays: if tz == "Asia/Seoul" {
                vec!["2026-12-25".into()]
            } else {
                Vec::new()
            },
            weight: *[1, 1, 1, 2, 3, 5, 10].get(rng.random_range(0..7)).unwrap_or(&1),
        });
    }
    // Zipf-like sizes: customer k gets weight 1/(k+1); a few have hundreds of hosts.
    let weights: Vec<f64> = (0..customer_count).map(|k| 1.0 / (k as f64 + 1.0)).collect();
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect();
    let total = cumulative.last().copied().unwrap_or(1.0);
    let region_of = |tz: &str| ZONES.iter().find(|z| z.1 == tz).map_or("amer", |z| z.0);
    let mut counters: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut hosts = Vec::with_capacity(opts.hosts);
    for i in 0..opts.hosts {
        // Every customer gets at least one host when there are enough hosts.
        let c = if i < customer_count {
            i
        } else {
            let x = rng.random::<f64>() * total;
            cumulative.partition_point(|&c| c < x).min(customer_count - 1)
        };
        let customer = &customers[c];
        let region = region_of(&customer.timezone);
        let roll = rng.random_range(0..100);
        let mut acc = 0;
        let &(service, short, _) = SERVICES
            .iter()
            .find(|s| {
                acc += s.2;
                roll < acc
            })
            .unwrap_or(&SERVICES[0]);
        let n = counters.entry((region, short)).or_default();
        *n += 1;
        let mut labels = super::Labels::default();
        labels.insert("region".to_string(), region.to_string());
        labels.insert("service".to_string(), service.to_string());
        labels.insert("ring".to_string(), (rng.random_range(0..4u8)).to_string());
        // Three availability zones per region, hosts dealt round-robin (no draw from
        // the generator: every other label stays as it was).
        labels.insert("zone".to_string(), format!("{region}-{}", ["a", "b", "c"][*n % 3]));
        let mut host_customers = vec![customer.id.clone()];
        // A few hosts are shared between two customers (multi-tenant front ends).
        if rng.random_bool(0.05) && customer_count > 1 {
            let other = &customers[rng.random_range(0..customer_count)];
            if other.id != customer.id {
                host_customers.push(other.id.clone());
            }
        }
        hosts.push(Host {
            id: format!("{region}-{short}-{n:06}"),
            address: crate::intern::intern(&opts.agent),
            labels,
            customers: host_customers.iter().map(|c| crate::intern::intern(c)).collect(),
            version: Some(crate::intern::intern(BASE_VERSION)),
            healthy: !rng.random_bool(opts.unhealthy_rate.clamp(0.0, 1.0)),
        });
    }
    FleetFile { customers, hosts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(hosts: usize) -> GenerateOptions {
        GenerateOptions {
            hosts,
            agent: "127.0.0.1:7070".into(),
            seed: 7,
            unhealthy_rate: 0.0,
        }
    }

    #[test]
    fn generated_fleets_are_valid_varied_and_reproducible() {
        let fleet = generate(&opts(10_000));
        fleet.validate("generated").unwrap();
        assert_eq!(fleet.hosts.len(), 10_000);
        assert_eq!(fleet, generate(&opts(10_000)), "same seed, same fleet");
        let zones: std::collections::HashSet<_> = fleet.customers.iter().map(|c| &c.timezone).collect();
        assert!(zones.len() >= 15, "only {} zones", zones.len());
        let mut per_customer: BTreeMap<&str, usize> = BTreeMap::new();
        for h in &fleet.hosts {
            *per_customer.entry(&*h.customers[0]).or_default() += 1;
        }
        let biggest = per_customer.values().max().copied().unwrap_or(0);
        let smallest = per_customer.values().min().copied().unwrap_or(0);
        assert!(biggest >= 100, "largest customer has {biggest} hosts");
        assert!(smallest <= 5, "smallest customer has {smallest} hosts");
    }

    #[test]
    fn tiny_fleets_work() {
        let fleet = generate(&opts(3));
        fleet.validate("generated").unwrap();
        assert_eq!(fleet.hosts.len(), 3);
    }
}
