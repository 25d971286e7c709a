// ComfyUI imports every .js under web/ as an extension. The editor's modules in web/js/layout_editor/ must be
// harmless then: importable without a DOM, only exporting, touching no globals; only the entry files register
// (the editor, and the warnings shown on the pack's nodes).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";

const WEB = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "web");
const ENTRIES = [path.join("js", "instance_layout_editor.js"), path.join("js", "node_warnings.js")];

function scripts(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) return scripts(p);
    return d.name.endsWith(".js") ? [p] : [];
  });
}

const all = scripts(WEB).map((p) => path.relative(WEB, p));
const modules = all.filter((p) => !ENTRIES.includes(p));

describe("web/ scripts", () => {
  it("the extension entries at web/js, the editor modules below web/js/layout_editor", () => {
    for (const entry of ENTRIES) expect(all).toContain(entry);
    expect(modules.length).toBeGreaterThanOrEqual(10);
    for (const p of modules) expect(p.startsWith(path.join("js", "layout_editor") + path.sep)).toBe(true);
    for (const p of all) {
      const registers = fs.readFileSync(path.join(WEB, p), "utf8").includes("registerExtension(");
      expect(registers, p).toBe(ENTRIES.includes(p));
    }
  });

  it.each(modules)("%s imports without a DOM, exports something and leaves globals alone", async (p) => {
    const saved = ["document", "window", "ResizeObserver", "requestAnimationFrame"].map((k) => [k, globalThis[k]]);
    for (const [k] of saved) delete globalThis[k];
    try {
      const before = new Set(Object.keys(globalThis));
      const mod = await import(pathToFileURL(path.join(WEB, p)).href);
      expect(Object.keys(mod).length).toBeGreaterThan(0);
      expect(Object.keys(globalThis).filter((k) => !before.has(k))).toEqual([]);
    } finally {
      for (const [k, v] of saved) if (v !== undefined) globalThis[k] = v;
    }
  });

  it("relative imports inside web/ resolve to files that exist", () => {
    for (const p of all) {
      const text = fs.readFileSync(path.join(WEB, p), "utf8");
      for (const [, spec] of text.matchAll(/^import[^"]*"(\.[^"]+)";/gm)) {
        const target = path.resolve(path.dirname(path.join(WEB, p)), spec);
        if (target.startsWith(WEB)) expect(fs.existsSync(target), `${p} imports ${spec}`).toBe(true);
      }
    }
  });
});
