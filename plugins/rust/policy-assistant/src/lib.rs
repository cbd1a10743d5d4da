//! Policy assistant (phase 3, analysis only): answers `input.question`
//! from the deployment's policy corpus, grounded and cited.
//!
//! The answer is extractive, with no model: the step searches the
//! `policies` corpus (`charter:host/knowledge`, BM25), keeps the passages
//! that score at least `input.min_score` (default 5.0: a single common
//! word matching is not grounding) and at least 60% of the best one (at
//! most `input.k`, default 3), and answers with their text, each followed
//! by its citation number. `citations` lists every passage the answer used —
//! source (`file.md#Heading`), text and score — and nothing else, so a
//! reader (and the example's test) can check each against the corpus.
//! With no passage kept the answer says the policies do not cover
//! the question, and `grounded` is false.
//!
//! It reads and logs; it has no write grant, and the deployment is phase
//! 3, where none can be granted.
use charter_sdk::{StepError, Value, json, knowledge, log};

mod select;

/// The corpus this step searches (`[knowledge.policies]`).
const CORPUS: &str = "policies";

fn run(input: Value) -> Result<Value, StepError> {
    let question = input["question"]
        .as_str()
        .filter(|q| !q.trim().is_empty())
        .ok_or(StepError::fatal("input.question (a non-empty string) is required"))?;
    let k = input["k"].as_u64().unwrap_or(3).clamp(1, 10) as u32;
    let passages = knowledge::search(CORPUS, question, k)?;
    let min = input["min_score"]
        .as_f64()
        .map_or(select::MIN_SCORE, |m| m as f32);
    let scores: Vec<f32> = passages.iter().map(|p| p.score).collect();
    let used: Vec<&knowledge::Passage> = select::grounding(&scores, min)
        .into_iter()
        .map(|i| &passages[i])
        .collect();
    log::info(&format!(
        "{} passages found, {} cited",
        passages.len(),
        used.len()
    ));
    if used.is_empty() {
        return Ok(json!({
            "question": question,
            "answer": select::NOT_COVERED,
            "grounded": false,
            "citations": [],
        }));
    }
    let answer = select::answer(used.iter().map(|p| p.text.as_str()));
    let citations: Vec<Value> = used
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "n": i + 1,
                "source": p.source,
                "text": p.text,
                "score": (f64::from(p.score) * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    Ok(json!({
        "question": question,
        "answer": answer,
        "grounded": true,
        "citations": citations,
    }))
}

charter_sdk::step!(run);
