// A Charter step in JavaScript.
import { step, Fatal } from "./charter.js";
import log from "charter:host/log@0.1.0";

export const run = step((input) => {
  if (typeof input.name !== "string") throw new Fatal("input.name (string) is required");
  log.write("info", `greeting ${input.name}`);
  return { hello: input.name };
});
