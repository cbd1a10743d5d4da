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
// `host-functions` file. Each is imported at the lowest version that has it:
// notify is new in 0.2.0, so
//   import notify from "charter:host/notify@0.2.0";
//   const id = notify.send("team", "subject", "body");   // the delivery's id A host function that fails throws its error string;
// `step` turns that into a retryable step failure. Throw `new Retryable(msg)`
// or `new Fatal(msg)` to fail the step; any other error is fatal.
// console.log and console.error become log lines tagged with the plugin.

import stdoutIface from "wasi:cli/stdout@0.2.12";
import stderrIface from "wasi:cli/stderr@0.2.12";

function utf8(s) {
  const out = [];
  for (const ch of s) {
    let c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

function writer(iface, getter) {
  return (...args) => {
    const text = args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" ") + "\n";
    const stream = iface[getter]();
    const bytes = utf8(text);
    for (let i = 0; i < bytes.length; i += 4096) stream.blockingWriteAndFlush(bytes.subarray(i, i + 4096));
  };
}

// QuickJS has no console: print to WASI stdout/stderr, which the host turns
// into log lines tagged with the plugin.
if (typeof globalThis.console === "undefined") {
  const out = writer(stdoutIface, "getStdout");
  const err = writer(stderrIface, "getStderr");
  globalThis.console = { log: out, info: out, debug: out, warn: err, error: err };
}

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
