"""Knowledge search in Python: the same step as plugins/rust/fx-knowledge.

Searches `input.corpus` (default `policies`) for `input.query` with
`input.k` (default 3) and returns the passages, or the host's error as
`error`. `knowledge.search` is new in `charter:host@0.3.0`; the build
imports it from there (sdk/wit/guest-wit.py), and `charter.knowledge_search`
returns the passages as plain dicts.
"""
import charter
from componentize_py_types import Err


def run(input):
    corpus = input.get("corpus", "policies")
    query = input.get("query", "")
    k = input.get("k", 3)
    if not isinstance(corpus, str) or not isinstance(query, str):
        raise charter.Fatal("input.corpus and input.query must be strings")
    if not isinstance(k, int) or k < 0:
        raise charter.Fatal("input.k must be a whole number")
    try:
        passages = charter.knowledge_search(corpus, query, min(k, 2**32 - 1))
    except Err as e:
        return {"error": e.value}
    return {"passages": passages}


WitWorld = charter.step(run)
