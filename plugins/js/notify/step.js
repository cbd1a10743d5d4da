// Notify in JavaScript: the same step as plugins/rust/fx-notify.
// Sends input.subject / input.body to input.channel (default "ops") and
// returns the delivery id as `sent`. notify is new in charter:host@0.2.0,
// so it is imported from there; log stays at 0.1.0 (sdk/wit/guest-wit.py).
import { step, Fatal } from "./charter.js";
import log from "charter:host/log@0.1.0";
import notify from "charter:host/notify@0.2.0";

export const run = step((input) => {
  const { channel = "ops", subject = "", body = "" } = input;
  if (![channel, subject, body].every((v) => typeof v === "string")) {
    throw new Fatal("input.channel, .subject and .body must be strings");
  }
  // A host error (the channel did not take it) throws its string: retryable.
  const sent = notify.send(channel, subject, body);
  log.write("info", `notified ${channel}: ${sent}`);
  return { sent };
});
