//! `charter:host/notify` (since `charter:host@0.2.0`): send a message to a
//! channel the deployment declares (`[channels.NAME]`) and the plugin's
//! groups grant by name (`channels = [...]`, as secrets are granted).
//!
//! - A `webhook` channel receives a POST of Slack-compatible JSON
//!   (`{"text": "*subject*\nbody", "idempotency_key": ...}`) with an
//!   `idempotency-key` header: the same key on every attempt and replay of
//!   the call. Redirects are not followed; the answer's body is not read;
//!   the delivery is cut at the host-call timeout. Errors name the channel,
//!   never the URL (a webhook URL is often a credential).
//! - An `inbox` channel keeps the message in the event log: the notify
//!   call's record (channel, subject, body) is the inbox entry.
//!
//! The effect is `write` and leaves the host: the call's decision is on
//! disk before anything is sent, its result right after. The result (the
//! delivery's idempotency key) is journaled and stands in on replay, so a
//! re-run step never notifies twice. Subject and body pass the step's
//! redactor first: a secret the step read does not leave in a message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use charter_config::{Channel, Deployment, PluginSpec};
use serde_json::{Value, json};
use wasmtime::component::LinkerInstance;

use super::{
    Builtin, Capability, Cx, Exec, FnId, Function, HostFunction, Interface, Param, Refusal, arg,
    call_waiting, granted_name, over, shape,
};
use crate::mediator::{Dispatch, GuestResult};
use crate::state::HostState;

/// Longest channel name accepted in a call.
pub const MAX_CHANNEL: usize = 256;
/// Longest subject, in bytes.
pub const MAX_SUBJECT: usize = 1024;
/// Longest body, in bytes.
pub const MAX_BODY: usize = 32 << 10;

pub(super) const INTERFACE: Interface = Interface {
    name: "charter:host/notify",
    since: Some("0.2.0"),
    functions: &[Function {
        replay: true,
        leaves_host: true,
        ..Function::write(
            "send",
            &[
                ("channel", Param::String),
                ("subject", Param::String),
                ("body", Param::String),
            ],
        )
    }],
};

pub(super) const BUILTIN: Builtin = Builtin {
    interface: &INTERFACE,
    build: |dep, _| {
        Ok(Arc::new(Notify {
            channels: dep.channels.clone(),
        }))
    },
};

struct Notify {
    channels: BTreeMap<String, Channel>,
}

impl Capability for Notify {
    fn argument_grants(&self, dep: &Deployment, spec: &PluginSpec) -> Option<BTreeSet<String>> {
        Some(dep.granted_channels(spec))
    }

    fn check(
        &self,
        _: &Function,
        args: &Value,
        granted: Option<&BTreeSet<String>>,
    ) -> Result<(), Refusal> {
        let channel = arg(args, "channel");
        over("channel name", channel.len(), MAX_CHANNEL)?;
        over("subject", arg(args, "subject").len(), MAX_SUBJECT)?;
        over("body", arg(args, "body").len(), MAX_BODY)?;
        granted_name("channel", channel, granted)
    }

    fn link(
        &self,
        inst: &mut LinkerInstance<'_, HostState>,
        id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        inst.func_wrap_async(
            f.name(),
            move |mut store: Cx<'_>, (channel, subject, body): (String, String, String)| {
                Box::new(async move {
                    let args = json!({"channel": channel, "subject": subject, "body": body});
                    let r = call_waiting(&mut store, id, args).await?;
                    Ok((match r {
                        Ok(v) => Ok(shape(v.as_str().map(str::to_string))?),
                        Err(e) => Err(e),
                    },))
                })
            },
        )
    }

    fn execute(&self, args: &Value, x: Exec<'_>) -> Dispatch {
        let m = x.m;
        let name = arg(args, "channel").to_string();
        let key = m.idempotency_key().unwrap_or_else(|| m.current_call_key());
        let Some(channel) = self.channels.get(&name) else {
            return Dispatch::Ready(Err(format!(
                "channel {name:?} is not declared under [channels]"
            )));
        };
        let url = match channel {
            // The call's record in the log is the inbox entry.
            Channel::Inbox => return Dispatch::Wait(Box::pin(async move { Ok(json!(key)) })),
            Channel::Webhook(url) => url.clone(),
        };
        let (subject, body) = (arg(args, "subject"), arg(args, "body"));
        let text = if subject.is_empty() {
            body.to_string()
        } else {
            format!("*{subject}*\n{body}")
        };
        // Redacted whole: a value split across subject and body is caught
        // where the two meet.
        let text = m.redact(&text);
        // Just inside the host-call timeout, so the outcome is recorded
        // before the mediator's own timeout would cut the wait.
        let timeout = m
            .call_timeout()
            .saturating_sub(Duration::from_millis(20))
            .max(Duration::from_millis(1));
        Dispatch::Wait(Box::pin(deliver(name, url, key, text, timeout)))
    }
}

/// POST the message to the webhook; `Ok(key)` on a 2xx answer (its body
/// is not read: only its status counts).
async fn deliver(
    channel: String,
    url: String,
    key: String,
    text: String,
    timeout: Duration,
) -> GuestResult {
    let fail = |what: String| format!("channel {channel:?}: {what}");
    let payload = json!({"text": text, "idempotency_key": key});
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", key.as_str()),
    ];
    let body = bytes::Bytes::from(payload.to_string());
    let answer = crate::fetch::send(http::Method::POST, &url, &headers, body, timeout, 0)
        .await
        .map_err(|e| fail(format!("the webhook: {e}")))?;
    let status = answer.status;
    if status.is_success() {
        Ok(json!(key))
    } else if status.is_redirection() {
        Err(fail(format!(
            "the webhook answered {status}; redirects are not followed"
        )))
    } else {
        Err(fail(format!("the webhook answered {status}")))
    }
}
