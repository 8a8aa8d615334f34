// Debian's chromium, launched the one way this machine allows: headless, no sandbox (root),
// and without the background networking that a closed network refuses many times a second.
// launch() gives it a fresh, empty profile of its own (and deletes it after). Shared by the
// end-to-end test and tools/dashboard/measure.mjs.

import { chromium } from "playwright-core";

export function launchChromium(executablePath, extraArgs = []) {
  return chromium.launch({
    executablePath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
  });
}
