//! `wasi:http/outgoing-handler` (outbound HTTP): a plugin's requests to the
//! hosts its groups allow (`allow_hosts = [...]`, read from `charter.toml`
//! as this capability's argument grants).
//!
//! Linked whole by wasmtime-wasi-http when a group grants
//! `wasi:http/outgoing-handler.handle` (with `wasi:http/types`), at
//! whatever `wasi:http` version the plugin imports. Every request reaches
//! the mediator through the store's [`WasiHttpHooks`], implemented here:
//! the pipeline's stages (`admit`, this capability's argument check,
//! `gate`, `rule`, `hold`, `call_event`) written out for a streamed body.
//! What policy sees is `method`, `authority` and `path` (never the query);
//! the whole request is recorded by digest and compared on replay. The
//! decision is on disk before the request leaves; responses are not
//! journaled (a replayed step sends again under the same idempotency key).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use charter_audit::{Decision, Event};
use charter_config::{Deployment, PluginSpec};
use serde_json::Value;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use super::{
    Builtin, Capability, Exec, FnId, Function, HostFunction, Interface, Param, Refusal, arg,
    catalog,
};
use crate::error::LimitKind;
use crate::mediator::redact::Redactor;
use crate::mediator::{Dispatch, Fault, Gate, Late, Mediator, Ruling};
use crate::record;
use crate::state::HostState;

pub(super) const INTERFACE: Interface = Interface {
    name: "wasi:http/outgoing-handler",
    since: None,
    functions: &[Function {
        leaves_host: true,
        ..Function::write(
            "handle",
            &[
                ("method", Param::String),
                ("authority", Param::String),
                ("path", Param::String),
            ],
        )
    }],
};

pub(super) const BUILTIN: Builtin = Builtin {
    interface: &INTERFACE,
    build: |_, _| Ok(Arc::new(Http)),
};

struct Http;

impl Capability for Http {
    fn argument_grants(&self, dep: &Deployment, spec: &PluginSpec) -> Option<BTreeSet<String>> {
        Some(dep.allowed_hosts(spec))
    }

    /// Bounds, and the authority exactly as granted (the scheme, which
    /// lets `host` stand for `host:443`, is the hook's to add).
    fn check(
        &self,
        _: &Function,
        args: &Value,
        granted: Option<&BTreeSet<String>>,
    ) -> Result<(), Refusal> {
        refusal(args, None, granted)
    }

    fn link_into(
        &self,
        linker: &mut Linker<HostState>,
        _: FnId,
        _: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }

    fn execute(&self, _: &Value, _: Exec<'_>) -> Dispatch {
        // Requests run through the hooks below, never through `dispatch`;
        // an approved request is sent by re-running its step (its body is
        // not stored with the proposal).
        Dispatch::Ready(Err(
            "an outbound request is sent only from its step: re-run the step (or its workflow run) to send it"
                .into(),
        ))
    }
}

/// The catalog's `wasi:http/outgoing-handler#handle`.
fn handle() -> FnId {
    static ID: OnceLock<FnId> = OnceLock::new();
    *ID.get_or_init(|| {
        catalog()
            .lookup(INTERFACE.name, "handle")
            .expect("the http capability is in the catalog")
    })
}

/// Why a request (`args`: method, authority, path) is refused before it is
/// decided: over the recorded-arguments bound, or to a host the grant's
/// `allow_hosts` does not name. With `scheme_port`, `host` alone in the
/// allow-list also stands for `host:PORT` and the other way round.
fn refusal(
    args: &Value,
    scheme_port: Option<u16>,
    granted: Option<&BTreeSet<String>>,
) -> Result<(), Refusal> {
    if record::json_size(args) > record::MAX_RECORDED_ARGS {
        return Err(Refusal::Oversize(format!(
            "the request's method, authority and path are over {} bytes",
            record::MAX_RECORDED_ARGS
        )));
    }
    let authority = arg(args, "authority");
    let none = BTreeSet::new();
    let hosts = granted.unwrap_or(&none);
    let allowed = hosts.contains(authority)
        || scheme_port.is_some_and(|port| {
            (!authority.contains(':') && hosts.contains(&format!("{authority}:{port}")))
                || authority
                    .strip_suffix(&format!(":{port}"))
                    .is_some_and(|h| hosts.contains(h))
        });
    if allowed {
        return Ok(());
    }
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    Err(Refusal::Ungranted(format!(
        "host {authority:?} is not in the grant's allow_hosts [{}]",
        hosts.join(", ")
    )))
}

/// Bytes of request bodies a step's requests hold right now (the step's
/// state, see [`Mediator::step_state`]).
#[derive(Default)]
struct HeldBytes(Arc<std::sync::atomic::AtomicU64>);

/// What `send_request` answers: the response and the future that drives
/// its body.
type Sent = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
)>;

/// Outbound `wasi:http` passes here: counted, checked against the grant's
/// host allow-list, decided, recorded, bounded by the host-side timeout.
/// The decision is taken now, on the step's mediator ([`Mediator::outbound`]);
/// the body is read, checked and sent later ([`Outbound::send`]).
impl WasiHttpHooks for Mediator {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        match self.outbound(request, options) {
            Some(o) => {
                let span = o.s.span.clone();
                Box::new(tracing::Instrument::instrument(o.send(), span))
            }
            None => Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) }),
        }
    }
}

/// A decided request on its way out: everything its asynchronous part
/// needs, taken from the step's mediator before `send_request` returns.
struct Outbound {
    request: http::Request<WasiBody>,
    /// The `call` to record before the request leaves (its request digest
    /// is filled in once the body is read).
    decided: Event,
    /// A proposed request: its events (recorded instead of sending, with
    /// the whole request's digest) and the fault that suspends the step.
    proposed: Option<(Vec<Event>, Fault)>,
    s: Sending,
}

/// What sending a request reads and reports to.
struct Sending {
    options: wasmtime_wasi_http::RequestOptions,
    func: &'static str,
    call_id: String,
    /// What this position's earlier attempt sent, if any.
    recorded: Option<String>,
    position: u64,
    log: charter_audit::AnyLog,
    late: Arc<std::sync::Mutex<Late>>,
    journaled: bool,
    plugin: String,
    step: String,
    held: Held,
    deadline: tokio::time::Instant,
    at_deadline: String,
    redactor: Redactor,
    span: tracing::Span,
}

impl Mediator {
    /// The pipeline's stages before a request's body is read: admitted,
    /// within the grant's hosts, gated and ruled. `None`: refused (recorded
    /// as the stage that refused it records), or denied and held.
    fn outbound(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
    ) -> Option<Outbound> {
        let f = catalog().get(handle());
        let func = f.display();
        let (authority, args, ruling) = self.rule_request(&request, f)?;
        // What this position's earlier attempt sent, if any: the whole
        // request must be the same, or it is not sent (checked once the
        // body is complete, in `send`).
        let position = self.next_position();
        let recorded = self
            .journal
            .as_ref()
            .and_then(|j| j.request_digest(position));
        let call_id = self.next_call_id();
        let mut request = request;
        if let Some(key) = self.idempotency_key()
            && let Ok(v) = http::HeaderValue::from_str(&key)
        {
            request.headers_mut().insert("idempotency-key", v);
        }
        if ruling.decision == Decision::Deny {
            self.hold(&call_id, func, &args, &ruling);
            return None;
        }
        // A proposed request is recorded once its body is complete, with the
        // digest of the whole request: approval binds to all of it, and the
        // approved re-run sends only the same request (checked in `send`).
        let proposed = (ruling.decision == Decision::Propose)
            .then(|| self.proposal(&call_id, func, &args, &ruling));
        if let Some((_, fault)) = &proposed {
            // The step is suspended now: its next call gets nothing more.
            if let Fault::Proposed { id, .. } = fault {
                self.late()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unrecorded = Some(id.clone());
            }
            self.fault.get_or_insert(fault.clone());
        }
        tracing::debug!(plugin = %self.ctx.name, authority = %self.redact(&authority), "outbound http");
        let t = self.call_timeout();
        let mut options = options.unwrap_or_default();
        options.connect_timeout = Some(options.connect_timeout.map_or(t, |c| c.min(t)));
        options.first_byte_timeout = Some(options.first_byte_timeout.map_or(t, |c| c.min(t)));
        options.between_bytes_timeout = Some(options.between_bytes_timeout.map_or(t, |c| c.min(t)));
        Some(Outbound {
            request,
            // An outbound request is an effect outside the host: its
            // decision is on disk before the request leaves.
            decided: self.call_event(&call_id, func, &args, &ruling),
            proposed,
            s: Sending {
                options,
                func,
                call_id,
                recorded,
                position,
                log: self.services.log.clone(),
                late: self.late(),
                journaled: self.journal.is_some(),
                plugin: self.ctx.name.clone(),
                step: self.step_name().to_string(),
                // The body is held on the step's behalf until it is sent: every
                // request's bytes count against one share of the budget.
                held: Held {
                    max: self.budget_left(),
                    bytes: self.step_state::<HeldBytes>().0.clone(),
                },
                deadline: tokio::time::Instant::from_std(self.deadline),
                at_deadline: self.deadline_detail("an outbound request was"),
                redactor: self.redactor(),
                span: self.call_span(func),
            },
        })
    }

    /// Count, grant re-check, the allow-list and the ruling of a request:
    /// its lower-cased authority, the arguments policy sees and the
    /// ruling, or `None` when it was refused (and recorded as refused).
    fn rule_request(
        &mut self,
        request: &http::Request<WasiBody>,
        f: &'static HostFunction,
    ) -> Option<(String, Value, Ruling)> {
        let func = f.display();
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        let scheme_port = match request.uri().scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        if let Err(e) = self.admit(func, self.ctx.granted.contains(&handle())) {
            tracing::warn!(plugin = %self.ctx.name, "{}", self.redact(&e.to_string()));
            return None;
        }
        // What policy sees and the record shows. The query is left out (it
        // often carries credentials the step did not read as secrets); the
        // whole request, query included, is compared by its digest.
        let args = serde_json::json!({
            "method": request.method().as_str(),
            "authority": authority,
            "path": request.uri().path(),
        });
        if let Err(refusal) = refusal(
            &args,
            Some(scheme_port),
            self.ctx.grants.get(INTERFACE.name),
        ) {
            match refusal {
                Refusal::Oversize(detail) => self.refuse_oversize(func, &args, detail),
                Refusal::Ungranted(reason) => self.deny_recorded(func, &args, reason),
            };
            return None;
        }
        // HTTP responses are not journaled: on replay the request is sent
        // again with the same idempotency key, and the receiver answers it.
        let ruling = match self.gate(func, &args, false) {
            Err(e) => {
                tracing::warn!(plugin = %self.ctx.name, "{e}");
                return None;
            }
            Ok(Gate::Approved(p)) => self.approved_ruling(f.function_name(), f.action(), &args, &p),
            Ok(_) => {
                let r = self.rule(f.function_name(), f.action(), &args);
                self.quota(f.function_name(), r)
            }
        };
        Some((authority, args, ruling))
    }
}

impl Sending {
    /// A fault for the step, reported once the call returns; the request
    /// fails.
    fn fail(&self, fault: Fault) -> Sent {
        let mut l = self.late.lock().unwrap_or_else(|p| p.into_inner());
        l.fault.get_or_insert(fault);
        Err(wasmtime_wasi_http::Error::HttpRequestDenied)
    }

    fn past_deadline(&self) -> Fault {
        Fault::Limit(LimitKind::Deadline, self.at_deadline.clone())
    }

    /// Send `request`, bounded by the deadline: the answer, and a fault
    /// for the step when the deadline is why it failed.
    async fn transmit(&self, request: http::Request<WasiBody>) -> (Sent, Option<Fault>) {
        use http_body_util::BodyExt;
        let send = wasmtime_wasi_http::default_send_request(request, Some(self.options));
        // The request's own timeouts are cut to the deadline; this ends
        // whatever else could wait (a slow connect, a dribbling header).
        let (sent, fault) = match tokio::time::timeout_at(self.deadline, send).await {
            // A request that failed at the deadline (its own timeouts are
            // cut to it) failed because of it: a limit.
            Ok(Err(e))
                if tokio::time::Instant::now() + Duration::from_millis(5) >= self.deadline =>
            {
                (Err(e), Some(self.past_deadline()))
            }
            Ok(r) => (r, None),
            Err(_) => (
                Err(wasmtime_wasi_http::Error::ConnectionTimeout),
                Some(self.past_deadline()),
            ),
        };
        let sent = sent.map(|(res, io)| {
            (
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            )
        });
        (sent, fault)
    }

    /// In a workflow run the response's status is journaled (the body is
    /// the receiver's to repeat: the request carries an idempotency key).
    fn journal_result(&self, sent: &Sent, took: Duration) {
        if !self.journaled {
            return;
        }
        let (ok, summary, result) = match sent {
            Ok((res, _)) => (
                true,
                format!("HTTP {}", res.status().as_u16()),
                Some(serde_json::json!({"status": res.status().as_u16()})),
            ),
            Err(e) => (
                false,
                record::text(&self.redactor.redact(&format!("{e:?}"))),
                None,
            ),
        };
        let mut l = self.late.lock().unwrap_or_else(|p| p.into_inner());
        l.events.push(Event::CallResult {
            call: self.call_id.clone(),
            plugin: self.plugin.clone(),
            function: self.func.to_string(),
            ok,
            summary,
            duration_us: took.as_micros() as u64,
            proposal: None,
            result,
        });
    }
}

impl Outbound {
    /// Read the body (bounded by the deadline and the step's share), then
    /// record a proposal instead of sending, refuse a request its earlier
    /// attempt did not send, or record the decision and send it.
    async fn send(self) -> Sent {
        use http_body_util::BodyExt;
        let Outbound {
            request,
            mut decided,
            proposed,
            s,
        } = self;
        let (parts, body) = request.into_parts();
        let body = match tokio::time::timeout_at(s.deadline, read_body(body, &s.held)).await {
            Err(_) => return s.fail(s.past_deadline()),
            Ok(Ok(b)) => b,
            Ok(Err(Some(detail))) => {
                return s.fail(Fault::Limit(LimitKind::Recorded, detail));
            }
            Ok(Err(None)) => {
                return Err(wasmtime_wasi_http::Error::HttpRequestBodySize(None));
            }
        };
        // Held until the request is done with (sent or not).
        let _release = s.held.hold(body.len() as u64);
        let digest = request_digest(&parts, &body);
        if let Some((mut events, fault)) = proposed {
            if let Some(Event::Call { request, .. }) = events.first_mut() {
                *request = Some(digest);
            }
            let mut l = s.late.lock().unwrap_or_else(|p| p.into_inner());
            l.events.extend(events);
            l.fault.get_or_insert(fault);
            l.unrecorded = None;
            return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
        }
        if let Some(before) = &s.recorded
            && *before != digest
        {
            let msg = format!(
                "call {} of step {} sent request {}, but this attempt's request is {} (method, URL, headers or body differ under the same idempotency key); not sent",
                s.position,
                s.step,
                &before[..before.len().min(19)],
                &digest[..19]
            );
            tracing::warn!(plugin = %s.plugin, "non-deterministic step: {msg}");
            return s.fail(Fault::NonDeterministic(msg));
        }
        if let Event::Call { request, .. } = &mut decided {
            *request = Some(digest);
        }
        if let Err(e) = s.log.append(vec![decided]).await {
            tracing::error!("event log: {e}; request not sent");
            return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
        }
        let request = http::Request::from_parts(
            parts,
            http_body_util::Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        let started = std::time::Instant::now();
        let (sent, late_fault) = s.transmit(request).await;
        if let Some(f) = late_fault {
            s.late
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fault
                .get_or_insert(f);
        }
        s.journal_result(&sent, started.elapsed());
        sent
    }
}

/// Request bodies a step's requests hold at once, against what is left of
/// its budget: however many requests a guest opens, together they hold at
/// most that.
struct Held {
    bytes: Arc<std::sync::atomic::AtomicU64>,
    max: u64,
}

/// Bytes held until dropped.
struct Hold {
    bytes: Arc<std::sync::atomic::AtomicU64>,
    n: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.bytes
            .fetch_sub(self.n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Held {
    /// Count `n` more bytes held; `false` when that goes over the share.
    fn take(&self, n: u64) -> bool {
        let before = self
            .bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        before + n <= self.max
    }

    /// Keep `n` bytes (counted by `take` while the body was read) held
    /// until the guard drops.
    fn hold(&self, n: u64) -> Hold {
        Hold {
            bytes: self.bytes.clone(),
            n,
        }
    }
}

/// An outgoing request's body, read whole and counted as held (`Err(Some)`
/// over the step's share), `Err(None)` if the guest's body stream failed.
async fn read_body(body: WasiBody, held: &Held) -> Result<bytes::Bytes, Option<String>> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut counted = 0u64;
    let result = loop {
        let Some(frame) = body.frame().await else {
            break Ok(());
        };
        let Ok(frame) = frame else { break Err(None) };
        if let Ok(data) = frame.into_data() {
            counted += data.len() as u64;
            if !held.take(data.len() as u64) {
                break Err(Some(format!(
                    "outgoing request bodies over {} bytes at once (what is left of limits.max_recorded_mib)",
                    held.max
                )));
            }
            buf.extend_from_slice(&data);
        }
    };
    if result.is_err() {
        // Nothing is held for a body that was refused.
        held.bytes
            .fetch_sub(counted, std::sync::atomic::Ordering::Relaxed);
    }
    result.map(|()| buf.freeze())
}

/// `sha256:` of a whole outgoing request: method, URL with query, every
/// header the guest set (sorted; not the host's `idempotency-key` or
/// `host`), and the body. Recorded with the call, compared on replay.
pub(crate) fn request_digest(parts: &http::request::Parts, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(parts.method.as_str().as_bytes());
    h.update(b"\n");
    h.update(parts.uri.to_string().as_bytes());
    h.update(b"\n");
    let mut headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .filter(|(k, _)| *k != "idempotency-key" && *k != http::header::HOST)
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    headers.sort();
    for (k, v) in headers {
        h.update(k.as_bytes());
        h.update(b": ");
        h.update(v);
        h.update(b"\n");
    }
    h.update(b"\n");
    h.update((body.len() as u64).to_le_bytes());
    h.update(body);
    format!("sha256:{}", hex::encode(h.finalize()))
}
