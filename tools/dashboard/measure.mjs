// Measures the dashboard in Debian's chromium: load time, JS heap, a search and a scroll,
// against the node at argv[2] (HOST:PORT; see tools/dashboard/measure). Prints one JSON
// object. Figures, not checks: it fails only if the page never loads.

import { launchChromium } from "../../tests/dashboard/browser.mjs";

const http = process.argv[2];
const runs = Number(process.argv[3] || 3);
const browser = await launchChromium(process.env.GOSSIP_CHROMIUM || "/usr/bin/chromium", [
  "--enable-precise-memory-info",
]);

const snapBytes = (await (await fetch(`http://${http}/api/snapshot`)).text()).length;
const results = [];
for (let run = 0; run < runs; run++) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  await page.goto(`http://${http}/`);
  await page.waitForFunction(() => window.dashboard && window.dashboard.loadedAt !== null, null, {
    timeout: 120_000,
    polling: 50,
  });
  const load = await page.evaluate(() => ({
    // From the start of navigation to the snapshot drawn (members and actors listed).
    loaded_ms: window.dashboard.loadedAt,
    members: window.dashboard.members,
    actors: window.dashboard.actors,
    dom_nodes: document.getElementsByTagName("*").length,
  }));
  await page.waitForTimeout(1500);
  await cdp.send("HeapProfiler.enable");
  await cdp.send("HeapProfiler.collectGarbage");
  const metrics = Object.fromEntries(
    (await cdp.send("Performance.getMetrics")).metrics.map((m) => [m.name, m.value]),
  );
  // A search over every member and actor, timed from the input to the lists redrawn.
  const search_ms = await page.evaluate(async () => {
    const box = document.getElementById("search");
    const t0 = performance.now();
    box.value = "m0999-actor-00099";
    box.dispatchEvent(new Event("input"));
    while (document.getElementById("actors-count").textContent.split(" ")[0] !== "1") {
      await new Promise((r) => requestAnimationFrame(r));
    }
    return performance.now() - t0 - 80; // less the input debounce
  });
  await page.fill("#search", "");
  await page.waitForFunction(() => document.getElementById("shown").textContent === "");
  // A jump to the end of 100,000 actor rows: time to the next two frames drawn.
  const scroll_ms = await page.evaluate(async () => {
    const list = document.getElementById("actors");
    const t0 = performance.now();
    list.scrollTop = list.scrollHeight;
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    return performance.now() - t0;
  });
  results.push({
    ...load,
    js_heap_used_mb: +(metrics.JSHeapUsedSize / 2 ** 20).toFixed(1),
    js_heap_total_mb: +(metrics.JSHeapTotalSize / 2 ** 20).toFixed(1),
    search_ms: +search_ms.toFixed(1),
    scroll_ms: +scroll_ms.toFixed(1),
  });
  await page.close();
}
await browser.close();
console.log(JSON.stringify({ snapshot_bytes: snapBytes, runs: results }, null, 1));
