// Browser run of web/js/node_warnings.js against a running ComfyUI (started by test_editor_e2e.py): builds
// Instance Layout -> Instance: Box (partly off the canvas) -> Layout Preview -> Preview Image, queues it, reads the
// amber warnings box on the Instance: Box node, then moves the box onto the canvas, queues again and checks that the
// box is gone. Prints one JSON object with what it saw on stdout; takes a screenshot of each state.
//
// usage: node node_warnings_e2e.mjs <comfyui url> <screenshot.png> [chromium executable]

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const [url, shot, executable = process.env.CHROMIUM_PATH || "/usr/bin/chromium"] = process.argv.slice(2);
if (!url || !shot) {
  console.error("usage: node node_warnings_e2e.mjs <comfyui url> <screenshot.png> [chromium executable]");
  process.exit(2);
}
const vue = process.env.INSTDIFF_E2E_VUE === "1";

const context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), "instdiff-nw-")), {
  executablePath: executable, headless: true, viewport: { width: 1300, height: 800 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
});
const page = context.pages()[0] ?? (await context.newPage());
// uncaught errors from this pack's scripts fail the test; the frontend's own (frontend 1.27 throws one at start-up
// from a core setting's onChange) are reported only
const out = { ok: false, pageErrors: [], otherErrors: [], screenshots: [] };
page.on("pageerror", (e) =>
  (String(e.stack).includes("comfyui-instdiff") ? out.pageErrors : out.otherErrors).push(String(e.stack || e)));

async function runAndWait() {
  await page.evaluate(() => { window.nw.executed = []; window.nw.errors = []; });
  await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0));
  await page.waitForFunction(() => window.nw.executed.some((d) => d.output?.images) || window.nw.errors.length,
    null, { timeout: 120000 });
  await page.waitForTimeout(1000);        // the frontend handles `executed` after our listener
}

try {
  await page.request.post(new URL("api/settings/Comfy.TutorialCompleted", url).href, { data: true });
  await page.request.post(new URL("api/settings/Comfy.VueNodes.Enabled", url).href, { data: vue });
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => {
    const a = window.comfyAPI?.app?.app;
    return a?.graph && a.extensions?.some((e) => e.name === "comfyui-instdiff.NodeWarnings");
  }, null, { timeout: 120000 });
  await page.waitForTimeout(1500);
  out.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  const id = await page.evaluate(() => {
    const app = window.comfyAPI.app.app;
    const LG = window.LiteGraph;
    app.graph.clear();
    const add = (type, pos) => { const n = LG.createNode(type); n.pos = pos; app.graph.add(n); return n; };
    const set = (n, name, v) => { n.widgets.find((w) => w.name === name).value = v; };
    const canvas = add("InstanceLayout", [20, 20]);
    set(canvas, "width", 256); set(canvas, "height", 128);
    const box = add("InstanceBox", [300, 20]);
    set(box, "prompt", "a long bus"); set(box, "x", 200); set(box, "y", 10); set(box, "width", 100); set(box, "height", 50);
    const preview = add("InstanceLayoutPreview", [650, 20]);
    const image = add("PreviewImage", [650, 200]);
    canvas.connect(0, box, 0); box.connect(0, preview, 0); preview.connect(0, image, 0);
    window.nw = { executed: [], errors: [] };
    window.comfyAPI.api.api.addEventListener("executed", (e) => window.nw.executed.push(e.detail));
    window.comfyAPI.api.api.addEventListener("execution_error", (e) => window.nw.errors.push(e.detail));
    app.canvas.setDirty(true, true);
    return box.id;
  });
  const state = () => page.evaluate((id) => {
    const n = window.comfyAPI.app.app.graph.getNodeById(id);
    const w = n.widgets.find((x) => x.name === "instdiff_warnings");
    const el = w?.element;
    const r = el?.getBoundingClientRect();
    return { shown: !!(el && el.isConnected && r && r.width > 0 && r.height > 0), text: el?.value ?? "",
             readOnly: el?.readOnly ?? null, colour: el ? getComputedStyle(el).color : null,
             widgetsValues: n.serialize().widgets_values, errors: window.nw.errors.map((e) => e.exception_message) };
  }, id);

  await runAndWait();
  out.warned = await state();
  out.promptInputs = await page.evaluate(async (id) =>
    Object.keys((await window.comfyAPI.app.app.graphToPrompt()).output[String(id)].inputs), id);
  await page.screenshot({ path: shot });
  out.screenshots.push(shot);

  await page.evaluate((id) => {
    window.comfyAPI.app.app.graph.getNodeById(id).widgets.find((w) => w.name === "x").value = 10;
  }, id);
  await runAndWait();
  out.clean = await state();
  const cleanShot = shot.replace(/\.png$/, "-clean.png");
  await page.screenshot({ path: cleanShot });
  out.screenshots.push(cleanShot);
  out.ok = true;
} catch (e) {
  out.error = String(e.stack || e);
}
console.log(JSON.stringify(out));
await context.close();
