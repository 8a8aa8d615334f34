// End-to-end test of the dashboard in Debian's chromium (playwright-core, no downloaded
// browser). Run by tests/dashboard.rs, which starts a real 3-node cluster and passes its
// facts as one JSON argument:
//   { url, token, node_bin, connect, ids: [a, b, c], victim: { id, pid }, shots, chromium }
// Steps: log in; three alive members; an actor added through the CLI appears; the victim
// killed (-9) turns suspect then dead without a reload and the feed shows both; the search
// box filters. A screenshot of each state goes to `shots`. Exit 0 when every step held;
// otherwise the failed step on stderr, a screenshot of the failure, and exit 1.

import { launchChromium } from "./browser.mjs";
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";

const cfg = JSON.parse(process.argv[2]);
// Bounds so that a broken page fails the test instead of hanging it (not timing checks).
const STEP_MS = 60_000;
// Screenshots of this run only (a stale failure.png would mislead).
rmSync(cfg.shots, { recursive: true, force: true });
mkdirSync(cfg.shots, { recursive: true });

const browser = await launchChromium(cfg.chromium);
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => m.type() === "error" && errors.push(m.text()));

let step = "start";
const shot = (name) => page.screenshot({ path: join(cfg.shots, `${name}.png`), fullPage: true });
const log = (s) => console.log(`e2e: ${s}`);
const memberState = (id) =>
  page.locator(`#members .row.member[data-id="${id}"]`).getAttribute("data-state", { timeout: STEP_MS });

async function waitFor(what, fn, arg) {
  step = what;
  log(what);
  await page.waitForFunction(fn, arg, { timeout: STEP_MS, polling: 100 });
}

try {
  step = "open the page";
  await page.goto(cfg.url);
  if (cfg.token) {
    step = "the login form is shown without a token";
    await page.locator("#login").waitFor({ state: "visible", timeout: STEP_MS });
    await page.fill("#token", "not-the-token");
    await page.click("#login-form button");
    await page.locator("#login-error").filter({ hasText: "does not open" }).waitFor({ timeout: STEP_MS });
    await shot("0-login-refused");
    await page.fill("#token", cfg.token);
    await page.click("#login-form button");
    // The refused login logged its 401; from here on, any error is a failure.
    errors.length = 0;
  }
  await waitFor(
    "three alive members listed",
    (ids) => ids.every((id) => document.querySelector(`#members .row.member[data-id="${id}"][data-state="alive"]`)),
    cfg.ids,
  );
  await page.locator("#quorum").filter({ hasText: "in majority" }).waitFor({ timeout: STEP_MS });
  await shot("1-three-alive");

  const actor = "e2e-billing";
  step = "add an actor through the CLI";
  execFileSync(cfg.node_bin, ["actors", "add", "--connect", cfg.connect, ...cfg.admin_args, actor]);
  await waitFor(
    "the new actor appears",
    (a) => document.querySelector(`#actors .row.actor[data-actor="${a}"]`),
    actor,
  );
  await shot("2-actor-added");

  const loadedAt = await page.evaluate(() => window.dashboard.loadedAt);
  step = "kill the victim";
  process.kill(cfg.victim.pid, "SIGKILL");
  log(`killed ${cfg.victim.id} (pid ${cfg.victim.pid})`);
  await waitFor(
    "the victim turns suspect",
    (id) => document.querySelector(`#members .row.member[data-id="${id}"][data-state="suspect"]`),
    cfg.victim.id,
  );
  await shot("3-victim-suspect");
  await waitFor(
    "the victim turns dead",
    (id) => document.querySelector(`#members .row.member[data-id="${id}"][data-state="dead"]`),
    cfg.victim.id,
  );
  await waitFor(
    "the feed shows the suspicion and the death",
    (id) =>
      document.querySelector(`#feed li[data-kind="suspect"][data-node="${id}"]`) &&
      document.querySelector(`#feed li[data-kind="dead"][data-node="${id}"]`),
    cfg.victim.id,
  );
  step = "no reload happened";
  if ((await page.evaluate(() => window.dashboard.loadedAt)) !== loadedAt) throw new Error("the page reloaded its snapshot");
  await shot("4-victim-dead");

  step = "feed order: newest first";
  const kinds = await page.$$eval(`#feed li[data-node="${cfg.victim.id}"]`, (li) => li.map((x) => x.dataset.kind));
  if (kinds.indexOf("dead") > kinds.indexOf("suspect")) throw new Error(`feed not newest first: ${kinds}`);

  await page.fill("#search", cfg.victim.id);
  await waitFor(
    "the search box filters members to the victim",
    (id) => {
      const rows = [...document.querySelectorAll("#members .row.member:not([hidden])")];
      return rows.length === 1 && rows[0].dataset.id === id;
    },
    cfg.victim.id,
  );
  await page.fill("#search", actor);
  await waitFor(
    "the search box filters actors",
    (a) => {
      const rows = [...document.querySelectorAll("#actors .row.actor:not([hidden])")];
      const members = document.querySelectorAll("#members .row.member:not([hidden])");
      return rows.length === 1 && rows[0].dataset.actor === a && members.length === 0;
    },
    actor,
  );
  await shot("5-search");
  await page.fill("#search", "");
  await waitFor(
    "clearing the search shows every member again",
    (n) => document.querySelectorAll("#members .row.member:not([hidden])").length === n,
    cfg.ids.length,
  );
  step = "no script errors";
  if (errors.length) throw new Error(`errors on the page: ${errors.join(" | ")}`);
  log("all steps passed");
} catch (e) {
  console.error(`e2e FAILED at step "${step}": ${e.message}`);
  if (errors.length) console.error(`page errors: ${errors.join(" | ")}`);
  await shot("failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
