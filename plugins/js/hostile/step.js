// Hostile fixture in JavaScript, one mode per input: {"mode": ...}
// loop: spin forever; bomb: allocate until memory runs out; flood: call
// log.write without end; fatal / retryable: fail the step so; print: write
// to stdout and stderr, then succeed.
import { step, Fatal, Retryable } from "./charter.js";
import log from "charter:host/log@0.1.0";

export const run = step((input) => {
  switch (input.mode) {
    case "loop": {
      let n = 0;
      for (;;) n++;
    }
    case "bomb": {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(0xa5));
    }
    case "flood":
      for (let i = 0; ; i++) log.write("trace", `flood ${i}`);
    case "fatal":
      throw new Fatal("fatal on purpose");
    case "retryable":
      throw new Retryable("retryable on purpose");
    case "print":
      console.log("hello from stdout");
      console.error("hello from stderr");
      return { printed: true };
    default:
      throw new Fatal(`unknown mode ${JSON.stringify(input.mode)}`);
  }
});
