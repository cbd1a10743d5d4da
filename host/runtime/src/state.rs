//! Per-call store state: the mediator, the memory limiter and the inert WASI
//! context.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::mediator::{LogLevel, Mediator, PluginContext, Services};
use crate::sandbox::limits::MemoryLimiter;

/// Bytes of stdout and of stderr kept per call; more is refused to the guest.
pub const STDIO_CAPACITY: usize = 64 * 1024;

pub struct HostState {
    pub(crate) mediator: Mediator,
    pub(crate) limiter: MemoryLimiter,
    /// Built on the guest's first WASI call: most steps make none, and
    /// the context (random seeds, clocks, two pipes) is a fifth of what a
    /// store costs to set up and drop.
    wasi: Option<InertWasi>,
    table: ResourceTable,
    http: WasiHttpCtx,
}

/// The inert WASI baseline: no preopens, no environment, no arguments, no
/// network; only stdout/stderr, which become tagged log lines.
struct InertWasi {
    ctx: WasiCtx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl InertWasi {
    fn new() -> InertWasi {
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        let ctx = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        InertWasi {
            ctx,
            stdout,
            stderr,
        }
    }
}

impl HostState {
    pub(crate) fn new(
        ctx: Arc<PluginContext>,
        services: Arc<Services>,
        initiator: Option<String>,
    ) -> HostState {
        HostState {
            limiter: MemoryLimiter::new(ctx.limits.memory_bytes),
            mediator: Mediator::new(ctx, services, initiator),
            wasi: None,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
        }
    }

    /// Move what the guest printed into the plugin's tagged log.
    pub(crate) fn drain_stdio(&mut self) {
        let Some(wasi) = &self.wasi else {
            // No WASI call, so nothing printed.
            return;
        };
        for (pipe, source, level) in [
            (&wasi.stdout, "stdout", LogLevel::Info),
            (&wasi.stderr, "stderr", LogLevel::Warn),
        ] {
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let line = self.mediator.redact(line);
                self.mediator.push_log(level, source, line);
            }
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.get_or_insert_with(InertWasi::new).ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.mediator,
        }
    }
}
