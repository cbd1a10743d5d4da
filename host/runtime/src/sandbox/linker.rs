//! Linking by grant (enforcement point 2).
//!
//! Each plugin gets its own [`Linker`] holding exactly: the host functions
//! its groups grant, `wasi:http` if a group grants it, and the inert WASI
//! baseline unless the plugin is `wasi = "none"`. Every host function is a
//! thin closure into [`Mediator::dispatch`], defined by its capability
//! (`capabilities/`) at its served version; nothing else is defined.
//! **Invariant:** no import is ever defined as a trap stub: an import
//! that is not granted stays undefined and the component cannot instantiate.

use std::collections::BTreeSet;

use charter_config::WasiMode;
use wasmtime::Engine;
use wasmtime::component::Linker;

use charter_audit::{Decision, Event};

use crate::capabilities::{FnId, Registry};
use crate::error::LimitKind;
use crate::mediator::{Fault, Gate};
use crate::state::HostState;
use crate::{record, values};

/// What a plugin is linked with. Two plugins with equal grant sets (and
/// equal bytes) share one `InstancePre`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GrantSet {
    pub wasi: WasiMode,
    /// Granted host functions, each at one served version.
    pub host: BTreeSet<FnId>,
    pub http: bool,
    /// Connector-provided functions: (instance as imported, function).
    pub connectors: BTreeSet<(String, String)>,
}

pub(crate) fn build(
    engine: &Engine,
    capabilities: &Registry,
    grants: &GrantSet,
) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    if grants.wasi == WasiMode::Inert {
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    }
    if grants.http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    }
    for f in &grants.host {
        capabilities.link(&mut linker, *f)?;
    }
    for (instance, func) in &grants.connectors {
        define_connector(&mut linker, instance, func)?;
    }
    Ok(linker)
}

/// A host trampoline for one connector-provided function: the importer's
/// mediator decides on the typed arguments and records the decision (on
/// disk before the effect), then the connector runs under its own grants.
fn define_connector(
    linker: &mut Linker<HostState>,
    instance: &str,
    func: &str,
) -> wasmtime::Result<()> {
    let iface = instance.split('@').next().unwrap_or(instance).to_string();
    let display = format!("{instance}#{func}");
    let fname = func.to_string();
    linker
        .instance(instance)?
        .func_new_async(func, move |mut store, ty, params, results| {
            let (iface, display, fname) = (iface.clone(), display.clone(), fname.clone());
            let span = store.data().mediator.call_span(&display);
            Box::new(tracing::Instrument::instrument(
                async move {
                    let names: Vec<String> = ty.params().map(|(n, _)| n.to_string()).collect();
                    let args = values::params_json(&names, params);
                    let action = format!("{iface}.{fname}");
                    let function = charter_config::FunctionName::new(&iface, &fname);
                    let (services, initiator, plugin, call_id, decided, approved, importer) = {
                        let m = &mut store.data_mut().mediator;
                        m.admit(&display, true)?;
                        let size = record::json_size(&args);
                        if size > record::MAX_CALL_ARGS {
                            return Err(m.refuse_oversize(
                                &display,
                                &args,
                                format!(
                                    "arguments are about {size} bytes, over the {}-byte limit",
                                    record::MAX_CALL_ARGS
                                ),
                            ));
                        }
                        let approved = match m.gate(&display, &args, true)? {
                            Gate::Fresh => None,
                            Gate::Approved(p) => Some(p),
                            Gate::Replay(recorded) => {
                                // The journal holds this call's result: hand it
                                // back; the connector does not run again.
                                let vals = recorded.as_array().cloned().unwrap_or_default();
                                for ((slot, ty), v) in
                                    results.iter_mut().zip(ty.results()).zip(&vals)
                                {
                                    *slot = values::from_json(v, &ty).map_err(|e| {
                                        wasmtime::Error::msg(format!(
                                            "{display}: journaled result does not fit: {e}"
                                        ))
                                    })?;
                                }
                                return Ok(());
                            }
                        };
                        let ruling = match &approved {
                            Some(p) => m.approved_ruling(&function, &action, &args, p),
                            None => m.rule(&function, &action, &args),
                        };
                        let call_id = m.next_call_id();
                        if ruling.decision != Decision::Allow {
                            return Err(m.hold(&call_id, &display, &args, &ruling));
                        }
                        let ev = m.call_event(&call_id, &display, &args, &ruling);
                        (
                            m.services.clone(),
                            m.initiator.clone(),
                            m.ctx.name.clone(),
                            call_id,
                            ev,
                            approved,
                            m.importer(),
                        )
                    };
                    let jref = importer.journal.clone();
                    services.log.append(vec![decided]).await.map_err(|e| {
                        wasmtime::Error::msg(format!("event log: {e}; call not executed"))
                    })?;
                    let started = std::time::Instant::now();
                    let journaled = jref.is_some();
                    // The connector's own events and this call's result commit
                    // in one append: its effects and the record of them are on
                    // disk together or not at all.
                    // What the connector returns is recorded through the
                    // importer's redaction point (the connector's own secrets
                    // are its to return: granting a secret trusts the plugin).
                    let redactor = &importer.redactor;
                    let result_event = |out: &Result<Vec<wasmtime::component::Val>, String>| {
                        let (ok, summary) = match out {
                            Ok(v) => (true, summarize(v, redactor)),
                            Err(e) => (false, record::text(&redactor.redact(e))),
                        };
                        // A result too large to journal is not recorded (the
                        // step then fails with a limit, below).
                        let result = match out {
                            Ok(v) if journaled => Some(redactor.redact_value(
                                &serde_json::Value::Array(v.iter().map(values::to_json).collect()),
                            ))
                            .filter(|r| record::json_size(r) <= record::MAX_RESULT),
                            _ => None,
                        };
                        vec![Event::CallResult {
                            call: call_id.clone(),
                            plugin: plugin.clone(),
                            function: display.clone(),
                            ok,
                            summary,
                            duration_us: started.elapsed().as_micros() as u64,
                            proposal: approved.clone(),
                            result,
                        }]
                    };
                    let out = crate::invoke_connector(
                        &services,
                        &iface,
                        &fname,
                        params,
                        initiator,
                        Some(&importer),
                        result_event,
                    )
                    .await;
                    match out {
                        Ok(vals) if journaled && results_size(&vals) > record::MAX_RESULT => {
                            let detail = format!(
                                "{display} returned more than {} bytes, too large to journal",
                                record::MAX_RESULT
                            );
                            let m = &mut store.data_mut().mediator;
                            if m.fault.is_none() {
                                m.fault = Some(Fault::Limit(LimitKind::Recorded, detail.clone()));
                            }
                            Err(wasmtime::Error::msg(detail))
                        }
                        Ok(vals) => {
                            for (slot, v) in results.iter_mut().zip(vals) {
                                *slot = v;
                            }
                            Ok(())
                        }
                        Err(e) => Err(wasmtime::Error::msg(format!(
                            "{display}: connector failed: {e}"
                        ))),
                    }
                },
                span,
            ))
        })
}

fn results_size(vals: &[wasmtime::component::Val]) -> usize {
    record::json_size(&serde_json::Value::Array(
        vals.iter().map(values::to_json).collect(),
    ))
}

/// A short text of a call's results for the audit log: redacted whole,
/// then cut (cutting first could leave part of a value at the cut).
pub(crate) fn summarize(
    vals: &[wasmtime::component::Val],
    redactor: &crate::mediator::redact::Redactor,
) -> String {
    let text = serde_json::Value::Array(vals.iter().map(values::to_json).collect()).to_string();
    record::cut(&redactor.redact(&text), 300)
}
