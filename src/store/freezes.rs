//! Freezes (`fz` ++ id -> `Freeze`): each written in one batch with its audit line
//! and its notification (`freeze.started` when set, `freeze.ended` when it ends),
//! so a crash or a failover loses neither; the request id that set it beside
//! (`rq` "freeze:" ++ request id -> id).

use prost::Message;

use super::backend::{self, Batch};
use super::{REQUESTS, Result, Store, as_u64, decode, key};
use crate::proto::v1 as pb;

const FREEZES: &[u8] = b"fz";

impl Store {
    /// Writes `freeze` (new or ended) with its audit lines and notifications, in one
    /// batch, and remembers the request id that set it; durable when this returns.
    pub async fn put_freeze(
        &self,
        freeze: &pb::Freeze,
        events: &[pb::EventRecord],
        notices: &[pb::Notification],
    ) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(key(FREEZES, &freeze.id.to_be_bytes()), freeze.encode_to_vec());
        if !freeze.request_id.is_empty() {
            batch.put(
                key(REQUESTS, format!("freeze:{}", freeze.request_id).as_bytes()),
                freeze.id.to_be_bytes().to_vec(),
            );
        }
        self.log(&mut batch, events);
        self.outbox(&mut batch, notices);
        self.write(batch, "freezes")?;
        self.flush().await
    }

    /// Every freeze set by people, oldest first.
    pub fn freezes(&self) -> Result<Vec<pb::Freeze>> {
        backend::scan_prefix(self.kv.as_ref(), FREEZES)
            .map(|kv| decode("freezes", &kv?.1))
            .collect()
    }

    /// The freeze a client request set, if any.
    pub fn freeze_for_request(&self, request_id: &str) -> Result<Option<u64>> {
        Ok(self
            .kv
            .get(&key(REQUESTS, format!("freeze:{request_id}").as_bytes()))?
            .as_deref()
            .and_then(as_u64))
    }
}
