//! Resource limits of one call (enforcement point 4) that live in the
//! store: the memory cap over all of an instance's memories. The epoch
//! deadline is the engine's (`engine.rs`), the host-call cap and the
//! host-side timeouts the mediator's, the input/output bounds `record.rs`'s.

use wasmtime::ResourceLimiter;

/// Caps the sum of all linear memories of one instance (a component may
/// hold several core instances, each with its own memory).
pub(crate) struct MemoryLimiter {
    limit: u64,
    total: u64,
    pub(crate) refused: Option<(u64, u64)>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit,
            total: 0,
            refused: None,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        if self.total + grow > self.limit {
            self.refused = Some((self.total, self.total + grow));
            return Ok(false);
        }
        self.total += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
