//! `charter:host/log`: structured log lines, tagged with the plugin. A log
//! line is the plugin's own voice, not an audited call (see
//! [`Function::voice`]); its message passes the step's redactor and is cut.

use std::sync::Arc;

use serde_json::{Value, json};
use wasmtime::component::{ComponentType, Lift, LinkerInstance};

use super::{
    Builtin, Capability, Cx, Exec, FnId, Function, HostFunction, Interface, Param, call_voice,
};
use crate::mediator::{Dispatch, LogLevel, MAX_LOG_MESSAGE};
use crate::state::HostState;

pub(super) const INTERFACE: Interface = Interface {
    name: "charter:host/log",
    since: Some("0.1.0"),
    functions: &[Function {
        voice: true,
        ..Function::read(
            "write",
            &[("level", Param::String), ("message", Param::String)],
        )
    }],
};

pub(super) const BUILTIN: Builtin = Builtin {
    interface: &INTERFACE,
    build: |_, _| Ok(Arc::new(Log)),
};

struct Log;

#[derive(ComponentType, Lift, Clone, Copy, Debug)]
#[component(enum)]
#[allow(dead_code, reason = "constructed by lifting from the guest")]
#[repr(u8)]
enum WitLevel {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}

impl From<WitLevel> for LogLevel {
    fn from(l: WitLevel) -> LogLevel {
        match l {
            WitLevel::Trace => LogLevel::Trace,
            WitLevel::Debug => LogLevel::Debug,
            WitLevel::Info => LogLevel::Info,
            WitLevel::Warn => LogLevel::Warn,
            WitLevel::Error => LogLevel::Error,
        }
    }
}

impl Capability for Log {
    fn link(
        &self,
        inst: &mut LinkerInstance<'_, HostState>,
        id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        inst.func_wrap(
            f.name(),
            move |store: Cx<'_>, (level, message): (WitLevel, String)| {
                let level = LogLevel::from(level);
                // JSON arguments only if a policy decides on the line.
                call_voice(
                    store,
                    id,
                    || json!({"level": level, "message": &message}),
                    |x| write(x, level, &message),
                )?
                .map_err(wasmtime::Error::msg)?;
                Ok(())
            },
        )
    }

    fn execute(&self, args: &Value, x: Exec<'_>) -> Dispatch {
        let level = match super::arg(args, "level") {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => LogLevel::Info,
        };
        write(x, level, super::arg(args, "message"))
    }
}

/// An allowed log line: redacted, cut, kept in the step's log.
fn write(x: Exec<'_>, level: LogLevel, message: &str) -> Dispatch {
    let message = x.m.redact_text(message, MAX_LOG_MESSAGE);
    x.m.push_log(level, "log", message);
    Dispatch::Ready(Ok(Value::Null))
}
