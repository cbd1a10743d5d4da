//! Hostile: tries to reach a connector function no group grants.

wit_bindgen::generate!({
    path: ["../../../wit/host@0.1.0", "../../../wit/plugin@0.1.0", "../../../examples/refunds/wit"],
    world: "acme:payments/bot@0.1.0",
    generate_all,
});

use acme::payments::refunds;

struct Void;

impl Guest for Void {
    fn run(_input: String) -> Result<String, StepError> {
        let n = refunds::void_all_refunds().map_err(StepError::Fatal)?;
        Ok(format!("{{\"voided\": {n}}}"))
    }
}

export!(Void);
