//! A step built against `wit/host@0.2.0` alone: it imports every function
//! of that version (so loading it proves the host's bindings of 0.2.0 match
//! the WIT), and calls the one `op` names in its input (plain text, no
//! JSON library: `op` or `op:arg`).

wit_bindgen::generate!({
    path: [
        "../../../wit/host@0.1.0",
        "../../../wit/host@0.2.0",
        "../../../wit/plugin@0.1.0",
    ],
    inline: "package fx:host-v2;
        world step-v2 {
            include charter:plugin/step@0.1.0;
            import charter:host/log@0.2.0;
            import charter:host/kv@0.2.0;
            import charter:host/secrets@0.2.0;
            import charter:host/llm@0.2.0;
            import charter:host/explain@0.2.0;
            import charter:host/notify@0.2.0;
        }",
    world: "fx:host-v2/step-v2",
    generate_all,
});

// With two versions of charter:host in the resolve, wit-bindgen names the
// package module by its version.
use charter::host0_2_0::{explain, kv, llm, log, notify, secrets};

struct Step;

fn quote(s: &str) -> String {
    format!("{s:?}")
}

impl Guest for Step {
    fn run(input: String) -> Result<String, StepError> {
        let input = input.trim().trim_matches('"');
        let (op, arg) = input.split_once(':').unwrap_or((input, ""));
        let fail = StepError::Fatal;
        let out = match op {
            "log" => {
                log::write(log::Level::Info, arg);
                "null".to_string()
            }
            "kv-set" => {
                kv::set("k", arg).map_err(fail)?;
                "null".to_string()
            }
            "kv-get" => match kv::get("k").map_err(fail)? {
                Some(v) => quote(&v),
                None => "null".to_string(),
            },
            "kv-delete" => kv::delete("k").map_err(fail)?.to_string(),
            "kv-list" => kv::list_keys("").map_err(fail)?.len().to_string(),
            "secret" => secrets::get(arg).map_err(fail)?.len().to_string(),
            "complete" => quote(&llm::complete(arg).map_err(fail)?),
            "classify" => {
                let labels = ["a".to_string(), "b".to_string()];
                quote(&llm::classify(arg, &labels).map_err(fail)?.label)
            }
            "explain" => {
                explain::rationale(arg);
                "null".to_string()
            }
            "notify" => quote(&notify::send(arg, "v2", "from 0.2.0").map_err(fail)?),
            other => return Err(StepError::Fatal(format!("unknown op {other:?}"))),
        };
        Ok(out)
    }
}

export!(Step);
