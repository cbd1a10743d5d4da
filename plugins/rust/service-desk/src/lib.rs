//! The voice service desk's steps (phase 2, supervised narrow
//! interaction), in three components so that each imports only what its
//! grants cover (the code is shared, `desk.rs`; `input.mode` picks the
//! step). This one, `service-desk`, classifies and hands off; the
//! `service-desk-cases` and `service-desk-sms` crates open cases and text:
//!
//! - `classify` (granted `llm.classify` only): the intent and the
//!   sentiment of a post-call webhook's transcript (Retell's shape:
//!   `{"event": "call_analyzed", "call": {call_id, from_number,
//!   to_number, transcript, ...}}`), and the route: `automated` when the
//!   intent's confidence is at least `input.min_confidence` (default 0.6)
//!   and the sentiment is not negative, `human` otherwise.
//! - `open-case` (granted outbound HTTP to the ticketing host): POST the
//!   case to `{ticketing}/api/v2/tickets` (a Zendesk-like JSON body);
//!   the ticket's id.
//! - `reply-sms` (outbound HTTP to the SMS host and the `sms-auth-token`
//!   secret): POST a form-encoded `To`/`From`/`Body` to
//!   `{sms}/2010-04-01/Accounts/{account}/Messages.json` with HTTP Basic
//!   authentication, as Twilio's Messages endpoint takes it.
//! - `handoff` (no grant but logging): fails fatally with why the call
//!   goes to a person; the workflow escalates it to the `service-agent`
//!   role instead of replying automatically.
#[path = "desk.rs"]
mod desk;

use charter_sdk::{StepError, Value};

fn run(input: Value) -> Result<Value, StepError> {
    match input["mode"].as_str() {
        Some("classify") => desk::classify(&input),
        Some("handoff") => Err(StepError::fatal(format!(
            "handed to a person: {} (call {})",
            input["reason"].as_str().unwrap_or("no reason given"),
            input["call_id"].as_str().unwrap_or("?")
        ))),
        other => Err(StepError::fatal(format!("unknown mode {other:?}"))),
    }
}

charter_sdk::step!(run);
