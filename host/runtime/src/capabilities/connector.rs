//! Connector functions: an interface a plugin of the deployment
//! `provides` (`[plugins.NAME] provides = [...]`, with the `effects` its
//! provider declares), imported by another plugin whose groups grant it.
//!
//! Unlike the host's own capabilities its functions are not in the
//! catalog: they are the connector component's exports, typed by its WIT.
//! This module owns everything about them: which imports a plugin routes
//! to which loaded connector ([`routes`], at load), how a granted one is
//! linked (a dynamic trampoline, [`link`], through the importer's
//! pipeline stages: `admit`, bounds, `gate`, `rule`, `hold`,
//! `call_event`, the decision on disk before the connector runs), and the
//! call itself ([`invoke_connector`]: the connector runs in its own store
//! under its own grants, limits and mediator, never past its importer's
//! deadline; its events and the call's result commit together).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use charter_audit::{Decision, Event};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::error::LimitKind;
use crate::inspect::ImportedInterface;
use crate::mediator::{Fault, Gate, Services};
use crate::state::HostState;
use crate::{
    HOST_WAIT_GRACE, LoadError, LoadedPlugin, classify_trap, commit_step, deadline_passed,
    fault_error, mediator, new_store, record, values, workflow,
};

/// The routes (instance as imported, function) that `plugin`'s import
/// `iface` (of interface `bare`, no version) takes to the loaded connector
/// `conn`: every imported function must be exported, with the same
/// parameter names in the same order. Policy decides on the importer's
/// view of the arguments and the connector receives them by position, so
/// an importer could otherwise rename its way past a policy.
pub(crate) fn routes(
    engine: &Engine,
    plugin: &str,
    component: &Component,
    iface: &ImportedInterface,
    bare: &str,
    conn: &LoadedPlugin,
) -> Result<Vec<(String, String)>, LoadError> {
    let link_error = |detail: String| LoadError::Link {
        plugin: plugin.to_string(),
        detail,
    };
    let export = &conn.provides[bare];
    let exported = conn
        .inspection
        .exports
        .iter()
        .find(|e| &e.name == export)
        .map(|e| e.functions.clone())
        .unwrap_or_default();
    let theirs: HashMap<String, Vec<String>> = connector_functions(engine, conn, bare)
        .into_iter()
        .map(|(n, f)| (n, f.params().map(|(p, _)| p.to_string()).collect()))
        .collect();
    let ours = imported_functions(engine, component, &iface.interface);
    let mut out = Vec::new();
    for f in &iface.functions {
        if !exported.contains(f) {
            return Err(link_error(format!(
                "imports {}#{f}, which connector {} does not export",
                iface.interface, conn.name
            )));
        }
        let (mine, exported_params) = (ours.get(f), theirs.get(f));
        if mine != exported_params {
            return Err(link_error(format!(
                "imports {}#{f} with parameters ({}) but connector {} exports it with ({}); build it against the connector's WIT",
                iface.interface,
                mine.map(|p| p.join(", ")).unwrap_or_default(),
                conn.name,
                exported_params.map(|p| p.join(", ")).unwrap_or_default(),
            )));
        }
        out.push((iface.interface.clone(), f.clone()));
    }
    Ok(out)
}

/// A host trampoline for one connector-provided function: the importer's
/// mediator decides on the typed arguments and records the decision (on
/// disk before the effect), then the connector runs under its own grants.
/// (Long: the pipeline's stages written out for dynamic types, in the order
/// they must happen, then the connector's result recorded with its events.)
pub(crate) fn link(
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
                            None => {
                                let r = m.rule(&function, &action, &args);
                                m.quota(&function, r)
                            }
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
                    let result_event =
                        |out: &Result<Vec<wasmtime::component::Val>, String>,
                         _: &crate::mediator::redact::Redactor| {
                            let (ok, summary) = match out {
                                Ok(v) => (true, summarize(v, redactor)),
                                Err(e) => (false, record::text(&redactor.redact(e))),
                            };
                            // A result too large to journal is not recorded (the
                            // step then fails with a limit, below).
                            let result = match out {
                                Ok(v) if journaled => {
                                    Some(redactor.redact_value(&serde_json::Value::Array(
                                        v.iter().map(values::to_json).collect(),
                                    )))
                                    .filter(|r| record::json_size(r) <= record::MAX_RESULT)
                                }
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
                    let out = invoke_connector(
                        &services,
                        &iface,
                        &fname,
                        params,
                        initiator,
                        Some(&importer),
                        None,
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

impl Services {
    /// The loaded connector providing `iface` (no version).
    pub(crate) fn connector(&self, iface: &str) -> Result<Arc<LoadedPlugin>, String> {
        self.connectors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(iface)
            .cloned()
            .ok_or_else(|| format!("no connector is loaded for {iface}"))
    }
}

/// The parameter names of every function `component` imports from
/// `instance` (as imported, with its version).
pub(crate) fn imported_functions(
    engine: &Engine,
    component: &Component,
    instance: &str,
) -> HashMap<String, Vec<String>> {
    use wasmtime::component::types::ComponentItem;
    let mut out = HashMap::new();
    for (name, item) in component.component_type().imports(engine) {
        if name != instance {
            continue;
        }
        if let ComponentItem::ComponentInstance(inst) = item.ty {
            for (fname, f) in inst.exports(engine) {
                if let ComponentItem::ComponentFunc(f) = f.ty {
                    out.insert(
                        fname.to_string(),
                        f.params().map(|(p, _)| p.to_string()).collect(),
                    );
                }
            }
        }
    }
    out
}

/// The functions `conn` exports for the interface `iface` it provides.
pub(crate) fn connector_functions(
    engine: &Engine,
    conn: &LoadedPlugin,
    iface: &str,
) -> Vec<(String, wasmtime::component::types::ComponentFunc)> {
    use wasmtime::component::types::ComponentItem;
    let Some(export) = conn.provides.get(iface) else {
        return vec![];
    };
    let ty = conn.pre.component().component_type();
    let mut out = Vec::new();
    for (name, item) in ty.exports(engine) {
        if name != export {
            continue;
        }
        if let ComponentItem::ComponentInstance(inst) = item.ty {
            for (fname, f) in inst.exports(engine) {
                if let ComponentItem::ComponentFunc(f) = f.ty {
                    out.push((fname.to_string(), f));
                }
            }
        }
    }
    out
}

/// What a connector call inherits from the step that makes it.
pub(crate) struct Importer {
    pub journal: Option<charter_audit::JournalRef>,
    pub deadline: Instant,
    pub redactor: mediator::redact::Redactor,
}

/// Call a connector's export for an importer (the importer's mediator has
/// already decided and recorded the call). The connector runs under its own
/// grants, limits and mediator; its own events commit before this returns.
/// (Long: the connector's whole bounded call — store, deadline, redactor
/// inheritance, instantiation, typed call, fault mapping, commit — in the
/// order it must happen. Eight arguments: who calls — an importer, an
/// agent's approved proposal — each its own optional context.)
#[allow(clippy::too_many_arguments)]
pub(crate) async fn invoke_connector(
    services: &Arc<Services>,
    iface: &str,
    func: &str,
    params: &[wasmtime::component::Val],
    initiator: Option<String>,
    importer: Option<&Importer>,
    // An approved agent proposal's execution: its idempotency prefix.
    approved: Option<&str>,
    // Given the result and the connector's own redaction point (a tool's
    // result leaves through it: `tools::run_tool`).
    result_events: impl FnOnce(
        &Result<Vec<wasmtime::component::Val>, String>,
        &crate::mediator::redact::Redactor,
    ) -> Vec<Event>,
) -> Result<Vec<wasmtime::component::Val>, String> {
    let conn = services.connector(iface)?;
    let started = Instant::now();
    let mut store = new_store(services, &conn.ctx, initiator);
    store.data_mut().mediator.approved_calls = approved.map(str::to_string);
    let parent = importer.and_then(|i| i.journal.clone());
    if let Some(i) = importer {
        let m = &mut store.data_mut().mediator;
        // The connector works inside its importer's step: never past the
        // importer's deadline, and never recording a secret the importer
        // read (and may have handed it as an argument).
        m.deadline = m.deadline.min(i.deadline);
        m.inherit_redactions(&i.redactor);
    }
    if let Some(p) = parent {
        // The connector's own calls are journaled under the importer's call,
        // so its outbound requests carry idempotency keys derived from it.
        store
            .data_mut()
            .mediator
            .set_journal(Arc::new(workflow::journal::Journal::empty(
                &p.run,
                &format!("{}#{}", p.step, p.seq),
                p.attempt,
            )));
    }
    let export = conn.provides[iface].clone();
    let deadline = store.data().mediator.deadline;
    let result = async {
        let inst = conn.pre.instantiate_async(&mut store).await?;
        let iidx = inst
            .get_export_index(&mut store, None, &export)
            .ok_or_else(|| {
                wasmtime::Error::msg(format!("{} does not export {export}", conn.name))
            })?;
        let fidx = inst
            .get_export_index(&mut store, Some(&iidx), func)
            .ok_or_else(|| {
                wasmtime::Error::msg(format!("{} does not export {export}#{func}", conn.name))
            })?;
        let f = inst
            .get_func(&mut store, fidx)
            .ok_or_else(|| wasmtime::Error::msg(format!("{export}#{func} is not a function")))?;
        let n = f.ty(&store).results().len();
        let mut results = vec![wasmtime::component::Val::Bool(false); n];
        f.call_async(&mut store, params, &mut results).await?;
        Ok::<_, wasmtime::Error>(results)
    };
    // The connector's host-side waits end at its deadline, like a step's.
    let timed = tokio::time::timeout_at((deadline + HOST_WAIT_GRACE).into(), result).await;
    let result = match timed {
        Ok(r) => r,
        Err(_) => {
            let e = deadline_passed(&mut store, &conn.name);
            Err(wasmtime::Error::msg(e.to_string()))
        }
    };
    let state = store.data_mut();
    state.drain_stdio();
    let late = state.mediator.take_late();
    state.mediator.pending.extend(late);
    let result = match (state.mediator.fault.clone(), result) {
        (Some(fault), _) => Err(fault_error(&conn.name, fault)),
        (None, Err(trap)) => Err(classify_trap(&conn.name, state, &conn.ctx.limits, trap)),
        (None, Ok(v)) => Ok(v),
    };
    // The connector's error reaches its importer (and the importer's
    // record): through the connector's redaction point first.
    let result = result.map_err(|e| {
        let m = &state.mediator;
        e.map_text(|t| m.redact_text(t, record::MAX_TEXT))
            .to_string()
    });
    let outcome = result.as_ref().map(|_| ()).map_err(|e| e.clone());
    let extra = result_events(&result, &state.mediator.redactor());
    commit_step(
        services,
        &mut state.mediator,
        outcome,
        started.elapsed().as_micros() as u64,
        extra,
    )
    .await
    .map_err(|e| format!("event log: {e}"))?;
    result
}
