//! Charter's integration tests: one binary, one module per concern.
//!
//! Guest fixtures are real components built from `plugins/` by
//! `plugins/build.sh` (the test command runs it first).

mod attack;
mod capabilities;
mod capacity;
mod cli;
mod config_live;
mod conformance;
mod console;
mod crash;
mod docs;
mod governance;
mod hostile;
mod hot;
mod http;
mod identity;
mod it_ops;
mod knowledge;
mod load;
mod mcp;
mod nodes;
mod notify;
mod oidc;
mod patterns;
mod pg;
mod policy_attack;
mod policy_depth;
mod redteam;
mod redteam2;
mod redteam3;
mod redteam4;
mod redteam5;
mod security_ops;
mod service;
mod startup;
mod substrate;
mod support;
mod triggers;
mod up;
mod workflow;
