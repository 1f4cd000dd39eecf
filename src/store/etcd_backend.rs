//! etcd behind the [`Backend`] seam: every key of the controller under one prefix of
//! an etcd cluster, a batch one etcd transaction (its conditions the transaction's
//! compares), ranges read in pages at one revision, and the fence a leader's writes
//! carry. The store's side only: the election, its leases and the controllers'
//! registry are `crate::cluster`'s, over this backend's connection (etcd's API is
//! `proto/etcd/rpc.proto`, compiled by protox).
//!
//! The store calls its backend from anywhere, runtime threads included, and waits
//! for the answer; so the gRPC client runs on a small runtime of its own and a call
//! is handed to it and waited for on a channel, never `block_on` inside a runtime.
//!
//! etcd's limits are this file's concern: a transaction carries at most
//! [`MAX_OPS`] operations and [`MAX_BYTES`] bytes (etcd's defaults: 128 and 1.5 MiB).
//! A batch without conditions above them is written in parts, in order (the store
//! never relies on such a batch being atomic: its large writes are already cut in
//! batches, and a crash between them is allowed for); a conditional batch above
//! them is refused with an error that says so.

pub mod local;
pub mod members;
mod pages;
mod retry;

use members::Members;
use pages::Pages;
use retry::{Retry, transient};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

use super::backend::{Backend, Batch, Condition, Error, Op, Pairs, Result};
use crate::proto::etcd as pb;
use pb::kv_client::KvClient;

/// Operations per transaction: etcd's default `--max-txn-ops`.
pub const MAX_OPS: usize = 128;
/// Bytes per request: etcd's default `--max-request-bytes` (1.5 MiB), less room for
/// the request's own framing.
pub const MAX_BYTES: usize = 1_536 * 1024 - 16 * 1024;
/// Keys per page of a range (values are up to a few hundred KB each).
const PAGE: i64 = 64;
/// How long one call to etcd may take before it is an error.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why an etcd address was refused, or etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("--store {0:?}: expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")]
    Address(String),
    #[error("etcd: {}", brief(.0))]
    Call(#[from] tonic::Status),
    #[error("etcd at {endpoints} does not answer ({detail}): check --store, and that etcd runs there")]
    Unreachable { endpoints: String, detail: String },
    #[error("etcd at {endpoint}: {source}: check --store (and --etcd-ca, --etcd-cert, --etcd-key)")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "etcd: a conditional batch of {ops} operations and {bytes} bytes is larger than one etcd transaction takes ({MAX_OPS} operations, {MAX_BYTES} bytes)"
    )]
    TooLarge { ops: usize, bytes: usize },
    #[error("etcd: the backend's runtime is gone (the controller is stopping)")]
    Gone,
    #[error("etcd: this controller is no longer the leader (its epoch {epoch} is over): its writes are refused")]
    Fenced { epoch: u64, leader: Option<String> },
}

impl From<EtcdError> for Error {
    fn from(e: EtcdError) -> Error {
        match e {
            EtcdError::Fenced { epoch, leader } => Error::Fenced { epoch, leader },
            e => Error::Storage(Box::new(e)),
        }
    }
}

/// A call's failure in one line: its message and the innermost cause (a refused
/// connection, a name that does not resolve).
pub fn brief(status: &tonic::Status) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut root = None;
    while let Some(e) = cause {
        root = Some(e.to_string());
        cause = e.source();
    }
    match root {
        Some(root) if !status.message().contains(&root) => format!("{}: {root}", status.message()),
        _ => status.message().to_string(),
    }
}

/// Where the store lives in etcd: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAddress {
    pub endpoints: Vec<String>,
    /// Every key of the store starts with this (default `/rollout/`).
    pub prefix: Vec<u8>,
}

impl std::str::FromStr for EtcdAddress {
    type Err = EtcdError;

    fn from_str(s: &str) -> std::result::Result<EtcdAddress, EtcdError> {
        let bad = || EtcdError::Address(s.to_string());
        let rest = s.strip_prefix("etcd://").ok_or_else(bad)?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, prefix)) => (hosts, prefix.trim_end_matches('/')),
            None => (rest, ""),
        };
        let endpoints: Vec<String> = hosts.split(',').map(str::to_string).collect();
        let valid = |e: &String| {
            e.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        };
        if endpoints.is_empty() || !endpoints.iter().all(valid) {
            return Err(bad());
        }
        let prefix = match prefix {
            "" => "/rollout/".to_string(),
            p => format!("/{p}/"),
        };
        Ok(EtcdAddress {
            endpoints,
            prefix: prefix.into_bytes(),
        })
    }
}

/// etcd behind the [`Backend`] seam. Cheap to clone.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: Vec<u8>,
    /// One connection per member; calls go to the current one.
    members: Arc<Members>,
    /// Once leader: the key and revision every write is conditioned on.
    fence: Mutex<Option<Arc<Fence>>>,
    /// The client's own runtime: calls are spawned here and waited for. Taken on drop
    /// and shut down without waiting (dropping a runtime may not block in another).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl EtcdBackend {
    /// Connects to the cluster at `address` (any member; calls go to the others if
    /// one is down) and checks that it answers.
    pub fn connect(address: &EtcdAddress) -> Result<EtcdBackend> {
        EtcdBackend::connect_with(address, None)
    }

    /// The same over TLS (`https://`): etcd's CA, and this controller's certificate
    /// for mutual TLS.
    pub fn connect_with(address: &EtcdAddress, tls: Option<tonic::transport::ClientTlsConfig>) -> Result<EtcdBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(Box::new(e)))?;
        let mut endpoints = Vec::new();
        let scheme = if tls.is_some() { "https" } else { "http" };
        for e in &address.endpoints {
            let failed = |source| EtcdError::Connect {
                endpoint: e.clone(),
                source,
            };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{e}"))
                .map_err(failed)?
                .connect_timeout(CALL_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true);
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(failed)?;
            }
            endpoints.push(endpoint);
        }
        let members = {
            let _entered = runtime.enter();
            Members::connect_lazy(endpoints)
        };
        let backend = EtcdBackend {
            inner: Arc::new(Inner {
                prefix: address.prefix.clone(),
                members: Arc::new(members),
                fence: Mutex::new(None),
                runtime: Some(runtime),
            }),
        };
        // One read of each member in turn until one answers: fail now, with the
        // address, rather than at the first write.
        let mut last = None;
        for _ in 0..backend.inner.members.len() {
            let probe = pb::RangeRequest {
                key: backend.full(b""),
                ..Default::default()
            };
            let (pinned, mut kv) = backend.inner.members.kv();
            match backend.call_once(async move { kv.range(probe).await.map(|_| ()) }) {
                Ok(()) => return Ok(backend),
                Err(EtcdError::Call(status)) => {
                    backend.inner.members.move_on(pinned);
                    last = Some(status);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: address.endpoints.join(","),
            detail: last.map_or_else(|| "no member".into(), |status| brief(&status)),
        }
        .into())
    }

    /// Runs `call` on the client's runtime and waits for it, from any thread; asks
    /// again while etcd says it is busy (see [`transient`]), for [`RETRY_FOR`] at most
    /// and only while this controller's leadership (if any) holds. For reads, and
    /// for writes that may be repeated: [`EtcdBackend::txn`] has its own loop.
    fn call<T, F>(&self, call: impl Fn(KvClient<Channel>) -> F) -> std::result::Result<T, EtcdError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = std::result::Result<T, tonic::Status>> + Send + 'static,
    {
        let mut retry = Retry::new();
        loop {
            let (pinned, kv) = self.inner.members.kv();
            match self.call_once(call(kv)) {
                Err(EtcdError::Call(status)) => {
                    self.inner.members.failed(pinned, &status);
                    if !retry.again(&status, self.deposed()) {
                        return Err(EtcdError::Call(status));
                    }
                }
                done => return done,
            }
        }
    }

    /// A range read (asked again while etcd is busy), blocking.
    pub fn range_of(&self, request: pb::RangeRequest) -> std::result::Result<pb::RangeResponse, EtcdError> {
        self.call(move |mut kv| {
            let request = request.clone();
            async move { Ok(kv.range(request).await?.into_inner()) }
        })
    }

    /// Runs `future` on the client's runtime and waits for it, from any thread.
    fn call_once<T, F>(&self, future: F) -> std::result::Result<T, EtcdError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = std::result::Result<T, tonic::Status>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.inner.runtime.as_ref().ok_or(EtcdError::Gone)?;
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().map_err(|_| EtcdError::Gone)?.map_err(EtcdError::from)
    }

    /// True once this controller led and lost the leadership: nothing is asked again.
    fn deposed(&self) -> bool {
        let fence = self.inner.fence.lock().unwrap_or_else(|p| p.into_inner());
        fence.as_ref().is_some_and(|f| f.lost.is_cancelled())
    }

    /// `key` inside the store's prefix, as etcd knows it.
    pub fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.inner.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    /// The members' connections, for the other services of etcd's API (a lease's
    /// renewals): a task that holds them does not keep the backend alive.
    pub fn members(&self) -> Arc<Members> {
        self.inner.members.clone()
    }

    /// The client's own runtime, for tasks that talk to etcd for as long as the
    /// backend lives (keeping a lease alive); None once it is dropped.
    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.inner.runtime.as_ref().map(tokio::runtime::Runtime::handle)
    }

    /// Runs `call` with the current member's connection on the client's runtime and
    /// awaits it from any runtime; a member that could not answer hands over to the
    /// next (the caller asks again as it sees fit).
    pub async fn on_channel<T, F>(&self, call: impl FnOnce(Channel) -> F) -> std::result::Result<T, EtcdError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = std::result::Result<T, tonic::Status>> + Send + 'static,
    {
        let runtime = self.inner.runtime.as_ref().ok_or(EtcdError::Gone)?;
        let (pinned, channel) = self.inner.members.pinned();
        let answer = runtime.spawn(call(channel)).await.map_err(|_| EtcdError::Gone)?;
        answer.map_err(|status| {
            self.inner.members.failed(pinned, &status);
            EtcdError::from(status)
        })
    }

    /// [`EtcdBackend::on_channel`] with the KV service.
    pub async fn on_kv<T, F>(&self, call: impl FnOnce(KvClient<Channel>) -> F) -> std::result::Result<T, EtcdError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = std::result::Result<T, tonic::Status>> + Send + 'static,
    {
        self.on_channel(|channel| call(members::kv_client(channel))).await
    }

    /// From now on every write of this backend is conditioned on `key` (inside the
    /// prefix) having create revision `epoch`: a leader's writes are fenced by its
    /// leadership key. A write that finds it changed fires `lost` and is refused.
    pub fn fence(&self, key: &[u8], epoch: u64, lost: tokio_util::sync::CancellationToken) {
        let fence = Fence {
            key: self.full(key),
            epoch,
            lost,
        };
        *self.inner.fence.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(fence));
    }

    /// The end of the store's own keys in etcd.
    fn prefix_end(&self) -> Vec<u8> {
        super::backend::prefix_end(&self.inner.prefix).unwrap_or_else(|| vec![0])
    }

    /// One transaction: `compares`, then `ops`; true when the compares held. A
    /// leader's transaction also requires its leadership key to be the one it
    /// created: when it is not, the leadership is lost and the write refused.
    fn txn(&self, mut compare: Vec<pb::Compare>, success: Vec<pb::RequestOp>) -> std::result::Result<bool, EtcdError> {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let fence = self.inner.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut failure = Vec::new();
        if let Some(fence) = &fence {
            let key = fence.key.clone();
            compare.push(pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::CreateRevision(fence.epoch as i64)),
                range_end: Vec::new(),
            });
            // Said when the compares fail: is it the fence?
            failure.push(pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key,
                    ..Default::default()
                })),
            });
        }
        let request = pb::TxnRequest {
            compare,
            success,
            failure,
        };
        // Asked again while etcd is busy; but an attempt that failed so may still have
        // been applied, and then the next one's compares fail: whether this write is
        // there is then read back.
        let mut retry = Retry::new();
        let mut uncertain = false;
        let answer = loop {
            let ((pinned, mut kv), request) = (self.inner.members.kv(), request.clone());
            match self.call_once(async move { Ok(kv.txn(request).await?.into_inner()) }) {
                Err(EtcdError::Call(status)) => {
                    self.inner.members.failed(pinned, &status);
                    if !retry.again(&status, self.deposed()) {
                        return Err(EtcdError::Call(status));
                    }
                    uncertain = true;
                }
                done => break done?,
            }
        };
        if let (false, Some(fence)) = (answer.succeeded, &fence) {
            let leader = answer.responses.into_iter().find_map(|r| match r.response {
                Some(pb::response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            });
            if leader
                .as_ref()
                .is_none_or(|kv| kv.create_revision as u64 != fence.epoch)
            {
                fence.lost.cancel();
                // The key's value is the new leader's advertised URL; named only when
                // it passes the grammar (it goes into a message to the client).
                let leader = leader
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                    .filter(|url| crate::ident::controller_url(url).is_ok());
                return Err(EtcdError::Fenced {
                    epoch: fence.epoch,
                    leader,
                });
            }
        }
        if !answer.succeeded && uncertain {
            return self.written(&request.success);
        }
        Ok(answer.succeeded)
    }

    /// True when every operation of `ops` is what etcd holds now: each put key with
    /// its value, each deleted key absent (a write whose answer was lost landed).
    fn written(&self, ops: &[pb::RequestOp]) -> std::result::Result<bool, EtcdError> {
        use pb::request_op::Request;
        let reads: Vec<pb::RequestOp> = ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestPut(put)) => Some(put.key.clone()),
                Some(Request::RequestDeleteRange(delete)) => Some(delete.key.clone()),
                _ => None,
            })
            .map(|key| pb::RequestOp {
                request: Some(Request::RequestRange(pb::RangeRequest {
                    key,
                    ..Default::default()
                })),
            })
            .collect();
        let request = pb::TxnRequest {
            success: reads,
            ..Default::default()
        };
        let answer = self.call(move |mut kv| {
            let request = request.clone();
            async move { Ok(kv.txn(request).await?.into_inner()) }
        })?;
        let found = answer.responses.into_iter().map(|r| match r.response {
            Some(pb::response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        });
        Ok(ops.iter().zip(found).all(|(op, now)| match &op.request {
            Some(Request::RequestPut(put)) => now.is_some_and(|kv| kv.value == put.value),
            _ => now.is_none(),
        }))
    }
}

/// The condition every write of a leader carries: its leadership key, still the one
/// it created.
struct Fence {
    /// The leadership key, inside the prefix.
    key: Vec<u8>,
    /// Its create revision when this controller took it: the epoch.
    epoch: u64,
    /// Fired when a write found the key changed (or the lease was lost).
    lost: tokio_util::sync::CancellationToken,
}

fn compare(condition: Condition, full: impl Fn(&[u8]) -> Vec<u8>) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    match condition {
        // A key that was never created (or was deleted) has create revision 0.
        Condition::Absent(k) => pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: full(&k),
            target_union: Some(TargetUnion::CreateRevision(0)),
            range_end: Vec::new(),
        },
        Condition::Equals(k, v) => pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: full(&k),
            target_union: Some(TargetUnion::Value(v)),
            range_end: Vec::new(),
        },
    }
}

/// The batch's operations as etcd takes them: one per key (etcd refuses a key
/// written twice in a transaction), the last one of each, in the batch's order.
fn request_ops(ops: Vec<Op>, full: impl Fn(&[u8]) -> Vec<u8>) -> Vec<(usize, pb::RequestOp)> {
    let key = |op: &Op| match op {
        Op::Put(k, _) | Op::Delete(k) => k.clone(),
    };
    let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        last.insert(key(op), i);
    }
    ops.into_iter()
        .enumerate()
        .filter(|(i, op)| last.get(&key(op)) == Some(i))
        .map(|(_, op)| {
            let request = match op {
                Op::Put(k, v) => pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: full(&k),
                    value: v,
                    ..Default::default()
                }),
                Op::Delete(k) => pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: full(&k),
                    ..Default::default()
                }),
            };
            let op = pb::RequestOp { request: Some(request) };
            (prost::Message::encoded_len(&op), op)
        })
        .collect()
}

impl Backend for EtcdBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let request = pb::RangeRequest {
            key: self.full(key),
            ..Default::default()
        };
        let found = self.range_of(request)?.kvs;
        Ok(found.into_iter().next().map(|kv| kv.value))
    }

    fn range(&self, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Pairs {
        let to = end.map_or_else(|| self.prefix_end(), |e| self.full(e));
        Box::new(Pages::new(self.clone(), self.full(start), to, reverse))
    }

    fn commit(&self, batch: Batch) -> Result<bool> {
        let full = |k: &[u8]| self.full(k);
        let conditional = !batch.conditions.is_empty();
        let compares: Vec<pb::Compare> = batch.conditions.into_iter().map(|c| compare(c, full)).collect();
        let ops = request_ops(batch.ops, full);
        let bytes: usize =
            ops.iter().map(|(n, _)| n).sum::<usize>() + compares.iter().map(prost::Message::encoded_len).sum::<usize>();
        if ops.len() <= MAX_OPS && bytes <= MAX_BYTES {
            return Ok(self.txn(compares, ops.into_iter().map(|(_, op)| op).collect())?);
        }
        if conditional {
            return Err(EtcdError::TooLarge { ops: ops.len(), bytes }.into());
        }
        // In parts, in order.
        let mut part = Vec::new();
        let mut part_bytes = 0;
        for (n, op) in ops {
            if !part.is_empty() && (part.len() == MAX_OPS || part_bytes + n > MAX_BYTES) {
                self.txn(Vec::new(), std::mem::take(&mut part))?;
                part_bytes = 0;
            }
            part.push(op);
            part_bytes += n;
        }
        if !part.is_empty() {
            self.txn(Vec::new(), part)?;
        }
        Ok(true)
    }

    /// etcd answers a transaction once a quorum has it on disk: nothing to wait for.
    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn flush_blocking(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
