//! A host's labels: a few key-value pairs, kept as a sorted vector of interned
//! strings. A `BTreeMap` allocates a node for eleven entries (about 550 bytes) for the
//! usual three labels, and six separate strings repeat the same few values on every
//! host; interned, a million hosts' labels are a million small vectors of pointers
//! into one pool of the distinct keys and values. Written and read as a YAML map.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::intern::intern;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "BTreeMap<String, String>", into = "BTreeMap<String, String>")]
pub struct Labels(Vec<(Arc<str>, Arc<str>)>);

impl Labels {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Sets `key` to `value`, replacing what it held.
    pub fn insert(&mut self, key: String, value: String) {
        match self.0.binary_search_by(|(k, _)| (**k).cmp(key.as_str())) {
            Ok(i) => self.0[i].1 = intern(&value),
            Err(i) => self.0.insert(i, (intern(&key), intern(&value))),
        }
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl FromIterator<(String, String)> for Labels {
    /// The last value of a key repeated wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Labels {
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        Labels::from(map)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Labels {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> = map.iter().map(|(k, v)| (intern(k), intern(v))).collect();
        pairs.shrink_to_fit();
        Labels(pairs)
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Labels {
        pairs.into_iter().collect()
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(labels: Labels) -> BTreeMap<String, String> {
        labels.into_iter().collect()
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter =
        std::iter::Map<std::vec::IntoIter<(Arc<str>, Arc<str>)>, fn((Arc<str>, Arc<str>)) -> (String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().map(|(k, v)| (k.to_string(), v.to_string()))
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = str;

    fn index(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| panic!("no label `{key}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_behave_as_a_sorted_map() {
        let mut labels: Labels = [("service", "owa"), ("region", "apac"), ("region", "emea")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(labels.get("region"), Some("emea"));
        labels.insert("ring".into(), "1".into());
        labels.insert("service".into(), "exr".into());
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["region", "ring", "service"]);
        assert_eq!(&labels["service"], "exr");
        let other: Labels = [("region".to_string(), "emea".to_string())].into();
        assert!(
            std::ptr::eq(labels.get("region").unwrap(), other.get("region").unwrap()),
            "one copy of a value for every host"
        );
        assert_eq!(labels.get("zone"), None);
        let yaml = serde_yaml::to_string(&labels).unwrap();
        assert_eq!(yaml, "region: emea\nring: '1'\nservice: exr\n");
        assert_eq!(serde_yaml::from_str::<Labels>(&yaml).unwrap(), labels);
    }
}
