//! The sandbox: what holds a plugin in before any call reaches the
//! mediator.
//!
//! - `engine.rs`: the one wasmtime engine (pooling allocator, epoch
//!   interruption, the compile cache) and its epoch ticker;
//! - `inspect.rs`: what a component imports and exports, from its type;
//! - `load_check.rs`: enforcement point 1, every import covered by a grant
//!   (at a served version) or the inert WASI baseline;
//! - `linker.rs`: enforcement point 2, a linker holding only what is
//!   granted (each capability links its own functions);
//! - `limits.rs`: enforcement point 4 in the store (the memory cap).
//!
//! Point 3, the call, is `mediator/`. Nothing here depends on the
//! composition root (`lib.rs`); the linker names no capability (each
//! links its own, connectors included, through `capabilities::Registry`).

pub mod engine;
pub mod inspect;
pub(crate) mod limits;
pub(crate) mod linker;
pub mod load_check;
