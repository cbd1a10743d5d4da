//! A knowledge corpus ranked by embeddings (`[knowledge.NAME] embeddings =
//! { base_url, model, api_key_secret, timeout_ms }`): the passages are
//! embedded through an OpenAI-compatible `POST {base_url}/embeddings`
//! (`{"model", "input": [..]}` → `{"data": [{"embedding": [..], "index":
//! i}]}`) when the host starts, each query when it is searched, and
//! passages are ranked by cosine similarity to the query (the score, in
//! −1..=1), ties in the corpus's order.
//!
//! **Why cosine alone, not hybrid.** Re-ranking BM25's candidates would
//! never find a passage that shares no word with the question ("time off
//! for new parents" → "parental leave"), which is what an embeddings
//! model is for; fusing the two rankings (reciprocal-rank fusion) gives a
//! score with no meaning a step could hold a threshold against, and the
//! policy assistant's grounding rule needs one. A deployment that wants
//! both declares two corpora over the same directory, one with
//! embeddings, and its step combines them.
//!
//! **Start.** The host does not wait: one thread (its own small runtime)
//! embeds the deployment's embedding corpora in name order, in batches of
//! [`MAX_BATCH`] passages, each request bounded by `timeout_ms`. A search
//! that arrives meanwhile waits for its corpus, within the host-call
//! timeout. If the endpoint is down, slow or answers wrongly, the corpus
//! becomes unavailable (a warning names the corpus, the endpoint and the
//! fix; every search of it returns that error); it does not fall back to
//! BM25, whose scores mean something else (a step's threshold on cosine
//! would silently pass or fail everything). The rest of the host runs.
//!
//! **Bounds.** An answer is read up to [`MAX_RESPONSE`] bytes (and less
//! for fewer inputs); it must hold exactly one finite, non-zero vector per
//! input, each index once, all of one dimension of at most [`MAX_DIM`];
//! all corpora together hold at most [`MAX_VECTOR_FLOATS`] numbers, so a
//! search is at most that many multiply-adds. The API key is sent only as
//! `Authorization: Bearer`, never logged, and cut out of any answer text
//! an error quotes.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_config::KnowledgeEmbeddings;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::knowledge::{Chunk, embedded_text};

/// Most passages sent in one request (what common servers accept).
pub const MAX_BATCH: usize = 32;
/// Largest vector accepted.
pub const MAX_DIM: usize = 4096;
/// Largest answer read for a full batch (a pretty-printed answer spends
/// about 30 bytes a number).
pub const MAX_RESPONSE: usize = 16 << 20;
/// Most numbers held for all of a deployment's embedding corpora (128 MiB).
pub const MAX_VECTOR_FLOATS: usize = 32 << 20;

/// An OpenAI-compatible embeddings endpoint, as the operator declared it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// `{base_url}/embeddings`.
    url: String,
    model: String,
    key: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Endpoint {
    pub fn new(c: &KnowledgeEmbeddings, key: Option<String>) -> Endpoint {
        Endpoint {
            url: format!("{}/embeddings", c.base_url.trim_end_matches('/')),
            model: c.model.clone(),
            key: key.filter(|k| !k.is_empty()),
            timeout: Duration::from_millis(c.timeout_ms),
        }
    }

    #[cfg(test)]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One unit-length vector per input, in the inputs' order, each of
    /// `dim` numbers when given; the request bounded by `timeout` (and
    /// the endpoint's own `timeout_ms`).
    pub async fn embed(
        &self,
        inputs: &[String],
        dim: Option<usize>,
        timeout: Duration,
    ) -> Result<Vec<Vec<f32>>, String> {
        let body = json!({"model": self.model, "input": inputs, "encoding_format": "float"});
        let auth = self.key.as_ref().map(|k| format!("Bearer {k}"));
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let max = (inputs.len() * MAX_DIM * 40 + (64 << 10)).min(MAX_RESPONSE);
        let answer = crate::fetch::send(
            http::Method::POST,
            &self.url,
            &headers,
            bytes::Bytes::from(body.to_string()),
            timeout.min(self.timeout),
            max,
        )
        .await
        .map_err(|e| {
            format!(
                "{} (timeout {} ms)",
                self.hide_key(&e),
                timeout.min(self.timeout).as_millis()
            )
        })?;
        if !answer.status.is_success() {
            let said = String::from_utf8_lossy(&answer.body);
            let said: String = self
                .hide_key(&said)
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            return Err(format!("answered {}: {said}", answer.status));
        }
        vectors_of(&answer.body, inputs.len(), dim)
    }

    /// `text` with the API key cut out (an endpoint may echo it).
    fn hide_key(&self, text: &str) -> String {
        match &self.key {
            Some(k) => text.replace(k.as_str(), "<redacted>"),
            None => text.to_string(),
        }
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct Item {
    embedding: Vec<f32>,
    index: Option<usize>,
}

/// The `n` vectors of an answer, unit length, in input order: exactly one
/// per input (by `index` when given, each once), finite, non-zero, all of
/// one dimension (`dim` when given), at most [`MAX_DIM`].
pub(crate) fn vectors_of(
    body: &[u8],
    n: usize,
    dim: Option<usize>,
) -> Result<Vec<Vec<f32>>, String> {
    let a: Answer = serde_json::from_slice(body).map_err(|e| {
        format!("the answer is not an embeddings list ({{\"data\": [{{\"embedding\": [..], \"index\": i}}]}}): {e}")
    })?;
    if a.data.len() != n {
        return Err(format!(
            "answered {} embeddings for {n} inputs",
            a.data.len()
        ));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
    let dim = dim.or_else(|| a.data.first().map(|i| i.embedding.len()));
    for (pos, item) in a.data.into_iter().enumerate() {
        let i = item.index.unwrap_or(pos);
        let slot = out
            .get_mut(i)
            .ok_or_else(|| format!("answered index {i} for {n} inputs"))?;
        if slot.is_some() {
            return Err(format!("answered index {i} twice"));
        }
        let v = item.embedding;
        if v.is_empty() || v.len() > MAX_DIM {
            return Err(format!(
                "answered a vector of {} numbers (1 to {MAX_DIM} accepted)",
                v.len()
            ));
        }
        if Some(v.len()) != dim {
            return Err(format!(
                "answered a vector of {} numbers where the others have {}",
                v.len(),
                dim.unwrap_or_default()
            ));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(format!(
                "answered a vector (index {i}) holding a non-finite number"
            ));
        }
        let norm = v
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err(format!("answered a vector (index {i}) of zero length"));
        }
        *slot = Some(v.iter().map(|&x| (f64::from(x) / norm) as f32).collect());
    }
    Ok(out.into_iter().map(|v| v.unwrap_or_default()).collect())
}

/// A corpus's passages with their unit vectors (one flat array).
pub(crate) struct Vectors {
    pub chunks: Vec<Chunk>,
    pub dim: usize,
    data: Vec<f32>,
}

impl Vectors {
    /// The `k` passages most similar to the unit vector `q`, best first
    /// (cosine), ties in the corpus's order.
    pub fn rank(&self, q: &[f32], k: usize) -> Vec<(Chunk, f32)> {
        if k == 0 || q.len() != self.dim || self.dim == 0 {
            return vec![];
        }
        let mut scores: Vec<(u32, f32)> = self
            .data
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(i, v)| (i as u32, v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>()))
            .collect();
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if scores.len() > k {
            scores.select_nth_unstable_by(k - 1, order);
            scores.truncate(k);
        }
        scores.sort_by(order);
        scores
            .into_iter()
            .filter_map(|(i, s)| Some((self.chunks.get(i as usize)?.clone(), s)))
            .collect()
    }
}

/// Where a corpus's embedding stands.
#[derive(Clone)]
pub(crate) enum State {
    /// Being embedded: `done` of `total` passages.
    Embedding {
        done: usize,
        total: usize,
    },
    Ready(Arc<Vectors>),
    /// Unavailable, and why (endpoint and fix included).
    Failed(String),
}

/// A corpus ranked by embeddings: its endpoint and where its embedding
/// stands.
pub(crate) struct Dense {
    pub endpoint: Endpoint,
    pub state: watch::Receiver<State>,
}

/// One corpus to embed at start.
pub(crate) struct Job {
    pub name: String,
    pub chunks: Vec<Chunk>,
    pub endpoint: Endpoint,
    pub tx: watch::Sender<State>,
}

/// A [`Dense`] corpus and the job that embeds it.
pub(crate) fn pending(name: &str, chunks: Vec<Chunk>, endpoint: Endpoint) -> (Dense, Job) {
    let (tx, rx) = watch::channel(State::Embedding {
        done: 0,
        total: chunks.len(),
    });
    let dense = Dense {
        endpoint: endpoint.clone(),
        state: rx,
    };
    let job = Job {
        name: name.to_string(),
        chunks,
        endpoint,
        tx,
    };
    (dense, job)
}

/// Embed `jobs` in order on a thread of their own (the host's start does
/// not wait), all together within [`MAX_VECTOR_FLOATS`].
pub(crate) fn start(jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let run = move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                for j in jobs {
                    fail(&j, &format!("cannot start the embedding runtime: {e}"));
                }
                return;
            }
        };
        let mut budget = MAX_VECTOR_FLOATS;
        for job in jobs {
            match rt.block_on(embed_corpus(&job, budget)) {
                Ok(v) => {
                    budget -= v.data.len();
                    tracing::info!(
                        corpus = %job.name,
                        "knowledge corpus {:?}: {} passages embedded by {} ({} dimensions)",
                        job.name,
                        v.chunks.len(),
                        job.endpoint.url,
                        v.dim
                    );
                    job.tx.send_replace(State::Ready(Arc::new(v)));
                }
                Err(e) => fail(&job, &e),
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("charter-embeddings".into())
        .spawn(run)
    {
        tracing::warn!("knowledge: cannot start the embedding thread: {e}");
    }
}

/// Mark `job`'s corpus unavailable with `why`, and warn the operator
/// (the corpus, the endpoint, the fix).
fn fail(job: &Job, why: &str) {
    let msg = format!(
        "embeddings from {}: {why}; check that the endpoint is up and serves POST /embeddings for model {:?}, then restart the host (or remove `embeddings` from [knowledge.{}] to search it with BM25, offline)",
        job.endpoint.url, job.endpoint.model, job.name
    );
    tracing::warn!(corpus = %job.name, "knowledge corpus {:?} is unavailable: {msg}", job.name);
    job.tx.send_replace(State::Failed(msg));
}

/// Embed one corpus in batches, within `budget` numbers.
async fn embed_corpus(job: &Job, budget: usize) -> Result<Vectors, String> {
    let total = job.chunks.len();
    let mut data: Vec<f32> = Vec::new();
    let mut dim = None;
    for (b, batch) in job.chunks.chunks(MAX_BATCH).enumerate() {
        let texts: Vec<String> = batch.iter().map(embedded_text).collect();
        let vs = job
            .endpoint
            .embed(&texts, dim, job.endpoint.timeout)
            .await
            .map_err(|e| {
                format!(
                    "passages {}..{}: {e}",
                    b * MAX_BATCH,
                    b * MAX_BATCH + batch.len()
                )
            })?;
        let d = vs.first().map_or(0, Vec::len);
        if dim.is_none() {
            if total.saturating_mul(d) > budget {
                return Err(format!(
                    "{total} passages of {d} numbers are over the limit of {MAX_VECTOR_FLOATS} numbers held for all corpora ({budget} left)"
                ));
            }
            data.reserve_exact(total * d);
            dim = Some(d);
        }
        for v in vs {
            data.extend_from_slice(&v);
        }
        job.tx.send_replace(State::Embedding {
            done: b * MAX_BATCH + batch.len(),
            total,
        });
    }
    Ok(Vectors {
        chunks: job.chunks.clone(),
        dim: dim.unwrap_or(0),
        data,
    })
}

/// Search a [`Dense`] corpus: wait for its embedding (within `timeout`),
/// embed the query, rank. An empty query or `k` = 0 sends nothing.
pub(crate) async fn search(
    dense: Arc<Dense>,
    name: String,
    query: String,
    k: usize,
    timeout: Duration,
) -> Result<Value, String> {
    let began = Instant::now();
    if k == 0 || query.trim().is_empty() {
        return Ok(json!([]));
    }
    let mut rx = dense.state.clone();
    let waited = tokio::time::timeout(
        timeout,
        rx.wait_for(|s| !matches!(s, State::Embedding { .. })),
    )
    .await
    .map(|r| r.map(|s| s.clone()));
    let state = match waited {
        Ok(Ok(s)) => s,
        // The embedding thread is gone without a word.
        Ok(Err(_)) => State::Failed("the embedding thread ended".into()),
        Err(_) => rx.borrow().clone(),
    };
    let vectors = match state {
        State::Ready(v) => v,
        State::Failed(e) => {
            return Err(format!("knowledge corpus {name:?} is unavailable: {e}"));
        }
        State::Embedding { done, total } => {
            return Err(format!(
                "knowledge corpus {name:?} is still being embedded ({done} of {total} passages); try again shortly"
            ));
        }
    };
    let left = timeout
        .saturating_sub(began.elapsed())
        .max(Duration::from_millis(1));
    let q = dense
        .endpoint
        .embed(&[query], Some(vectors.dim), left)
        .await
        .map_err(|e| {
            format!(
                "knowledge corpus {name:?}: embedding the query with {}: {e}",
                dense.endpoint.url
            )
        })?;
    let hits = vectors.rank(q.first().map(Vec::as_slice).unwrap_or_default(), k);
    Ok(Value::Array(
        hits.into_iter()
            .map(|(p, score)| json!({"source": &*p.source, "text": p.text, "score": score}))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: usize) -> Chunk {
        Chunk {
            source: format!("f{i}.md").into(),
            text: format!("text {i}"),
        }
    }

    #[test]
    fn an_answer_is_checked_and_normalised() {
        let body =
            br#"{"data": [{"embedding": [0, 3], "index": 1}, {"embedding": [4, 0], "index": 0}]}"#;
        let v = vectors_of(body, 2, None).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        // No index: the answer's order.
        let v = vectors_of(br#"{"data": [{"embedding": [2]}]}"#, 1, Some(1)).unwrap();
        assert_eq!(v, vec![vec![1.0]]);
    }

    /// SECURITY: an endpoint's wrong answers are refused, each with a
    /// message saying what was wrong: counts, indexes, dimensions,
    /// non-finite numbers, zero vectors, not JSON.
    #[test]
    fn a_wrong_answer_is_refused() {
        let cases: &[(&[u8], usize, Option<usize>, &str)] = &[
            (
                br#"{"data": [{"embedding": [1]}]}"#,
                2,
                None,
                "1 embeddings for 2 inputs",
            ),
            (
                br#"{"data": [{"embedding": [1], "index": 5}]}"#,
                1,
                None,
                "index 5",
            ),
            (
                br#"{"data": [{"embedding": [1], "index": 0}, {"embedding": [1], "index": 0}]}"#,
                2,
                None,
                "twice",
            ),
            (
                br#"{"data": [{"embedding": [1, 2]}, {"embedding": [1]}]}"#,
                2,
                None,
                "where the others have 2",
            ),
            (
                br#"{"data": [{"embedding": [1, 2]}]}"#,
                1,
                Some(3),
                "where the others have 3",
            ),
            (br#"{"data": [{"embedding": []}]}"#, 1, None, "1 to 4096"),
            // Out of f32's range, or Python's `NaN` (not JSON): refused
            // as unreadable (a non-finite number is checked for as well).
            (
                br#"{"data": [{"embedding": [1e39]}]}"#,
                1,
                None,
                "out of range",
            ),
            (
                br#"{"data": [{"embedding": [NaN, 1]}]}"#,
                1,
                None,
                "not an embeddings list",
            ),
            (
                br#"{"data": [{"embedding": [-Infinity]}]}"#,
                1,
                None,
                "not an embeddings list",
            ),
            (
                br#"{"data": [{"embedding": [0, 0]}]}"#,
                1,
                None,
                "zero length",
            ),
            (
                br#"{"data": [{"embedding": [1, "x"]}]}"#,
                1,
                None,
                "not an embeddings list",
            ),
            (b"<html>", 1, None, "not an embeddings list"),
        ];
        for (body, n, dim, says) in cases {
            let err = vectors_of(body, *n, *dim).unwrap_err();
            assert!(
                err.contains(says),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        let big = format!(
            "{{\"data\": [{{\"embedding\": [{}1]}}]}}",
            "1,".repeat(MAX_DIM)
        );
        assert!(
            vectors_of(big.as_bytes(), 1, None)
                .unwrap_err()
                .contains("1 to 4096")
        );
    }

    #[test]
    fn ranking_is_by_cosine_with_ties_in_corpus_order() {
        let v = Vectors {
            chunks: (0..4).map(chunk).collect(),
            dim: 2,
            data: vec![0.0, 1.0, 1.0, 0.0, 0.6, 0.8, 1.0, 0.0],
        };
        let got: Vec<(String, f32)> = v
            .rank(&[1.0, 0.0], 3)
            .into_iter()
            .map(|(c, s)| (c.source.to_string(), s))
            .collect();
        assert_eq!(
            got,
            vec![
                ("f1.md".into(), 1.0),
                ("f3.md".into(), 1.0),
                ("f2.md".into(), 0.6)
            ]
        );
        assert!(v.rank(&[1.0, 0.0], 0).is_empty());
        assert!(v.rank(&[1.0, 0.0, 0.0], 3).is_empty(), "wrong dimension");
        assert_eq!(v.rank(&[0.0, 1.0], 100).len(), 4);
    }

    #[test]
    fn the_key_is_redacted_from_debug_and_errors() {
        let c = KnowledgeEmbeddings {
            base_url: "http://127.0.0.1:9/v1/".into(),
            model: "m".into(),
            api_key_secret: Some("k".into()),
            timeout_ms: 100,
        };
        let e = Endpoint::new(&c, Some("sk-s3cr3t".into()));
        assert_eq!(e.url(), "http://127.0.0.1:9/v1/embeddings");
        assert!(!format!("{e:?}").contains("s3cr3t"));
        assert_eq!(
            e.hide_key("echo: Bearer sk-s3cr3t"),
            "echo: Bearer <redacted>"
        );
    }
}
