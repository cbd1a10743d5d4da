// Knowledge search in JavaScript: the same step as plugins/rust/fx-knowledge.
// Searches input.corpus (default "policies") for input.query with input.k
// (default 3) and returns the passages, or the host's error as `error`.
// knowledge is new in charter:host@0.3.0, so it is imported from there;
// search returns plain objects { source, text, score }.
import { step, Fatal } from "./charter.js";
import knowledge from "charter:host/knowledge@0.3.0";

export const run = step((input) => {
  const { corpus = "policies", query = "", k = 3 } = input;
  if (typeof corpus !== "string" || typeof query !== "string") {
    throw new Fatal("input.corpus and input.query must be strings");
  }
  if (!Number.isInteger(k) || k < 0) throw new Fatal("input.k must be a whole number");
  try {
    const passages = knowledge.search(corpus, query, Math.min(k, 4294967295));
    return { passages: passages.map(({ source, text, score }) => ({ source, text, score })) };
  } catch (e) {
    // A host error (the corpus is unavailable): componentize-qjs throws
    // it as an Error whose message is the host's string.
    if (typeof e === "string") return { error: e };
    if (e instanceof Error && !(e instanceof Fatal)) return { error: e.message };
    throw e;
  }
});
