//! `charter:host/knowledge` (since `charter:host@0.3.0`): search a corpus
//! the deployment declares (`[knowledge.NAME] dir = "..."`) and the
//! plugin's groups grant by name (`knowledge = [...]`, as secrets are
//! granted).
//!
//! A corpus is a directory of Markdown files (`*.md`, any depth), read
//! once when the host starts: each file is cut into passages, one per
//! paragraph under the heading it sits under (a longer paragraph in
//! pieces of at most [`MAX_PASSAGE`] bytes), and the passages are indexed
//! with BM25 (the `bm25` crate's scorer, with our tokenizer: lowercase
//! alphanumeric words, English stop words dropped, Snowball-stemmed). A
//! passage is indexed with its heading's words and returned with its
//! source, `path/in/corpus.md#Heading`.
//!
//! **Confinement.** A corpus's directory must be inside the deployment's
//! directory (the one holding `charter.toml`): `charter-config` refuses
//! an absolute `dir` or one with `..`; here the real paths are compared
//! (after symbolic links), so a link inside the corpus that leads outside
//! it is refused. A `dir` that itself escapes the deployment stops the
//! host's start; anything wrong *inside* a corpus (a link out of it, a
//! FIFO, a hard link, a non-UTF-8 or oversized file, too many passages)
//! makes only that corpus unavailable: a warning naming the corpus, the
//! file and the rule is logged at start, and every search of it returns
//! that error. Reading is bounded: [`MAX_ENTRIES`] directory entries
//! walked, each real directory walked once (a symbolic-link loop is
//! skipped), [`MAX_DEPTH`], [`MAX_FILES`], [`MAX_FILE`] (read with a
//! bound, not trusted from the file's size), [`MAX_CORPUS`]; a file is
//! opened non-blocking and without following links, and must be a
//! regular file with one link. Indexing is bounded too: a heading is cut
//! at [`MAX_HEADING`] bytes, a passage shares its source string with its
//! neighbours, a corpus holds at most [`MAX_PASSAGES`] passages and all
//! corpora together [`MAX_ALL_PASSAGES`].
//!
//! **Calls.** The effect is `read`. A query over [`MAX_QUERY`] bytes is
//! refused (a limit); only its first [`MAX_QUERY_TERMS`] words (after
//! stop words) are searched, each scored from the inverted index, so a
//! search touches at most `MAX_QUERY_TERMS` × passages postings; `k` is
//! capped at [`MAX_K`] and `0` returns no passage. Results are ordered by
//! score, then by their place in the corpus, so a search is
//! deterministic. The result (at most `MAX_K` × ([`MAX_PASSAGE`] +
//! source) bytes, about 48 KiB) is journaled and stands in on replay; it
//! counts against the step's journal-record budget like any other
//! recorded result, so a step cannot journal more than that budget by
//! searching.
//!
//! **Embeddings.** A corpus declared with `embeddings = { base_url,
//! model, api_key_secret, timeout_ms }` is read and cut the same way but
//! ranked by cosine similarity through the operator's OpenAI-compatible
//! endpoint instead of BM25 (see [`super::embeddings`]): embedded in the
//! background when the host starts, each query at search time (redacted
//! of the secrets the step has read, as a notify message is), the same
//! result shape, the same tie rule, journaled and replayed the same.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bm25::{Embedder, EmbedderBuilder, Tokenizer};
use charter_config::{Deployment, KnowledgeCorpus, PluginSpec};
use serde_json::{Value, json};
use wasmtime::component::{ComponentType, LinkerInstance, Lower};

use super::embeddings::{self, Dense, Endpoint};
use super::{
    Builtin, Capability, Cx, Exec, FnId, Function, HostFunction, Interface, Param, Refusal, arg,
    call_waiting, granted_name, over, shape,
};
use crate::mediator::Dispatch;
use crate::state::HostState;

/// Longest corpus name accepted in a call.
pub const MAX_CORPUS_NAME: usize = 256;
/// Longest query, in bytes.
pub const MAX_QUERY: usize = 4 << 10;
/// Most passages one search returns (a larger `k` is capped).
pub const MAX_K: u32 = 32;
/// Longest passage, in bytes (a longer paragraph is cut in pieces).
pub const MAX_PASSAGE: usize = 1500;
/// Most Markdown files in one corpus.
pub const MAX_FILES: usize = 4096;
/// Largest Markdown file read.
pub const MAX_FILE: u64 = 1 << 20;
/// Most bytes of Markdown in one corpus.
pub const MAX_CORPUS: u64 = 32 << 20;
/// Deepest directory nesting walked.
pub const MAX_DEPTH: usize = 16;
/// Most directory entries (of any kind) walked in one corpus.
pub const MAX_ENTRIES: usize = 1 << 16;
/// Longest heading kept, in bytes (a longer one is cut).
pub const MAX_HEADING: usize = 200;
/// Most passages in one corpus.
pub const MAX_PASSAGES: usize = 100_000;
/// Most passages in all of a deployment's corpora.
pub const MAX_ALL_PASSAGES: usize = 400_000;
/// Most query words (after stop words) searched; the rest are ignored.
pub const MAX_QUERY_TERMS: usize = 64;

pub(super) const INTERFACE: Interface = Interface {
    name: "charter:host/knowledge",
    since: Some("0.3.0"),
    functions: &[Function {
        replay: true,
        ..Function::read(
            "search",
            &[
                ("corpus", Param::String),
                ("query", Param::String),
                ("k", Param::U32),
            ],
        )
    }],
};

pub(super) const BUILTIN: Builtin = Builtin {
    interface: &INTERFACE,
    build: |dep, _| {
        let mut corpora = BTreeMap::new();
        let mut jobs = Vec::new();
        let mut budget = MAX_ALL_PASSAGES;
        for (name, c) in &dep.knowledge {
            // A `dir` escaping the deployment is a configuration error:
            // the host does not start.
            let dir = confined_dir(c).map_err(|e| format!("knowledge: corpus {name:?}: {e}"))?;
            // A bad file inside (or an unreadable API key) costs only this
            // corpus.
            let chunks = load_chunks(&dir, budget.min(MAX_PASSAGES));
            if let Ok(chunks) = &chunks {
                budget -= chunks.len();
            }
            let entry = match (chunks, &c.embeddings) {
                (Err(e), _) => Err(e),
                (Ok(chunks), None) => Ok(Entry::Bm25(Arc::new(Corpus::index(chunks)))),
                (Ok(chunks), Some(e)) => {
                    let key = e
                        .api_key_secret
                        .as_deref()
                        .map(|s| {
                            super::read_secret(&dep.secrets, s)
                                .map_err(|err| format!("embeddings api_key_secret: {err}"))
                        })
                        .transpose();
                    key.map(|key| {
                        let (dense, job) = embeddings::pending(name, chunks, Endpoint::new(e, key));
                        jobs.push(job);
                        Entry::Dense(Arc::new(dense))
                    })
                }
            };
            let entry = entry.unwrap_or_else(|e| {
                tracing::warn!(corpus = %name, "knowledge corpus {name:?} is unavailable: {e}");
                Entry::Unavailable(e)
            });
            corpora.insert(name.clone(), entry);
        }
        // Embedded on a thread of their own: the start does not wait.
        embeddings::start(jobs);
        Ok(Arc::new(Knowledge { corpora }))
    },
};

struct Knowledge {
    /// Each declared corpus.
    corpora: BTreeMap<String, Entry>,
}

/// A declared corpus: ranked by BM25 or by embeddings, or why it could
/// not be read.
enum Entry {
    Bm25(Arc<Corpus>),
    Dense(Arc<Dense>),
    Unavailable(String),
}

#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
struct Passage {
    source: String,
    text: String,
    score: f32,
}

impl Capability for Knowledge {
    fn argument_grants(&self, dep: &Deployment, spec: &PluginSpec) -> Option<BTreeSet<String>> {
        Some(dep.granted_knowledge(spec))
    }

    fn check(
        &self,
        _: &Function,
        args: &Value,
        granted: Option<&BTreeSet<String>>,
    ) -> Result<(), Refusal> {
        let corpus = arg(args, "corpus");
        over("corpus name", corpus.len(), MAX_CORPUS_NAME)?;
        over("query", arg(args, "query").len(), MAX_QUERY)?;
        granted_name("knowledge corpus", corpus, granted)
    }

    fn link(
        &self,
        inst: &mut LinkerInstance<'_, HostState>,
        id: FnId,
        f: &'static HostFunction,
    ) -> wasmtime::Result<()> {
        inst.func_wrap_async(
            f.name(),
            move |mut store: Cx<'_>, (corpus, query, k): (String, String, u32)| {
                Box::new(async move {
                    let args = json!({"corpus": corpus, "query": query, "k": k});
                    let r = call_waiting(&mut store, id, args).await?;
                    Ok((match r {
                        Ok(v) => Ok(passages_of(&v)?),
                        Err(e) => Err(e),
                    },))
                })
            },
        )
    }

    fn execute(&self, args: &Value, x: Exec<'_>) -> Dispatch {
        let name = arg(args, "corpus");
        let k = args["k"].as_u64().unwrap_or(0).min(MAX_K as u64) as usize;
        let corpus = match self.corpora.get(name) {
            None => {
                return Dispatch::Ready(Err(format!(
                    "knowledge corpus {name:?} is not declared under [knowledge]"
                )));
            }
            Some(Entry::Unavailable(e)) => {
                return Dispatch::Ready(Err(format!(
                    "knowledge corpus {name:?} is unavailable: {e}"
                )));
            }
            Some(Entry::Dense(d)) => {
                // The query leaves the host: never with a secret the step
                // has read in it (as a notify message).
                let query = x.m.redact(arg(args, "query"));
                // Just inside the host-call timeout, so the outcome is
                // recorded before the mediator's own timeout cuts the wait.
                let timeout =
                    x.m.call_timeout()
                        .saturating_sub(std::time::Duration::from_millis(20))
                        .max(std::time::Duration::from_millis(1));
                let search = embeddings::search(d.clone(), name.to_string(), query, k, timeout);
                return Dispatch::Wait(Box::pin(search));
            }
            Some(Entry::Bm25(c)) => c,
        };
        let hits = corpus.search(arg(args, "query"), k);
        Dispatch::Ready(Ok(Value::Array(
            hits.into_iter()
                .map(|(p, score)| json!({"source": &*p.source, "text": p.text, "score": score}))
                .collect(),
        )))
    }
}

/// The passages of a (journaled) result, as the guest receives them.
fn passages_of(v: &Value) -> wasmtime::Result<Vec<Passage>> {
    shape(v.as_array())?
        .iter()
        .map(|p| {
            Ok(Passage {
                source: shape(p["source"].as_str())?.to_string(),
                text: shape(p["text"].as_str())?.to_string(),
                score: shape(p["score"].as_f64())? as f32,
            })
        })
        .collect()
}

/// One indexed passage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    /// `path/in/corpus.md#Heading` (or just the path before any heading),
    /// shared by the passages under one heading.
    pub source: Arc<str>,
    pub text: String,
}

/// A corpus, read and indexed: the passages, the BM25 embedder (the
/// crate's, fitted to the corpus, with our tokenizer) and an inverted
/// index from a word to the passages holding it with the word's BM25
/// weight there, so a search reads only the postings of its words.
pub(crate) struct Corpus {
    chunks: Vec<Chunk>,
    embedder: Embedder<u32, Words>,
    postings: HashMap<u32, Vec<(u32, f32)>>,
}

impl Corpus {
    /// Read `c.dir` (confined to `c.root`, bounded) and index it.
    #[cfg(test)]
    pub fn load(c: &KnowledgeCorpus) -> Result<Corpus, String> {
        Corpus::load_dir(&confined_dir(c)?, MAX_PASSAGES)
    }

    /// Read the real directory `dir` (bounded) and index it, refusing
    /// more than `max_passages` passages.
    #[cfg(test)]
    pub fn load_dir(dir: &Path, max_passages: usize) -> Result<Corpus, String> {
        load_chunks(dir, max_passages).map(Corpus::index)
    }

    /// Index `chunks` (each with its heading's words).
    pub fn index(chunks: Vec<Chunk>) -> Corpus {
        let texts: Vec<String> = chunks.iter().map(embedded_text).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embedder = EmbedderBuilder::<u32, Words>::with_tokenizer_and_fit_to_corpus(
            Words::default(),
            &refs,
        )
        .build();
        let mut postings: HashMap<u32, Vec<(u32, f32)>> = HashMap::new();
        for (i, text) in texts.iter().enumerate() {
            let mut seen = HashSet::new();
            for t in embedder.embed(text).iter() {
                // One posting per word and passage (the embedding repeats
                // a word with the same weight).
                if seen.insert(t.index) {
                    postings
                        .entry(t.index)
                        .or_default()
                        .push((i as u32, t.value));
                }
            }
        }
        Corpus {
            chunks,
            embedder,
            postings,
        }
    }

    #[cfg(test)]
    fn passages(&self) -> usize {
        self.chunks.len()
    }

    /// The `k` best passages for `query`, best first; ties in the
    /// corpus's order.
    pub fn search(&self, query: &str, k: usize) -> Vec<(Chunk, f32)> {
        self.rank(query, k).0
    }

    /// [`Corpus::search`], and the number of postings it read (at most
    /// [`MAX_QUERY_TERMS`] × passages). Scores are the `bm25` crate's:
    /// the sum, over the query's words in order, of the word's idf times
    /// its weight in the passage.
    fn rank(&self, query: &str, k: usize) -> (Vec<(Chunk, f32)>, usize) {
        if k == 0 {
            return (vec![], 0);
        }
        let n = self.chunks.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut work = 0;
        for t in self.embedder.embed(query).iter().take(MAX_QUERY_TERMS) {
            let Some(list) = self.postings.get(&t.index) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1f32 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(doc, weight) in list {
                *scores.entry(doc).or_insert(0f32) += idf * weight;
            }
            work += list.len();
        }
        let mut hits: Vec<(u32, f32)> = scores.into_iter().collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        let hits = hits
            .into_iter()
            .filter_map(|(i, s)| Some((self.chunks.get(i as usize)?.clone(), s)))
            .collect();
        (hits, work)
    }
}

/// The passages of the real directory `dir` (read bounded), refusing more
/// than `max_passages`.
fn load_chunks(dir: &Path, max_passages: usize) -> Result<Vec<Chunk>, String> {
    let files = read_corpus(dir)?;
    let mut chunks = Vec::new();
    for (rel, text) in &files {
        chunks.extend(chunk_markdown(rel, text));
        if chunks.len() > max_passages {
            return Err(format!(
                "{rel}: over the limit of {max_passages} passages in this corpus"
            ));
        }
    }
    Ok(chunks)
}

/// What is indexed (BM25) or embedded for a passage: its heading, then its
/// text.
pub(crate) fn embedded_text(c: &Chunk) -> String {
    let heading = c.source.split_once('#').map(|(_, h)| h).unwrap_or_default();
    format!("{heading}\n{}", c.text)
}

/// The real path of a corpus's directory, refused if it is outside the
/// deployment's directory or not a directory.
fn confined_dir(c: &KnowledgeCorpus) -> Result<PathBuf, String> {
    let (dir, root) = (&c.dir, &c.root);
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("the deployment directory {}: {e}", root.display()))?;
    let real_dir = dir
        .canonicalize()
        .map_err(|e| format!("dir {}: {e}", dir.display()))?;
    if !real_dir.starts_with(&real_root) {
        return Err(format!(
            "dir {} escapes the deployment directory {} (it resolves to {})",
            dir.display(),
            real_root.display(),
            real_dir.display()
        ));
    }
    if !real_dir.is_dir() {
        return Err(format!("dir {} is not a directory", dir.display()));
    }
    Ok(real_dir)
}

/// The Markdown files under the real directory `real_dir` (relative path
/// with `/`, text), in path order, refusing anything whose real path is
/// outside it. Each real directory is walked once (a link back to one
/// already walked is skipped), and at most [`MAX_ENTRIES`] entries.
fn read_corpus(real_dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut walked = 0usize;
    let mut visited: HashSet<PathBuf> = HashSet::from([real_dir.to_path_buf()]);
    let mut stack: Vec<(PathBuf, usize)> = vec![(real_dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for entry in entries {
            walked += 1;
            if walked > MAX_ENTRIES {
                return Err(format!(
                    "{}: over the limit of {MAX_ENTRIES} directory entries walked",
                    d.display()
                ));
            }
            let path = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
            let real = path
                .canonicalize()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if !real.starts_with(real_dir) {
                return Err(format!(
                    "{} leads outside the corpus directory (to {}); a corpus holds only its own files",
                    path.display(),
                    real.display()
                ));
            }
            if real.is_dir() {
                if !visited.insert(real.clone()) {
                    continue;
                }
                if depth + 1 > MAX_DEPTH {
                    return Err(format!(
                        "{} is nested deeper than {MAX_DEPTH} directories",
                        path.display()
                    ));
                }
                stack.push((real, depth + 1));
                continue;
            }
            if real.extension().and_then(|e| e.to_str()) != Some("md") {
                continue;
            }
            if out.len() >= MAX_FILES {
                return Err(format!(
                    "{}: over the limit of {MAX_FILES} files",
                    path.display()
                ));
            }
            let text = read_file(&real, &path)?;
            total += text.len() as u64;
            if total > MAX_CORPUS {
                return Err(format!(
                    "{}: over the limit of {MAX_CORPUS} bytes in a corpus",
                    path.display()
                ));
            }
            let rel = real
                .strip_prefix(real_dir)
                .unwrap_or(&real)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, text));
        }
    }
    out.sort();
    Ok(out)
}

/// The text of the corpus file at the real path `real` (`shown` in
/// errors): opened without blocking (a FIFO) or following a link, a
/// regular file with one link (a hard link could bring in a file from
/// outside), read up to [`MAX_FILE`] bytes whatever its size says, UTF-8.
fn read_file(real: &Path, shown: &Path) -> Result<String, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", shown.display());
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let file = open.open(real).map_err(|e| err(&e))?;
    let meta = file.metadata().map_err(|e| err(&e))?;
    if !meta.is_file() {
        return Err(err(&"not a regular file (a corpus file must be one)"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() > 1 {
            return Err(err(&format_args!(
                "has {} hard links; a corpus file must have one",
                meta.nlink()
            )));
        }
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(&e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(err(&format_args!(
            "over the {MAX_FILE}-byte limit of one file"
        )));
    }
    String::from_utf8(bytes).map_err(|_| err(&"not UTF-8 (a corpus file must be UTF-8)"))
}

/// Cut a Markdown text into passages: one per paragraph (lines up to a
/// blank line), each under the last heading seen, longer ones in pieces
/// of at most [`MAX_PASSAGE`] bytes. Headings are not passages of their
/// own; fenced code stays in its paragraph.
pub(crate) fn chunk_markdown(file: &str, text: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    // One source string per heading, shared by its passages.
    let mut source: Arc<str> = Arc::from(file);
    let mut para: Vec<&str> = Vec::new();
    let flush = |para: &mut Vec<&str>, source: &Arc<str>, out: &mut Vec<Chunk>| {
        let joined = para.join(" ");
        para.clear();
        for piece in pieces(joined.trim(), MAX_PASSAGE) {
            out.push(Chunk {
                source: source.clone(),
                text: piece.to_string(),
            });
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(h) = heading_text(t) {
            flush(&mut para, &source, &mut out);
            let h = cut(h, MAX_HEADING);
            source = if h.is_empty() {
                Arc::from(file)
            } else {
                Arc::from(format!("{file}#{h}"))
            };
        } else if t.is_empty() {
            flush(&mut para, &source, &mut out);
        } else {
            para.push(t);
        }
    }
    flush(&mut para, &source, &mut out);
    out
}

/// The text of an ATX heading line (`## Hotel rates`), if it is one.
fn heading_text(line: &str) -> Option<&str> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &line[hashes..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    Some(rest.trim().trim_end_matches('#').trim())
}

/// The first `max` bytes of `s` at most, not inside a character.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` in pieces of at most `max` bytes, cut at a space where one is near
/// (never inside a character); no empty piece.
fn pieces(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if rest.len() <= max {
            out.push(rest);
            break;
        }
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(space) = rest[..cut].rfind(' ').filter(|&i| i > max / 2) {
            cut = space;
        }
        out.push(rest[..cut].trim_end());
        rest = rest[cut..].trim_start();
    }
    out
}

/// Lowercase alphanumeric words, English stop words dropped,
/// Snowball-stemmed (English). Queries and passages go through the same.
struct Words {
    stemmer: rust_stemmers::Stemmer,
}

impl Default for Words {
    fn default() -> Words {
        Words {
            stemmer: rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English),
        }
    }
}

impl std::fmt::Debug for Words {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Words")
    }
}

/// Common English words that carry no topic.
const STOP: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "for", "from", "how", "i", "if",
    "in", "is", "it", "may", "me", "my", "of", "on", "or", "our", "so", "that", "the", "their",
    "this", "to", "we", "what", "when", "which", "who", "will", "with", "you", "your",
];

impl Tokenizer for Words {
    fn tokenize(&self, text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .filter(|w| STOP.binary_search(&w.as_str()).is_err())
            .map(|w| self.stemmer.stem(&w).into_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted() {
        assert!(STOP.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn markdown_is_cut_by_heading_and_paragraph() {
        let text = "Intro line.\n\n# Travel\n\nBook economy.\nAlways.\n\n## Hotels ##\nAt most 150 EUR a night.\n\n#hashtag is text\n";
        let chunks = chunk_markdown("t.md", text);
        let got: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (&*c.source, c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t.md", "Intro line."),
                ("t.md#Travel", "Book economy. Always."),
                ("t.md#Hotels", "At most 150 EUR a night."),
                ("t.md#Hotels", "#hashtag is text"),
            ]
        );
    }

    #[test]
    fn a_long_paragraph_is_cut_within_the_bound_on_char_boundaries() {
        let para = "é".repeat(3000) + " word";
        let chunks = chunk_markdown("x.md", &para);
        assert!(chunks.len() >= 4);
        assert!(chunks.iter().all(|c| c.text.len() <= MAX_PASSAGE));
        let back: String = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(back.replace(' ', ""), para.replace(' ', ""));
    }

    fn corpus() -> Corpus {
        let mut chunks = chunk_markdown(
            "travel.md",
            "# Hotels\nHotel stays are reimbursed up to 150 EUR per night.\n\n# Flights\nFlights under six hours are booked in economy.",
        );
        chunks.extend(chunk_markdown(
            "leave.md",
            "# Parental leave\nParents take sixteen weeks of paid leave.",
        ));
        Corpus::index(chunks)
    }

    #[test]
    fn search_ranks_stems_and_headings() {
        let c = corpus();
        let hits = c.search("how many weeks of parental leave", 3);
        assert_eq!(&*hits[0].0.source, "leave.md#Parental leave");
        // "nights" and "hotel" (the heading) find the hotel passage.
        let hits = c.search("hotel nights", 3);
        assert_eq!(&*hits[0].0.source, "travel.md#Hotels");
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn k_is_bounded_and_zero_gives_none() {
        let c = corpus();
        assert!(c.search("leave hotel flights", 0).is_empty());
        assert!(c.search("leave hotel flights", 1000).len() <= c.passages());
        assert!(c.search("", 5).is_empty());
        assert!(c.search("zzzz qqqq", 5).is_empty());
    }

    #[test]
    fn a_search_is_deterministic() {
        // Equal scores come back in the corpus's order every time.
        let chunks: Vec<Chunk> = (0..50)
            .map(|i| Chunk {
                source: format!("f{i:02}.md").into(),
                text: "expenses receipt".into(),
            })
            .collect();
        let c = Corpus::index(chunks);
        let first: Vec<String> = c
            .search("receipt", 10)
            .into_iter()
            .map(|h| h.0.source.to_string())
            .collect();
        assert_eq!(first[0], "f00.md");
        for _ in 0..5 {
            let again: Vec<String> = c
                .search("receipt", 10)
                .into_iter()
                .map(|h| h.0.source.to_string())
                .collect();
            assert_eq!(again, first);
        }
    }

    fn corpus_at(root: &Path, dir: &str) -> KnowledgeCorpus {
        KnowledgeCorpus {
            dir: root.join(dir),
            root: root.to_path_buf(),
            embeddings: None,
        }
    }

    #[test]
    fn a_corpus_is_read_from_its_directory() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("docs/sub")).unwrap();
        std::fs::write(t.path().join("docs/a.md"), "# A\nalpha text").unwrap();
        std::fs::write(t.path().join("docs/sub/b.md"), "# B\nbeta text").unwrap();
        std::fs::write(t.path().join("docs/c.txt"), "not markdown").unwrap();
        let c = Corpus::load(&corpus_at(t.path(), "docs")).unwrap();
        assert_eq!(c.passages(), 2);
        assert_eq!(&*c.search("beta", 1)[0].0.source, "sub/b.md#B");
    }

    /// SECURITY: a corpus is confined to the deployment's directory, on
    /// real paths: a symbolic link out of it is refused when the host
    /// starts, naming the link.
    #[cfg(unix)]
    #[test]
    fn a_corpus_link_escaping_the_deployment_directory_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.md"), "# S\nroot password").unwrap();
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("docs")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.md"),
            t.path().join("docs/leak.md"),
        )
        .unwrap();
        let Err(err) = Corpus::load(&corpus_at(t.path(), "docs")) else {
            panic!("refused")
        };
        assert!(err.contains("leak.md") && err.contains("outside"), "{err}");
        // The corpus directory itself a link to outside: refused too.
        std::os::unix::fs::symlink(outside.path(), t.path().join("out")).unwrap();
        let Err(err) = Corpus::load(&corpus_at(t.path(), "out")) else {
            panic!("refused")
        };
        assert!(err.contains("escapes the deployment directory"), "{err}");
    }

    #[test]
    fn oversized_and_non_utf8_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("docs")).unwrap();
        std::fs::write(t.path().join("docs/bin.md"), [0xff, 0xfe, 0x00]).unwrap();
        let Err(err) = Corpus::load(&corpus_at(t.path(), "docs")) else {
            panic!("refused")
        };
        assert!(err.contains("UTF-8"), "{err}");
        std::fs::write(
            t.path().join("docs/bin.md"),
            vec![b'a'; MAX_FILE as usize + 1],
        )
        .unwrap();
        let Err(err) = Corpus::load(&corpus_at(t.path(), "docs")) else {
            panic!("refused")
        };
        assert!(err.contains("limit"), "{err}");
    }

    fn docs_dir() -> (tempfile::TempDir, KnowledgeCorpus) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("docs")).unwrap();
        let c = corpus_at(t.path(), "docs");
        (t, c)
    }

    /// SECURITY: ten links to the corpus's own directory (and none to a
    /// file) no longer walk 10^16 directories: each real directory is
    /// walked once, the loop skipped, the corpus read.
    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_in_a_corpus_is_walked_once() {
        let (t, c) = docs_dir();
        std::fs::create_dir_all(t.path().join("docs/sub")).unwrap();
        std::fs::write(t.path().join("docs/sub/a.md"), "# A\nalpha").unwrap();
        for i in 0..10 {
            std::os::unix::fs::symlink(".", t.path().join(format!("docs/l{i}"))).unwrap();
            std::os::unix::fs::symlink("..", t.path().join(format!("docs/sub/u{i}"))).unwrap();
        }
        let files = read_corpus(&confined_dir(&c).unwrap()).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(Corpus::load(&c).unwrap().passages(), 1);
    }

    /// SECURITY: a FIFO named `x.md` does not block the load (opened
    /// non-blocking, refused as not a regular file).
    #[cfg(unix)]
    #[test]
    fn a_fifo_in_a_corpus_is_refused_without_blocking() {
        let (t, c) = docs_dir();
        let fifo = t.path().join("docs/x.md");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        let Err(err) = Corpus::load(&c) else {
            panic!("refused")
        };
        assert!(
            err.contains("x.md") && err.contains("regular file"),
            "{err}"
        );
    }

    /// SECURITY: a hard link (which could bring in a file from outside
    /// the deployment that a path check cannot see) is refused.
    #[cfg(unix)]
    #[test]
    fn a_hard_link_in_a_corpus_is_refused() {
        let (t, c) = docs_dir();
        std::fs::write(t.path().join("secret.md"), "# S\nthe root password").unwrap();
        std::fs::hard_link(t.path().join("secret.md"), t.path().join("docs/h.md")).unwrap();
        let Err(err) = Corpus::load(&c) else {
            panic!("refused")
        };
        assert!(err.contains("h.md") && err.contains("hard link"), "{err}");
    }

    /// SECURITY: a 600 KB heading over many paragraphs is cut at
    /// MAX_HEADING bytes, and its passages share one source string.
    #[test]
    fn a_long_heading_is_cut_and_shared() {
        let text = format!("# {}\n\n{}", "h".repeat(600_000), "p\n\n".repeat(1000));
        let chunks = chunk_markdown("f.md", &text);
        assert_eq!(chunks.len(), 1000);
        assert_eq!(chunks[0].source.len(), "f.md#".len() + MAX_HEADING);
        assert!(
            chunks
                .windows(2)
                .all(|w| Arc::ptr_eq(&w[0].source, &w[1].source))
        );
        // Cut on a character boundary.
        let chunks = chunk_markdown("f.md", &format!("# {}\np", "é".repeat(400)));
        assert!(chunks[0].source.len() <= "f.md#".len() + MAX_HEADING);
    }

    /// SECURITY: a file of tiny paragraphs cannot index millions of
    /// passages: over MAX_PASSAGES the corpus is refused, naming the file.
    #[test]
    fn many_tiny_paragraphs_are_refused_over_the_passage_limit() {
        let (t, c) = docs_dir();
        std::fs::write(t.path().join("docs/a.md"), "x\n\n".repeat(MAX_PASSAGES / 2)).unwrap();
        assert_eq!(Corpus::load(&c).unwrap().passages(), MAX_PASSAGES / 2);
        std::fs::write(
            t.path().join("docs/b.md"),
            "x\n\n".repeat(MAX_PASSAGES / 2 + 1),
        )
        .unwrap();
        let Err(err) = Corpus::load(&c) else {
            panic!("refused")
        };
        assert!(err.contains("b.md") && err.contains("passages"), "{err}");
        // And a smaller budget (what is left of MAX_ALL_PASSAGES) binds.
        let dir = confined_dir(&c).unwrap();
        assert!(Corpus::load_dir(&dir, 10).is_err());
    }

    /// Scores from the inverted index are the `bm25` crate's own.
    #[test]
    fn scores_equal_the_bm25_crates() {
        let c = corpus();
        let docs: Vec<bm25::Document<u32>> = c
            .chunks
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                let h = ch
                    .source
                    .split_once('#')
                    .map(|(_, h)| h)
                    .unwrap_or_default();
                bm25::Document::new(i as u32, format!("{h}\n{}", ch.text))
            })
            .collect();
        let engine = bm25::SearchEngineBuilder::<u32, u32, Words>::with_tokenizer_and_documents(
            Words::default(),
            docs,
        )
        .build();
        for q in [
            "parental leave weeks",
            "hotel hotel nights",
            "economy flights six",
        ] {
            let mut theirs: Vec<(u32, f32)> = engine
                .search(q, None)
                .into_iter()
                .map(|r| (r.document.id, r.score))
                .collect();
            theirs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let ours: Vec<f32> = c.search(q, 32).into_iter().map(|h| h.1).collect();
            let theirs: Vec<f32> = theirs.into_iter().map(|h| h.1).collect();
            assert_eq!(ours, theirs, "{q}");
        }
    }

    /// SECURITY: a 4 KiB query of ~500 words, every one in every passage,
    /// reads at most MAX_QUERY_TERMS postings per passage (the crate's
    /// scorer did ~500 linear scans per passage).
    #[test]
    fn a_worst_case_query_does_bounded_work() {
        let words: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let chunks: Vec<Chunk> = (0..300)
            .map(|i| Chunk {
                source: format!("f{i}.md").into(),
                text: text.chars().take(MAX_PASSAGE).collect(),
            })
            .collect();
        let c = Corpus::index(chunks);
        let query: String = words.join(" ").chars().take(MAX_QUERY).collect();
        let (hits, work) = c.rank(&query, 32);
        assert_eq!(hits.len(), 32);
        assert!(work > 0 && work <= MAX_QUERY_TERMS * 300, "{work}");
        // Repeating one word does not multiply the work past the cap.
        let (_, work) = c.rank(&"w1 ".repeat(1300), 32);
        assert!(work <= MAX_QUERY_TERMS * 300, "{work}");
    }
}
