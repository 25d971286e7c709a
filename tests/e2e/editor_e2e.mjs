// Browser end-to-end run of the Instance Layout Editor against a running ComfyUI (started by test_editor_e2e.py).
// Drives Chromium with real mouse and keyboard input: adds the node (+ a background and a consumer), draws a box, a
// point, a scribble and a brushed mask, types prompts and the caption, checks Delete / Ctrl+Z / Ctrl+Y, queues the
// prompt, waits for the run and takes a screenshot; then the node's default and minimum size, and the last run's
// warnings on the node. Prints one JSON object with what it saw on stdout.
// INSTDIFF_E2E_VUE=1 runs it with the Vue node renderer ("Nodes 2.0", setting Comfy.VueNodes.Enabled, frontends
// that have it); the screenshots then end in -vue.png.
//
// usage: node editor_e2e.mjs <comfyui url> <screenshot.png> [chromium executable]

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const [url, screenshotPath, executable = process.env.CHROMIUM_PATH || "/usr/bin/chromium"] = process.argv.slice(2);
if (!url || !screenshotPath) {
  console.error("usage: node editor_e2e.mjs <comfyui url> <screenshot.png> [chromium executable]");
  process.exit(2);
}

// Canvas size of the editor in this test and what is drawn (layout pixels).
const W = 512;
const H = 384;
const BOX = [[60, 50], [260, 300]];
const POINT = [400, 120];
const SCRIBBLE = [[300, 330], [340, 300], [390, 320], [440, 290], [490, 340]];
const BRUSH = [[420, 200], [470, 230]];
const PROMPTS = { box: "a red fox", point: "a yellow bird", scribble: "a winding path", brush: "a small pond" };
const CAPTION = "a fox and a bird in a meadow";

const VUE = process.env.INSTDIFF_E2E_VUE === "1";
const shotPath = (suffix) => screenshotPath.replace(/\.png$/, "") + suffix + ".png";

const log = [];
const step = (msg) => log.push(`${new Date().toISOString().slice(11, 19)} ${msg}`);
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "instdiff-e2e-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: executable,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1500, height: 1000 },
});
const page = context.pages()[0] ?? (await context.newPage());
const pageErrors = []; // uncaught errors from this pack's scripts (the test fails on them)
const otherErrors = []; // uncaught errors of the frontend itself (reported only)
page.on("pageerror", (e) => (String(e.stack).includes("comfyui-instdiff") ? pageErrors : otherErrors).push(String(e.stack || e)));
page.on("console", (m) => {
  if (m.type() === "error" && m.text().includes("instdiff")) pageErrors.push(m.text());
});

const result = { ok: false, log, pageErrors, otherErrors, vue: VUE, screenshots: [screenshotPath] };
try {
  // a fresh user: skip the first-run template browser
  await page.request.post(new URL("api/settings/Comfy.TutorialCompleted", url).href, { data: true });
  await page.request.post(new URL("api/settings/Comfy.VueNodes.Enabled", url).href, { data: VUE });
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => {
    const app = window.comfyAPI?.app?.app;
    return app?.graph && app.extensions?.some((e) => e.name === "comfyui-instdiff.InstanceLayoutEditor");
  }, null, { timeout: 120000 });
  result.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  result.vueNodesMode = await page.evaluate(() => !!window.LiteGraph?.vueNodesMode);
  step(`frontend ${result.frontendVersion} loaded, extension registered, Vue nodes ${result.vueNodesMode}`);
  // let the start-up workflow finish loading before replacing the graph (clearing it midway races the canvas)
  await page.waitForFunction(() => window.comfyAPI.app.app.canvas && window.comfyAPI.app.app.graph._nodes.length > 0,
    null, { timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(1500);

  // the graph: EmptyImage -> editor.background; editor.layout -> Layout Preview (over the same image) -> Preview Image
  result.nodeIds = await page.evaluate(({ W, H }) => {
    const app = window.comfyAPI.app.app;
    const LG = window.LiteGraph;
    app.graph.clear();
    const add = (type, pos) => {
      const node = LG.createNode(type);
      node.pos = pos;
      app.graph.add(node);
      return node;
    };
    const setWidget = (node, name, value) => { node.widgets.find((w) => w.name === name).value = value; };
    const bg = add("EmptyImage", [20, 420]);
    setWidget(bg, "width", W);
    setWidget(bg, "height", H);
    setWidget(bg, "color", 0x5a7d9a);
    const editor = add("InstanceLayoutEditor", [300, 20]);
    setWidget(editor, "width", W);
    setWidget(editor, "height", H);
    // the node keeps its default size (the point of this check: a comfortable drawing area without resizing)
    const preview = add("InstanceLayoutPreview", [960, 20]);
    const out = add("PreviewImage", [960, 200]);
    out.setSize([400, 400]);
    bg.connect(0, editor, editor.inputs.findIndex((i) => i.name === "background"));
    editor.connect(0, preview, preview.inputs.findIndex((i) => i.name === "layout"));
    bg.connect(0, preview, preview.inputs.findIndex((i) => i.name === "image"));
    preview.connect(0, out, 0);
    app.canvas.ds.scale = 0.9; // not 1: pointer mapping must undo the zoom transform of DOM widgets
    app.canvas.ds.offset = [10, 60];
    app.canvas.setDirty(true, true);
    window.instdiffE2E = { errors: [], executed: [] };
    window.comfyAPI.api.api.addEventListener("execution_error", (e) => window.instdiffE2E.errors.push(e.detail));
    window.comfyAPI.api.api.addEventListener("executed", (e) => window.instdiffE2E.executed.push(e.detail));
    return { background: String(bg.id), editor: String(editor.id), preview: String(preview.id), output: String(out.id) };
  }, { W, H });
  await page.waitForSelector(".instdiff-le canvas", { state: "visible", timeout: 20000 });
  await page.waitForTimeout(800);
  step("graph built, editor visible");

  /** The node's size, its minimum, the drawing area (the canvas picture, node units) and the JSON box's height. */
  const measure = () => page.evaluate((id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    const view = node.instdiffEditor.view;
    view.renderNow();
    const json = node.widgets.find((w) => w.name === "layout_json");
    const box = json.element ?? json.inputEl;
    const jsonBox = box && box.isConnected && box.offsetParent !== null ? box.getBoundingClientRect().height : 0;
    return { size: [...node.size].map(Math.round), min: [...node.computeSize()].map(Math.round),
      stage: [view.stage.clientWidth, view.stage.clientHeight],
      drawing: [Math.round(view.doc.width * view.view.scale), Math.round(view.doc.height * view.view.scale)],
      jsonBox: Math.round(jsonBox), zoom: window.comfyAPI.app.app.canvas.ds.scale };
  }, result.nodeIds.editor);
  result.defaultLayout = await measure();
  step(`default size ${result.defaultLayout.size}: drawing area ${result.defaultLayout.drawing}, JSON box ${result.defaultLayout.jsonBox} px`);

  const editorState = () => page.evaluate((id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    const view = node.instdiffEditor.view;
    return { text: node.widgets.find((w) => w.name === "layout_json").value, selected: view.selected,
      status: view.status.textContent, nodes: window.comfyAPI.app.app.graph._nodes.length };
  }, result.nodeIds.editor);

  /** Screen position of a layout pixel, from the canvas element's on-screen rectangle and the editor's view. */
  const toScreen = async ([x, y]) => page.evaluate(({ id, x, y }) => {
    const view = window.comfyAPI.app.app.graph.getNodeById(Number(id)).instdiffEditor.view;
    view.renderNow(); // the view of the current stage size (a pending frame may not have run yet on a busy machine)
    const c = view.canvas;
    const r = c.getBoundingClientRect();
    const k = r.width / c.clientWidth;
    return [r.left + (view.view.ox + x * view.view.scale) * k, r.top + (view.view.oy + y * view.view.scale) * k];
  }, { id: result.nodeIds.editor, x, y });
  const tool = async (name) => page.locator(".instdiff-le button", { hasText: new RegExp(`^${name}$`) }).click();
  const drag = async (points, steps = 6) => {
    const first = await toScreen(points[0]);
    await page.mouse.move(...first);
    await page.mouse.down();
    for (const p of points.slice(1)) await page.mouse.move(...(await toScreen(p)), { steps });
    await page.mouse.up();
  };

  await tool("Box");
  await drag(BOX, 10);
  await page.keyboard.type(PROMPTS.box); // the new instance's prompt field has the focus
  step("box drawn");
  await tool("Point");
  await page.mouse.click(...(await toScreen(POINT)));
  await page.keyboard.type(PROMPTS.point);
  step("point placed");
  await tool("Scribble");
  await drag(SCRIBBLE, 8);
  await page.keyboard.type(PROMPTS.scribble);
  await page.keyboard.press("Enter"); // back to the canvas
  await page.keyboard.press("Escape"); // deselect: the brush then starts a new instance
  step("scribble drawn");
  await tool("Brush");
  // count pointer events and canvas drawings during the stroke: drawing is batched per animation frame
  await page.evaluate((id) => {
    const view = window.comfyAPI.app.app.graph.getNodeById(Number(id)).instdiffEditor.view;
    const count = (window.instdiffE2E.brushCount = { moves: 0, draws: 0, frames: 0 });
    view.canvas.addEventListener("pointermove", () => count.moves++);
    const tick = () => { count.frames++; if (!count.done) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    const renderNow = view.renderNow;
    view.renderNow = function (...args) {
      count.draws++;
      return renderNow.apply(this, args);
    };
  }, result.nodeIds.editor);
  await drag(BRUSH, 24);
  await page.waitForTimeout(100); // the frame after the release
  result.brushCount = await page.evaluate(() => {
    const count = window.instdiffE2E.brushCount;
    count.done = true;
    return { ...count };
  });
  const { moves, draws, frames } = result.brushCount;
  step(`brush stroke: ${moves} pointer moves, ${draws} canvas draws in ${frames} animation frames`);
  await page.keyboard.type(PROMPTS.brush);
  await page.keyboard.press("Enter");
  step("mask painted");
  await page.locator(".instdiff-le-caption input").click();
  await page.keyboard.type(CAPTION);
  await page.waitForTimeout(400); // the debounced change notice to ComfyUI
  result.afterDrawing = await editorState();

  // keyboard: Delete removes the selected instance (not the graph node), Ctrl+Z / Ctrl+Y undo and redo it
  await tool("Select");
  await page.mouse.click(...(await toScreen([365, 310]))); // on the scribble's 2nd segment
  result.selectedForDelete = (await editorState()).selected;
  await page.keyboard.press("Delete");
  result.afterDelete = await editorState();
  await page.keyboard.press("Control+z");
  result.afterUndo = await editorState();
  await page.keyboard.press("Control+y");
  result.afterRedo = await editorState();
  await page.keyboard.press("Control+z");
  result.final = await editorState();
  step("delete / undo / redo checked");

  // move the box by dragging its inside, then put it back with undo
  await page.mouse.click(...(await toScreen([160, 200])));
  await drag([[160, 200], [200, 220]], 5);
  result.afterMove = await editorState();
  await page.keyboard.press("Control+z");
  result.final = await editorState();

  // a workflow saves the drawing in layout_json (the editor itself is not a saved widget) and loads it back
  result.reloaded = await page.evaluate(async (id) => {
    const app = window.comfyAPI.app.app;
    const workflow = JSON.parse(JSON.stringify(app.graph.serialize()));
    const saved = workflow.nodes.find((n) => String(n.id) === id);
    await app.loadGraphData(workflow);
    const node = app.graph.getNodeById(Number(id));
    return { widgetsValues: saved.widgets_values, text: node.widgets.find((w) => w.name === "layout_json").value,
      annos: node.instdiffEditor.view.doc.annos.length, canUndo: node.instdiffEditor.view.undoStack.canUndo };
  }, result.nodeIds.editor);
  await page.waitForTimeout(800);
  step("workflow saved and loaded back");

  await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0));
  await page.waitForFunction((id) => {
    const view = window.comfyAPI.app.app.graph.getNodeById(Number(id)).instdiffEditor.view;
    return window.instdiffE2E.errors.length || (view.background?.complete && view.background.naturalWidth > 0);
  }, result.nodeIds.editor, { timeout: 120000 });
  result.executionErrors = await page.evaluate(() => window.instdiffE2E.errors);
  result.executed = await page.evaluate(() => window.instdiffE2E.executed.map((d) => d.node));
  if (result.executionErrors.length) throw new Error(`execution failed: ${JSON.stringify(result.executionErrors)}`);
  step("executed: the background came back to the editor");
  await page.waitForTimeout(1500);
  await page.screenshot({ path: screenshotPath });
  result.afterRunLayout = await measure();
  result.status = (await editorState()).status;

  // pasting JSON of another canvas size sets the width/height widgets; changing a widget rescales the drawing
  result.resize = await page.evaluate(async (id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    const w = (name) => node.widgets.find((x) => x.name === name);
    const pasted = { caption: "pasted", width: 768, height: 512, annos: [{ caption: "a tree", bbox: [100, 100, 200, 300] }] };
    w("layout_json").value = JSON.stringify(pasted);
    const afterPaste = [w("width").value, w("height").value];
    w("width").value = 384; // plain value changes (no callback, no drawing): the editor follows them at once
    w("height").value = 256;
    const scaledAtOnce = JSON.parse(w("layout_json").value);
    node.setDirtyCanvas(true, true);
    await new Promise((r) => setTimeout(r, 500));
    return { afterPaste, scaledAtOnce, scaled: JSON.parse(w("layout_json").value) };
  }, result.nodeIds.editor);
  step("paste and canvas resize checked");

  // the other tools on the 384x256 canvas holding "a tree" at corners (50, 50)-(150, 200)
  const stateDoc = async () => JSON.parse((await editorState()).text);
  await tool("Select");
  await page.mouse.click(...(await toScreen([100, 120])));
  await drag([[150, 200], [200, 230]], 5); // the south-east handle
  result.afterResize = await stateDoc();
  await page.keyboard.press("Escape");
  await tool("Polygon");
  for (const p of [[250, 40], [350, 40], [350, 120], [251, 41]]) await page.mouse.click(...(await toScreen(p)));
  await page.keyboard.type("a cloud");
  await page.keyboard.press("Enter");
  result.afterPolygon = await stateDoc();
  await tool("Point");
  await page.keyboard.down("Shift");
  await page.mouse.click(...(await toScreen([300, 60]))); // Shift: the point goes to the selected cloud
  await page.keyboard.up("Shift");
  result.afterShiftPoint = await stateDoc();
  await tool("Brush");
  await page.locator(".instdiff-le button", { hasText: /^Erase$/ }).click();
  await drag([[300, 20], [300, 140]], 6); // erase a vertical stripe out of the cloud's mask
  await page.locator(".instdiff-le button", { hasText: /^Erase$/ }).click();
  result.afterErase = await stateDoc();
  step("resize handle, polygon, shift-point and erase checked");

  // broken JSON typed into the editor's JSON panel (the same text as layout_json, whose own box the Vue renderer
  // does not show): the editor shows the error, refuses to draw, and Undo restores the layout
  const good = (await editorState()).text;
  await tool("JSON");
  result.jsonPanel = await page.locator(".instdiff-le-json").inputValue();
  await page.locator(".instdiff-le-json").fill('{"caption": "oops", ');
  await tool("Box");
  await drag([[20, 20], [80, 80]], 4);
  result.brokenState = await editorState();
  await page.keyboard.press("Control+z");
  result.afterBrokenUndo = await editorState();
  result.goodBeforeBroken = good;
  await tool("JSON");
  step("broken JSON checked");

  // the last run's warnings are shown on the node (amber), and a run without warnings clears them
  const runAndWait = async () => {
    const before = await page.evaluate((id) => window.instdiffE2E.executed.filter((d) => String(d.node) === id).length,
      result.nodeIds.editor);
    await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0));
    await page.waitForFunction(({ id, before }) => window.instdiffE2E.errors.length
      || window.instdiffE2E.executed.filter((d) => String(d.node) === id).length > before,
    { id: result.nodeIds.editor, before }, { timeout: 60000 });
    await page.waitForTimeout(300);
    const errors = await page.evaluate(() => window.instdiffE2E.errors);
    if (errors.length) throw new Error(`execution failed: ${JSON.stringify(errors)}`);
    return page.evaluate((id) => {
      const view = window.comfyAPI.app.app.graph.getNodeById(Number(id)).instdiffEditor.view;
      return { warnings: view.warnings.textContent, shown: view.warnings.offsetHeight > 0,
        colour: getComputedStyle(view.warnings).color, status: view.status.textContent };
    }, result.nodeIds.editor);
  };
  await page.evaluate((id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    // a box reaching over the right edge (the node warns: clipped) and a point at the right edge (label flipped)
    node.widgets.find((w) => w.name === "layout_json").value = JSON.stringify({ caption: "edge", width: 384, height: 256,
      annos: [{ caption: "a long boat on the right edge of the picture", bbox: [300, 200, 120, 80] },
        { caption: "a gull at the edge", point: [380, 40] }, { caption: "a buoy at the bottom", scribble: [[10, 250], [60, 255]] }] });
  }, result.nodeIds.editor);
  result.warnedRun = await runAndWait();
  await page.screenshot({ path: shotPath("-warnings") });
  result.screenshots.push(shotPath("-warnings"));
  await page.evaluate((id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    node.widgets.find((w) => w.name === "layout_json").value = JSON.stringify({ caption: "fine", width: 384, height: 256,
      annos: [{ caption: "a boat", bbox: [200, 100, 120, 80] }] });
  }, result.nodeIds.editor);
  result.cleanRun = await runAndWait();
  step(`run warnings shown (${result.warnedRun.warnings.slice(0, 60)}...) and cleared`);

  // the Vue renderer's own width field (no canvas widget, no drawing hook): the editor follows it at once
  if (result.vueNodesMode) {
    const nodeSel = `[data-node-id="${result.nodeIds.editor}"]`;
    const field = page.locator(`${nodeSel} [aria-label="width"] input, ${nodeSel} input[aria-label="width"]`).first();
    await field.focus();
    await field.press("Control+a");
    await field.pressSequentially("768"); // typed, as a user does (PrimeVue's number field ignores a plain fill)
    await field.press("Enter");
    await field.evaluate((el) => el.blur()); // PrimeVue's number field (older frontends) commits on blur
    await page.waitForTimeout(300);
    result.vueWidthField = await field.evaluate((el) => [el.value, el.getAttribute("aria-valuenow")]);
    result.vueWidthEdit = await page.evaluate((id) => {
      const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
      return { width: node.widgets.find((w) => w.name === "width").value, doc: node.instdiffEditor.view.doc.width,
        layout: JSON.parse(node.widgets.find((w) => w.name === "layout_json").value) };
    }, result.nodeIds.editor);
    step(`Vue width field set to 768: editor canvas ${result.vueWidthEdit.doc}`);
  }

  // the node cannot shrink below its minimum (a prompt field keeps a few words)
  result.minimum = await page.evaluate((id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    const before = [...node.size];
    node.setSize([120, 120]);
    node.setDirtyCanvas(true, true);
    return { shrunk: [...node.size].map(Math.round), before };
  }, result.nodeIds.editor);
  await page.waitForTimeout(600);
  result.minimum.layout = await measure();
  result.minimum.promptWidth = await page.evaluate((id) => {
    const view = window.comfyAPI.app.app.graph.getNodeById(Number(id)).instdiffEditor.view;
    return view.list.querySelector("input")?.clientWidth ?? null;
  }, result.nodeIds.editor);
  await page.screenshot({ path: shotPath("-minimum") });
  result.screenshots.push(shotPath("-minimum"));
  step(`minimum size ${result.minimum.shrunk}: drawing area ${result.minimum.layout.drawing}, prompt field ${result.minimum.promptWidth} px`);
  result.ok = true;
} catch (e) {
  result.error = String(e?.stack || e);
  result.debug = await page.evaluate(() => window.instdiffE2E).catch(() => null);
  try {
    await page.screenshot({ path: screenshotPath });
  } catch {
    // no screenshot after a crash
  }
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + "\n");
