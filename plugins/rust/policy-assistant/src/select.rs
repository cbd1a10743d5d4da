//! Which passages ground an answer: shared by the policy assistant's step
//! and its MCP tool, so both cite the same passages for one question.

/// The indexes of the passages (scores best first) an answer may use:
/// those scoring at least `min` (a single common word matching is not
/// grounding) and at least 60% of the best one.
pub fn grounding(scores: &[f32], min: f32) -> Vec<usize> {
    let best = scores.first().copied().unwrap_or(0.0);
    scores
        .iter()
        .enumerate()
        .filter(|(_, s)| **s >= min && **s >= best * 0.6)
        .map(|(i, _)| i)
        .collect()
}

/// The default `min` score.
pub const MIN_SCORE: f32 = 5.0;

/// What an answer says when no passage grounds it.
pub const NOT_COVERED: &str =
    "The policies in this corpus do not cover this question; ask the policy owner.";

/// The answer's text: each grounding passage followed by its citation
/// number (`text [1] text [2]`), in order.
pub fn answer<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| format!("{t} [{}]", i + 1))
        .collect::<Vec<_>>()
        .join(" ")
}
