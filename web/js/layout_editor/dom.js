// DOM helpers and the stylesheet of the layout editor (ComfyUI's CSS variables, so it follows the theme).

const STYLE_ID = "instdiff-layout-editor-style";
const STYLE = `
.instdiff-le { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%; box-sizing: border-box;
  font: 12px sans-serif; color: var(--input-text, #ddd); overflow: hidden; }
.instdiff-le-bar { display: flex; flex-wrap: wrap; gap: 3px; align-items: center; }
.instdiff-le button { background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd);
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 2px 7px; cursor: pointer; font-size: 12px; }
.instdiff-le button.active { background: #2f6fb5; border-color: #5a9be0; color: #fff; }
.instdiff-le button:disabled { opacity: 0.4; cursor: default; }
.instdiff-le input[type=text] { background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd);
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 2px 5px; font-size: 12px; min-width: 0; }
.instdiff-le-caption { display: flex; gap: 4px; align-items: center; }
.instdiff-le-caption input { flex: 1; }
.instdiff-le-stage { flex: 1 1 auto; min-height: 160px; position: relative; }
.instdiff-le-json { flex: 0 0 auto; height: 120px; resize: vertical; box-sizing: border-box; width: 100%;
  font: 11px monospace; background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd);
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 3px 5px; }
.instdiff-le-stage canvas { position: absolute; inset: 0; width: 100%; height: 100%; outline: none; touch-action: none; }
.instdiff-le-stage.focused canvas { box-shadow: 0 0 0 1px #5a9be0; }
.instdiff-le-keys { position: absolute; left: 0; top: 0; width: 1px; height: 1px; opacity: 0; resize: none;
  border: 0; padding: 0; pointer-events: none; }
.instdiff-le-list { position: relative; flex: 0 0 auto; max-height: 112px; overflow-y: auto; display: flex; flex-direction: column; gap: 2px; }
.instdiff-le-row { display: flex; gap: 4px; align-items: center; padding: 1px 2px; border-radius: 3px; }
.instdiff-le-row.selected { background: rgba(90, 155, 224, 0.25); }
.instdiff-le-row input { flex: 1; }
.instdiff-le-row input.missing { border-color: #e05a5a; }
.instdiff-le-swatch { width: 12px; height: 12px; border-radius: 2px; flex: 0 0 auto; }
.instdiff-le-num { width: 18px; text-align: right; opacity: 0.8; }
.instdiff-le-kinds { font-size: 10px; opacity: 0.75; width: 92px; white-space: nowrap; overflow: hidden; }
.instdiff-le-status { min-height: 15px; font-size: 11px; opacity: 0.85; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.instdiff-le-status.error { color: #ff7b7b; opacity: 1; }
.instdiff-le-status.warn { color: #f0b44c; opacity: 1; }
.instdiff-le-warnings { flex: 0 0 auto; font-size: 11px; color: #f0b44c; max-height: 44px; overflow-y: auto;
  white-space: normal; overflow-wrap: anywhere; }
`;

export function ensureStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = STYLE;
  document.head.appendChild(style);
}

export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "className") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}
