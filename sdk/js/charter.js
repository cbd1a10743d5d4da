// Write a Charter step in JavaScript: one function from JSON to JSON.
//
//   import { step } from "./charter.js";
//   import log from "charter:host/log@0.1.0";
//   export const run = step((input) => {
//     log.write("info", `hello ${input.name}`);
//     return { hello: input.name };
//   });
//
// Host functions are ES modules named by their WIT interface
// ("charter:host/kv@0.1.0", ...), limited to the ones the plugin lists in its
// `host-functions` file. A host function that fails throws its error string;
// `step` turns that into a retryable step failure. Throw `new Retryable(msg)`
// or `new Fatal(msg)` to fail the step; any other error is fatal.
// console.log and console.error become log lines tagged with the plugin.

export class Retryable extends Error {}
export class Fatal extends Error {}

export function step(fn) {
  return function run(input) {
    let value;
    try {
      value = JSON.parse(input);
    } catch (e) {
      throw { tag: "fatal", val: `input is not valid JSON: ${e.message}` };
    }
    try {
      return JSON.stringify(fn(value));
    } catch (e) {
      if (e instanceof Retryable) throw { tag: "retryable", val: e.message };
      if (e instanceof Fatal) throw { tag: "fatal", val: e.message };
      // A host function's error: transient by default, as in the Rust SDK.
      if (typeof e === "string") throw { tag: "retryable", val: e };
      if (e instanceof Error && /out of memory/i.test(e.message)) {
        // The host's memory limit: trap, so the host reports the limit.
        throw e;
      }
      throw { tag: "fatal", val: `${e && e.name ? e.name + ": " : ""}${e && e.message !== undefined ? e.message : e}` };
    }
  };
}
