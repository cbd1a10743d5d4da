//! The policy assistant as an MCP tool (`acme:policies/assistant`,
//! `ask-policy`): the same extractive, cited answer as the step
//! (`policy-assistant`), from the same passage selection (`select.rs`,
//! shared), returned as a typed record an agent reads as structured
//! content. It only reads: the `policies` corpus through
//! `charter:host/knowledge`.

wit_bindgen::generate!({
    path: ["../../../wit/host@0.3.0", "../../../examples/policy-assistant/wit"],
    world: "acme:policies/tool@0.1.0",
    generate_all,
});

#[path = "../../policy-assistant/src/select.rs"]
mod select;

use charter::host::knowledge;
use exports::acme::policies::assistant::{Answer, Citation, Guest};

/// The corpus it searches (`[knowledge.policies]`).
const CORPUS: &str = "policies";

struct Assistant;

impl Guest for Assistant {
    fn ask_policy(question: String) -> Result<Answer, String> {
        if question.trim().is_empty() {
            return Err("question: a non-empty string is required".into());
        }
        let passages = knowledge::search(CORPUS, &question, 3)?;
        let scores: Vec<f32> = passages.iter().map(|p| p.score).collect();
        let used: Vec<&knowledge::Passage> = select::grounding(&scores, select::MIN_SCORE)
            .into_iter()
            .map(|i| &passages[i])
            .collect();
        if used.is_empty() {
            return Ok(Answer {
                answer: select::NOT_COVERED.to_string(),
                grounded: false,
                citations: vec![],
            });
        }
        let answer = select::answer(used.iter().map(|p| p.text.as_str()));
        let citations = used
            .iter()
            .enumerate()
            .map(|(i, p)| Citation {
                n: (i + 1) as u8,
                source: p.source.clone(),
                text: p.text.clone(),
                score: (p.score * 1000.0).round() / 1000.0,
            })
            .collect();
        Ok(Answer {
            answer,
            grounded: true,
            citations,
        })
    }
}

export!(Assistant);
