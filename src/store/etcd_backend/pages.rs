//! A range read a page at a time ([`super::PAGE`] keys), every page at the first
//! page's revision: one consistent view, as a scan of sled's tree is.

use super::{EtcdBackend, EtcdError, PAGE, Result, pb};

/// The keys of [from, to) and their values, in order or reversed.
pub(super) struct Pages {
    backend: EtcdBackend,
    /// What is left to read: [from, to).
    from: Vec<u8>,
    to: Vec<u8>,
    reverse: bool,
    revision: i64,
    page: std::vec::IntoIter<pb::KeyValue>,
    done: bool,
}

impl Pages {
    pub(super) fn new(backend: EtcdBackend, from: Vec<u8>, to: Vec<u8>, reverse: bool) -> Pages {
        Pages {
            backend,
            from,
            to,
            reverse,
            revision: 0,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    fn next_page(&mut self) -> std::result::Result<(), EtcdError> {
        use pb::range_request::{SortOrder, SortTarget};
        let request = pb::RangeRequest {
            key: self.from.clone(),
            range_end: self.to.clone(),
            limit: PAGE,
            revision: self.revision,
            sort_order: if self.reverse {
                SortOrder::Descend
            } else {
                SortOrder::Ascend
            } as i32,
            sort_target: SortTarget::Key as i32,
            ..Default::default()
        };
        let answer = self.backend.range_of(request)?;
        if self.revision == 0 {
            self.revision = answer.header.map_or(0, |h| h.revision);
        }
        self.done = !answer.more;
        if let Some(last) = answer.kvs.last() {
            if self.reverse {
                self.to = last.key.clone();
            } else {
                self.from = last.key.clone();
                self.from.push(0);
            }
        } else {
            self.done = true;
        }
        self.page = answer.kvs.into_iter();
        Ok(())
    }
}

impl Iterator for Pages {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(kv) = self.page.next() {
                let key = kv.key[self.backend.inner.prefix.len()..].to_vec();
                return Some(Ok((key, kv.value)));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.next_page() {
                self.done = true;
                return Some(Err(e.into()));
            }
        }
    }
}
