"""Write a Charter step in Python: one function from JSON to JSON.

    import charter
    from wit_world.imports import log

    def run(input):
        log.write(log.Level.INFO, "hello " + input["name"])
        return {"hello": input["name"]}

    WitWorld = charter.step(run)

Host functions are the generated bindings (`wit_world.imports.kv`, `.llm`,
`.log`, `.secrets`, `.explain`, `.notify` from charter:host@0.2.0 and
`.knowledge` from charter:host@0.3.0), limited to the ones the plugin
lists in its `host-functions` file:

    from wit_world.imports import notify
    sent = notify.send("team", "subject", "body")   # the delivery's id

Knowledge search (list `knowledge.search` in host-functions) has a helper
returning plain dicts, ready for the step's JSON output:

    passages = charter.knowledge_search("policies", input["question"], 3)
    # [{"source": "travel/hotels.md#Hotels", "text": "...", "score": 7.2}, ...]

A host function that fails raises
`componentize_py_types.Err`; `charter.step` turns it into a retryable step
failure. Raise `charter.Retryable(msg)` or `charter.Fatal(msg)` yourself to
fail the step; any other exception is a fatal failure with its message.
print() and stderr become log lines tagged with the plugin.
"""
import json

from componentize_py_types import Err
from wit_world.imports.types import StepError_Fatal, StepError_Retryable

try:  # bound only when the plugin lists knowledge.search
    from wit_world.imports import knowledge as _knowledge
except ImportError:
    _knowledge = None

__all__ = ["step", "Retryable", "Fatal", "knowledge_search"]


class Retryable(Exception):
    """A transient failure: the workflow engine may retry the step."""


class Fatal(Exception):
    """A permanent failure: the step is not retried."""


def step(fn):
    """The `WitWorld` class componentize-py exports, running `fn(input) -> output`."""

    class WitWorld:
        def run(self, input: str) -> str:
            try:
                value = json.loads(input)
            except ValueError as e:
                raise Err(StepError_Fatal(f"input is not valid JSON: {e}"))
            try:
                return json.dumps(fn(value))
            except Retryable as e:
                raise Err(StepError_Retryable(str(e)))
            except Fatal as e:
                raise Err(StepError_Fatal(str(e)))
            except Err as e:
                # A host function failed: transient by default, as in the Rust SDK.
                raise Err(StepError_Retryable(str(e.value)))
            except MemoryError:
                # Out of memory is the host's memory limit: let it trap so the
                # host reports the limit, not a step failure.
                raise
            except Exception as e:
                raise Err(StepError_Fatal(f"{type(e).__name__}: {e}"))

    return WitWorld


def knowledge_search(corpus, query, k=5):
    """The at most `k` passages of `corpus` best matching `query`, best first,
    as dicts {"source": "path.md#Heading", "text": ..., "score": ...} (score:
    BM25, or cosine similarity in -1..1 for a corpus with embeddings).

    The corpus must be declared under [knowledge] and granted by name; the
    plugin's `host-functions` must list `knowledge.search`. A host error (the
    corpus is unavailable, the embeddings endpoint failed) raises Err, which
    `charter.step` turns into a retryable failure."""
    if _knowledge is None:
        raise Fatal("knowledge_search needs `knowledge.search` in the plugin's host-functions file")
    return [{"source": p.source, "text": p.text, "score": p.score}
            for p in _knowledge.search(corpus, query, k)]
