//! A large fleet file parsed in pieces. serde_yaml reads a whole document into events
//! before building anything (3.7 GB for a 182 MB file of a million hosts); a fleet file
//! as `rollout fleet generate` writes it, or as people write it, is two block sequences
//! under `customers:` and `hosts:`, and every line at column 0 starting with `- ` opens
//! an entry (YAML allows nothing else there: an entry's content and a scalar's
//! continuation lines are indented). So the host list is parsed a slice of entries at a
//! time, and only one slice's events are in memory at once.
//!
//! Anything else at column 0 (another key, a flow sequence, a document marker after the
//! start), or a slice that does not parse on its own (an alias to an anchor in another
//! slice), gives None: the caller parses the whole document, as the format defines it,
//! with its exact error messages. The result is the same as the whole parse's.

use super::{Customer, FleetFile, Host};

/// Files smaller than this are parsed whole: the pieces only pay off at scale.
const FROM_BYTES: usize = 16 << 20;
/// Host entries per slice.
const SLICE: usize = 20_000;

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Customers,
    Hosts,
}

/// Byte ranges of the entries of each section.
#[derive(Default)]
struct Layout {
    customers: Vec<usize>,
    hosts: Vec<usize>,
    /// Where each section's text ends.
    customers_end: usize,
    hosts_end: usize,
}

fn layout(text: &str) -> Option<Layout> {
    let mut out = Layout::default();
    let mut section: Option<Section> = None;
    let mut seen = (false, false);
    let mut offset = 0;
    let mut first = true;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let bare = line.trim_end_matches(['\n', '\r']);
        let starts_entry = bare == "-" || bare.starts_with("- ");
        let column0 = !bare.is_empty() && !bare.starts_with([' ', '#']);
        if !column0 {
            if bare.starts_with('\t') {
                return None;
            }
            continue;
        }
        if first && bare == "---" {
            first = false;
            continue;
        }
        first = false;
        let close = |out: &mut Layout, section: Option<Section>| match section {
            Some(Section::Customers) => out.customers_end = at,
            Some(Section::Hosts) => out.hosts_end = at,
            None => {}
        };
        match bare {
            "customers:" if !seen.0 => {
                close(&mut out, section);
                section = Some(Section::Customers);
                seen.0 = true;
            }
            "hosts:" if !seen.1 => {
                close(&mut out, section);
                section = Some(Section::Hosts);
                seen.1 = true;
            }
            _ if starts_entry => match section {
                Some(Section::Customers) => out.customers.push(at),
                Some(Section::Hosts) => out.hosts.push(at),
                None => return None,
            },
            _ => return None,
        }
    }
    match section {
        Some(Section::Customers) => out.customers_end = offset,
        Some(Section::Hosts) => out.hosts_end = offset,
        None => {}
    }
    Some(out)
}

/// The fleet file parsed slice by slice, or None when it must be parsed whole.
pub fn parse(text: &str) -> Option<FleetFile> {
    if text.len() < FROM_BYTES {
        return None;
    }
    let layout = layout(text)?;
    let customers: Vec<Customer> = match layout.customers.first() {
        Some(&start) => serde_yaml::from_str(&text[start..layout.customers_end]).ok()?,
        None => Vec::new(),
    };
    let mut hosts: Vec<Host> = Vec::with_capacity(layout.hosts.len());
    for (i, &start) in layout.hosts.iter().enumerate().step_by(SLICE) {
        let end = layout.hosts.get(i + SLICE).copied().unwrap_or(layout.hosts_end);
        let slice: Vec<Host> = serde_yaml::from_str(&text[start..end]).ok()?;
        hosts.extend(slice);
    }
    Some(FleetFile { customers, hosts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{GenerateOptions, generate};

    fn whole(text: &str) -> FleetFile {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn a_generated_fleet_parses_the_same_in_pieces() {
        // Large enough to be cut into several slices.
        let fleet = generate(&GenerateOptions {
            hosts: 3 * SLICE + 7,
            agent: "127.0.0.1:7070".into(),
            seed: 5,
            unhealthy_rate: 0.1,
        });
        let mut text = fleet.to_yaml();
        while text.len() < FROM_BYTES {
            text.push_str("# padding to reach the size where pieces are used\n");
        }
        let pieces = parse(&text).expect("parsed in pieces");
        assert_eq!(pieces, whole(&text));
        assert_eq!(pieces.hosts.len(), 3 * SLICE + 7);
    }

    #[test]
    fn anything_unusual_is_left_to_the_whole_parse() {
        let pad = |s: &str| format!("{s}{}", " ".repeat(FROM_BYTES));
        let cases = [
            // Another top-level key (the whole parse refuses it with its line).
            "customers: []\nhosts:\n- {id: a, address: 'x:1'}\nextra: 1\n",
            // A flow sequence.
            "hosts: [{id: a, address: 'x:1'}]\n",
            // The same key twice.
            "hosts:\n- {id: a, address: 'x:1'}\nhosts:\n- {id: b, address: 'x:1'}\n",
            // A tab at the start of a line.
            "hosts:\n- id: a\n\taddress: 'x:1'\n",
        ];
        for case in cases {
            assert!(parse(&pad(case)).is_none(), "{case}");
        }
        // An alias to an anchor in another slice does not parse on its own.
        let mut text = String::from("hosts:\n- id: h0\n  address: 'x:1'\n  labels: &l {region: apac}\n");
        for i in 1..=SLICE {
            text.push_str(&format!("- id: h{i}\n  address: 'x:1'\n  labels: *l\n"));
        }
        assert!(parse(&pad(&text)).is_none());
        // Small files are parsed whole.
        assert!(parse("hosts:\n- {id: a, address: 'x:1'}\n").is_none());
    }
}
