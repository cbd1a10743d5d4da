//! LLM providers behind `charter:host/llm`.
//!
//! [`OfflineLlm`] is the default: deterministic, offline, the same answer for
//! the same input, so demos and tests never depend on a network or a model.
//! [`OpenAiLlm`] talks to any OpenAI-compatible chat-completions endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A language-model provider.
pub trait Llm: Send + Sync {
    fn complete(&self, prompt: String) -> BoxFuture<Result<String, String>>;
    /// The label (one of `labels`) that best fits `text`, with a confidence.
    fn classify(
        &self,
        text: String,
        labels: Vec<String>,
    ) -> BoxFuture<Result<(String, f32), String>>;
}

/// Deterministic offline provider: keyword scoring for `classify`, a
/// fixed-form summary for `complete`.
#[derive(Debug, Default, Clone)]
pub struct OfflineLlm;

/// Words that count for a label beyond the label's own words.
const LEXICON: &[(&str, &[&str])] = &[
    (
        "damaged",
        &[
            "broken",
            "cracked",
            "shattered",
            "defective",
            "torn",
            "dented",
            "smashed",
            "damage",
        ],
    ),
    (
        "not-delivered",
        &[
            "never arrived",
            "not arrived",
            "didn't arrive",
            "did not arrive",
            "missing",
            "lost",
            "not received",
            "never received",
            "where is",
        ],
    ),
    (
        "changed-mind",
        &[
            "changed my mind",
            "don't want",
            "do not want",
            "no longer",
            "don't need",
            "not needed",
        ],
    ),
    (
        "fraud-risk",
        &[
            "chargeback",
            "stolen",
            "unauthorized",
            "didn't order",
            "did not order",
            "fraud",
            "hacked",
        ],
    ),
    (
        "positive",
        &["great", "love", "excellent", "thanks", "happy"],
    ),
    (
        "negative",
        &["bad", "terrible", "awful", "angry", "unhappy"],
    ),
];

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl OfflineLlm {
    /// Score each label against `text`; pure and deterministic.
    pub fn score(text: &str, labels: &[String]) -> Result<(String, f32), String> {
        if labels.is_empty() {
            return Err("classify needs at least one label".into());
        }
        let t = text.to_lowercase();
        let mut scores: Vec<(usize, &String)> = labels
            .iter()
            .map(|label| {
                let l = label.to_lowercase();
                let mut s = l
                    .split(['-', '_', ' '])
                    .filter(|w| w.len() > 2 && t.contains(w))
                    .count();
                if let Some((_, words)) = LEXICON.iter().find(|(k, _)| *k == l) {
                    s += words.iter().filter(|w| t.contains(*w)).count();
                }
                (s, label)
            })
            .collect();
        // Stable: highest score, then the earlier label.
        scores.sort_by_key(|s| std::cmp::Reverse(s.0));
        let (best, label) = scores[0];
        let second = scores.get(1).map_or(0, |s| s.0);
        if best == 0 {
            let pick = &labels[(fnv(text) % labels.len() as u64) as usize];
            return Ok((pick.clone(), 0.3));
        }
        let confidence = 0.5 + 0.5 * (best - second) as f32 / (best + 1) as f32;
        Ok((label.clone(), confidence.min(0.99)))
    }
}

impl Llm for OfflineLlm {
    fn complete(&self, prompt: String) -> BoxFuture<Result<String, String>> {
        let words = prompt.split_whitespace().count();
        let text = format!(
            "[offline model] {words} words received (digest {:016x}); configure [llm] provider = \"openai\" for real completions",
            fnv(&prompt)
        );
        Box::pin(async move { Ok(text) })
    }
    fn classify(
        &self,
        text: String,
        labels: Vec<String>,
    ) -> BoxFuture<Result<(String, f32), String>> {
        let r = OfflineLlm::score(&text, &labels);
        Box::pin(async move { r })
    }
}

/// An OpenAI-compatible chat-completions endpoint (`{base_url}/chat/completions`).
#[derive(Clone)]
pub struct OpenAiLlm {
    inner: Arc<OpenAiInner>,
}

struct OpenAiInner {
    base_url: String,
    model: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for OpenAiLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiLlm")
            .field("base_url", &self.inner.base_url)
            .field("model", &self.inner.model)
            .field(
                "api_key",
                &self.inner.api_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl OpenAiLlm {
    pub fn new(base_url: String, model: String, api_key: Option<String>) -> OpenAiLlm {
        OpenAiLlm {
            inner: Arc::new(OpenAiInner {
                base_url: base_url.trim_end_matches('/').to_string(),
                model,
                api_key,
            }),
        }
    }

    async fn chat(inner: Arc<OpenAiInner>, prompt: String) -> Result<String, String> {
        /// Largest provider response read.
        const MAX_RESPONSE_BYTES: usize = 4 << 20;
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        let url = format!("{}/chat/completions", inner.base_url);
        let body = serde_json::json!({
            "model": inner.model,
            "temperature": 0,
            "messages": [{"role": "user", "content": prompt}],
        });
        let mut req = http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", "application/json");
        if let Some(uri) = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.authority().cloned())
        {
            req = req.header("host", uri.as_str());
        }
        if let Some(k) = &inner.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let body = Full::new(Bytes::from(body.to_string()))
            .map_err(|e: std::convert::Infallible| -> wasmtime_wasi_http::Error { match e {} });
        let req = req
            .body(body)
            .map_err(|e| format!("llm: bad request for {url}: {e}"))?;
        let (resp, io) = wasmtime_wasi_http::default_send_request(req, None)
            .await
            .map_err(|e| format!("llm: {url}: {e}"))?;
        let io = tokio::spawn(io);
        let status = resp.status();
        // A provider's answer is read with a bound: a hostile or broken
        // endpoint cannot make the host hold an unbounded body.
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("llm: reading response from {url}: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_RESPONSE_BYTES {
                    io.abort();
                    return Err(format!(
                        "llm: {url}: response over {MAX_RESPONSE_BYTES} bytes; refused"
                    ));
                }
                bytes.extend_from_slice(&data);
            }
        }
        io.abort();
        if !status.is_success() {
            return Err(format!(
                "llm: {url} answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("llm: {url}: response is not JSON: {e}"))?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("llm: {url}: no choices[0].message.content in response"))
    }
}

impl Llm for OpenAiLlm {
    fn complete(&self, prompt: String) -> BoxFuture<Result<String, String>> {
        let inner = self.inner.clone();
        Box::pin(OpenAiLlm::chat(inner, prompt))
    }
    fn classify(
        &self,
        text: String,
        labels: Vec<String>,
    ) -> BoxFuture<Result<(String, f32), String>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if labels.is_empty() {
                return Err("classify needs at least one label".into());
            }
            let prompt = format!(
                "Classify the text into exactly one of these labels: {}.\nAnswer with the label only.\n\nText: {text}",
                labels.join(", ")
            );
            let answer = OpenAiLlm::chat(inner, prompt).await?;
            let a = answer.trim().trim_matches(['"', '.', '\'']).to_lowercase();
            if let Some(l) = labels.iter().find(|l| l.to_lowercase() == a) {
                return Ok((l.clone(), 0.9));
            }
            labels
                .iter()
                .find(|l| a.contains(&l.to_lowercase()))
                .map(|l| (l.clone(), 0.6))
                .ok_or_else(|| format!("llm: answer {answer:?} names none of the labels"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["damaged", "not-delivered", "changed-mind", "fraud-risk"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn offline_classify_is_deterministic_and_sensible() {
        let (l, c) = OfflineLlm::score("The vase arrived broken and cracked", &labels()).unwrap();
        assert_eq!(l, "damaged");
        assert!(c > 0.5);
        let (l, _) = OfflineLlm::score("My parcel never arrived", &labels()).unwrap();
        assert_eq!(l, "not-delivered");
        let a = OfflineLlm::score("qwerty", &labels()).unwrap();
        assert_eq!(a, OfflineLlm::score("qwerty", &labels()).unwrap());
        assert_eq!(a.1, 0.3);
        assert!(OfflineLlm::score("x", &[]).is_err());
    }
}
