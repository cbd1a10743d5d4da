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
//! it is refused too, at start, with an error naming the corpus and the
//! file. Reading is bounded ([`MAX_FILES`], [`MAX_FILE`],
//! [`MAX_CORPUS`], [`MAX_DEPTH`]).
//!
//! **Calls.** The effect is `read`. A query over [`MAX_QUERY`] bytes is
//! refused (a limit); `k` is capped at [`MAX_K`] and `0` returns no
//! passage. Results are ordered by score, then by their place in the
//! corpus, so a search is deterministic; the result is journaled and
//! stands in on replay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bm25::{Document, SearchEngine, SearchEngineBuilder, Tokenizer};
use charter_config::{Deployment, KnowledgeCorpus, PluginSpec};
use serde_json::{Value, json};
use wasmtime::component::{ComponentType, LinkerInstance, Lower};

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
        for (name, c) in &dep.knowledge {
            let index = Corpus::load(c).map_err(|e| format!("knowledge: corpus {name:?}: {e}"))?;
            corpora.insert(name.clone(), Arc::new(index));
        }
        Ok(Arc::new(Knowledge { corpora }))
    },
};

struct Knowledge {
    corpora: BTreeMap<String, Arc<Corpus>>,
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

    fn execute(&self, args: &Value, _: Exec<'_>) -> Dispatch {
        let name = arg(args, "corpus");
        let Some(corpus) = self.corpora.get(name) else {
            return Dispatch::Ready(Err(format!(
                "knowledge corpus {name:?} is not declared under [knowledge]"
            )));
        };
        let k = args["k"].as_u64().unwrap_or(0).min(MAX_K as u64) as usize;
        let hits = corpus.search(arg(args, "query"), k);
        Dispatch::Ready(Ok(Value::Array(
            hits.into_iter()
                .map(|(p, score)| json!({"source": p.source, "text": p.text, "score": score}))
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
    /// `path/in/corpus.md#Heading` (or just the path before any heading).
    pub source: String,
    pub text: String,
}

/// A corpus, read and indexed.
pub(crate) struct Corpus {
    chunks: Vec<Chunk>,
    engine: SearchEngine<u32, u32, Words>,
}

impl Corpus {
    /// Read `c.dir` (confined to `c.root`, bounded) and index it.
    pub fn load(c: &KnowledgeCorpus) -> Result<Corpus, String> {
        let files = read_confined(&c.dir, &c.root)?;
        let mut chunks = Vec::new();
        for (rel, text) in &files {
            chunks.extend(chunk_markdown(rel, text));
        }
        Ok(Corpus::index(chunks))
    }

    /// Index `chunks` (each with its heading's words).
    pub fn index(chunks: Vec<Chunk>) -> Corpus {
        let docs: Vec<Document<u32>> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let heading = c.source.split_once('#').map(|(_, h)| h).unwrap_or_default();
                Document::new(i as u32, format!("{heading}\n{}", c.text))
            })
            .collect();
        let engine = SearchEngineBuilder::<u32, u32, Words>::with_tokenizer_and_documents(
            Words::default(),
            docs,
        )
        .build();
        Corpus { chunks, engine }
    }

    #[cfg(test)]
    fn passages(&self) -> usize {
        self.chunks.len()
    }

    /// The `k` best passages for `query`, best first; ties in the
    /// corpus's order (the crate's own order of ties is a hash set's).
    pub fn search(&self, query: &str, k: usize) -> Vec<(Chunk, f32)> {
        if k == 0 {
            return vec![];
        }
        let mut hits: Vec<(u32, f32)> = self
            .engine
            .search(query, None)
            .into_iter()
            .map(|r| (r.document.id, r.score))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits.into_iter()
            .filter_map(|(i, s)| Some((self.chunks.get(i as usize)?.clone(), s)))
            .collect()
    }
}

/// The Markdown files under `dir` (relative path with `/`, text), in
/// path order, refusing anything whose real path is outside `root`.
fn read_confined(dir: &Path, root: &Path) -> Result<Vec<(String, String)>, String> {
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
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack: Vec<(PathBuf, usize)> = vec![(real_dir.clone(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
            let real = path
                .canonicalize()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if !real.starts_with(&real_dir) {
                return Err(format!(
                    "{} leads outside the corpus directory (to {}); a corpus holds only its own files",
                    path.display(),
                    real.display()
                ));
            }
            if real.is_dir() {
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
            let size = real.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if size > MAX_FILE {
                return Err(format!(
                    "{} is {size} bytes, over the {MAX_FILE}-byte limit of one file",
                    path.display()
                ));
            }
            total += size;
            if total > MAX_CORPUS || out.len() >= MAX_FILES {
                return Err(format!(
                    "over the corpus limits ({MAX_FILES} files, {MAX_CORPUS} bytes)"
                ));
            }
            let text = std::fs::read_to_string(&real)
                .map_err(|e| format!("{}: {e} (a corpus file must be UTF-8)", path.display()))?;
            let rel = real
                .strip_prefix(&real_dir)
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

/// Cut a Markdown text into passages: one per paragraph (lines up to a
/// blank line), each under the last heading seen, longer ones in pieces
/// of at most [`MAX_PASSAGE`] bytes. Headings are not passages of their
/// own; fenced code stays in its paragraph.
pub(crate) fn chunk_markdown(file: &str, text: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut para: Vec<&str> = Vec::new();
    let flush = |para: &mut Vec<&str>, heading: &str, out: &mut Vec<Chunk>| {
        let joined = para.join(" ");
        para.clear();
        let source = if heading.is_empty() {
            file.to_string()
        } else {
            format!("{file}#{heading}")
        };
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
            flush(&mut para, &heading, &mut out);
            heading = h.to_string();
        } else if t.is_empty() {
            flush(&mut para, &heading, &mut out);
        } else {
            para.push(t);
        }
    }
    flush(&mut para, &heading, &mut out);
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
            .map(|c| (c.source.as_str(), c.text.as_str()))
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
        assert_eq!(hits[0].0.source, "leave.md#Parental leave");
        // "nights" and "hotel" (the heading) find the hotel passage.
        let hits = c.search("hotel nights", 3);
        assert_eq!(hits[0].0.source, "travel.md#Hotels");
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
                source: format!("f{i:02}.md"),
                text: "expenses receipt".into(),
            })
            .collect();
        let c = Corpus::index(chunks);
        let first: Vec<String> = c
            .search("receipt", 10)
            .into_iter()
            .map(|h| h.0.source)
            .collect();
        assert_eq!(first[0], "f00.md");
        for _ in 0..5 {
            let again: Vec<String> = c
                .search("receipt", 10)
                .into_iter()
                .map(|h| h.0.source)
                .collect();
            assert_eq!(again, first);
        }
    }

    fn corpus_at(root: &Path, dir: &str) -> KnowledgeCorpus {
        KnowledgeCorpus {
            dir: root.join(dir),
            root: root.to_path_buf(),
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
        assert_eq!(c.search("beta", 1)[0].0.source, "sub/b.md#B");
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
}
