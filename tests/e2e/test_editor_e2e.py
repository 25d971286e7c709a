"""End to end: the layout editor in a real browser against the real ComfyUI server.

Needs COMFYUI_PATH (a ComfyUI checkout), Chromium (Debian's `chromium`, or CHROMIUM_PATH), Node.js and the
repo's node_modules (`npm install`: playwright-core drives the installed Chromium, nothing is downloaded).
Optional: COMFYUI_FRONTEND_PACKAGES, a folder with the host's own pinned frontend packages (scripts/host_deps.py
installs them with `pip install --no-deps --target`; .ci/run does), COMFYUI_FRONTEND_ROOT to serve another frontend
build (`--front-end-root`), INSTDIFF_E2E_SCREENSHOT for the screenshot path (default:
<system temp>/instdiff-e2e/editor.png, outside the repo; the run also writes editor-warnings.png and
editor-minimum.png beside it), INSTDIFF_E2E_VUE=1 to run the editor in the Vue node renderer ("Nodes 2.0", frontends
that have the Comfy.VueNodes.Enabled setting).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from instdiff_testkit.comfy_server import REPO, ComfyServer, is_comfyui_root
from instancediffusion_core.layout.rle import decode_rle, rasterize_polygons

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "editor_e2e.mjs")
# every script under web/ (ComfyUI serves and imports them all), as paths below web/, e.g. "js/layout_editor/view.js"
WEB_JS = sorted(os.path.relpath(os.path.join(d, f), os.path.join(REPO, "web")).replace(os.sep, "/")
                for d, _, files in os.walk(os.path.join(REPO, "web")) for f in files if f.endswith(".js"))


def _missing() -> str | None:
    host = os.environ.get("COMFYUI_PATH", "").strip()
    if not host:
        return "COMFYUI_PATH is not set: point it at a ComfyUI checkout to run the browser test"
    if not is_comfyui_root(host):
        return f"COMFYUI_PATH={host!r} is not a ComfyUI checkout (needs main.py and comfy/)"
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not os.access(chromium, os.X_OK):
        return "Chromium not found: apt-get install chromium (or set CHROMIUM_PATH)"
    if not shutil.which("node"):
        return "Node.js not found: the browser is driven by a Node script (playwright-core)"
    if not os.path.isdir(os.path.join(REPO, "node_modules", "playwright-core")):
        return "node_modules/playwright-core missing: run `npm install` in the repo root"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ComfyServer(os.environ["COMFYUI_PATH"], str(tmp_path_factory.mktemp("comfy_e2e")),
                      frontend_root=os.environ.get("COMFYUI_FRONTEND_ROOT") or None,
                      frontend_packages=os.environ.get("COMFYUI_FRONTEND_PACKAGES") or None)
    srv.start()
    yield srv
    srv.stop()


def test_pack_loads_and_every_script_is_listed_once(server):
    info = server.get_json("object_info/InstanceLayoutEditor")["InstanceLayoutEditor"]
    assert info["category"] == "instance_diffusion/layout"
    assert list(info["input"]["required"]) == ["width", "height", "layout_json"]
    listed = [p for p in server.get_json("extensions") if "instdiff" in p.split("/")[2]]
    names = [p.split("/", 3)[3] for p in listed]                   # /extensions/<pack>/<path below web/>
    assert sorted(names) == WEB_JS, f"/extensions lists {listed}"   # each file once: no second web directory


def _by_caption(annos):
    return {a["caption"]: a for a in annos}


def test_draw_in_the_browser_and_run(server):
    shot = os.environ.get("INSTDIFF_E2E_SCREENSHOT") or os.path.join(tempfile.gettempdir(), "instdiff-e2e",
                                                                     "editor.png")
    vue = os.environ.get("INSTDIFF_E2E_VUE") == "1"
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    proc = subprocess.run(["node", SCRIPT, server.url, shot, chromium], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("screenshots: " + ", ".join(result.get("screenshots", [shot])) + "\n" + "\n".join(result.get("log", [])))
    print(json.dumps({k: result.get(k) for k in ("frontendVersion", "vueNodesMode", "defaultLayout", "afterRunLayout",
                                                  "minimum", "warnedRun", "cleanRun", "otherErrors")}, indent=1))
    assert result["ok"], f"{result.get('error')}\nlog: {result.get('log')}\nserver log:\n{server.log_tail()}"
    assert not result["pageErrors"], result["pageErrors"]
    if vue:
        assert result["vueNodesMode"], "INSTDIFF_E2E_VUE=1 but the frontend did not switch to Vue nodes"

    # the default node size gives a comfortable drawing area (the 512x384 canvas ~>= 400 px wide), the JSON text box
    # stays small (hidden in the Vue renderer) and the node has a minimum size that keeps the editor usable
    default = result["defaultLayout"]
    assert default["drawing"][0] >= 400 and default["stage"][1] >= 300, default
    assert default["jsonBox"] <= (0 if vue else 70), default
    minimum = result["minimum"]
    assert minimum["shrunk"][0] >= 400 and minimum["shrunk"][1] >= 400, minimum
    assert minimum["layout"]["stage"][1] >= 100 and (minimum["promptWidth"] or 0) >= 120, minimum

    # the last run's warnings appear on the node in amber, and the next run without warnings clears them
    warned, clean = result["warnedRun"], result["cleanRun"]
    assert warned["shown"] and "reaches outside the 384x256 canvas" in warned["warnings"], warned
    assert warned["colour"] == "rgb(240, 180, 76)", warned
    assert "1 warning in the last run" in warned["status"], warned
    assert not clean["shown"] and clean["warnings"] == "" and "warning" not in clean["status"], clean
    if vue:   # a value typed into the Vue renderer's own width field reaches the editor (no drawing hook involved)
        edit = result["vueWidthEdit"]
        assert edit["width"] == 768 and edit["doc"] == 768 and edit["layout"]["width"] == 768, edit
        assert edit["layout"]["annos"][0]["bbox"] == [400, 100, 240, 80], edit

    # what the editor wrote into layout_json while drawing
    drawn = json.loads(result["afterDrawing"]["text"])
    assert drawn["caption"] == "a fox and a bird in a meadow" and (drawn["width"], drawn["height"]) == (512, 384)
    annos = _by_caption(drawn["annos"])
    assert set(annos) == {"a red fox", "a yellow bird", "a winding path", "a small pond"}
    assert len(annos["a winding path"]["scribble"]) == 20
    assert annos["a small pond"]["mask"]["size"] == [384, 512]

    # Delete removes the selected instance (not the graph node); Ctrl+Z / Ctrl+Y undo and redo it
    n_nodes = result["afterDrawing"]["nodes"]
    assert result["selectedForDelete"] == 2
    assert [len(json.loads(result[k]["text"])["annos"]) for k in ("afterDelete", "afterUndo", "afterRedo")] == [3, 4, 3]
    assert result["afterDelete"]["nodes"] == n_nodes
    moved = _by_caption(json.loads(result["afterMove"]["text"])["annos"])["a red fox"]["bbox"]
    final = json.loads(result["final"]["text"])
    assert final == drawn                                            # undo brought back the scribble and the box
    box = annos["a red fox"]["bbox"]
    assert abs(moved[0] - box[0] - 40) <= 2 and abs(moved[1] - box[1] - 20) <= 2 and moved[2:] == box[2:]

    # a saved workflow keeps the drawing in layout_json only (widgets_values: width, height, text) and loads back
    reloaded = result["reloaded"]
    assert reloaded["widgetsValues"] == [512, 384, result["final"]["text"]]
    assert reloaded["text"] == result["final"]["text"] and reloaded["annos"] == 4 and not reloaded["canUndo"]

    # pasted JSON of another size sets the canvas widgets; a canvas change scales the instances along
    assert result["resize"]["afterPaste"] == [768, 512]
    scaled = result["resize"]["scaled"]
    assert result["resize"]["scaledAtOnce"] == scaled            # no drawing hook needed to follow widget values
    assert (scaled["width"], scaled["height"]) == (384, 256) and scaled["annos"][0]["bbox"] == [50, 50, 100, 150]

    # resize handle, polygon mask, Shift = location for the selected instance, brush eraser
    assert result["afterResize"]["annos"][0]["bbox"] == [50, 50, 150, 180]  # SE corner dragged to (200, 230)
    tree, cloud = result["afterPolygon"]["annos"]
    assert cloud == {"caption": "a cloud", "mask": [[250, 40, 350, 40, 350, 120]]}   # closed on the first corner
    assert [a.get("point") for a in result["afterShiftPoint"]["annos"]] == [None, [300, 60]]
    erased = result["afterErase"]["annos"][1]["mask"]
    mask = decode_rle(erased)
    polygon = rasterize_polygons(cloud["mask"], 256, 384)
    assert mask.shape == (256, 384) and 0 < mask.sum() < polygon.sum()
    assert not mask[40:120, 298:302].any() and mask[100, 340] and not (mask & ~polygon).any()

    # broken JSON in the text box: shown as an error, no drawing on top of it, Ctrl+Z returns the last good layout
    broken = result["brokenState"]
    assert json.loads(result["jsonPanel"]) == json.loads(result["goodBeforeBroken"])   # the JSON panel shows the text
    assert "not valid JSON at line 1" in broken["status"] and broken["text"] == '{"caption": "oops", '
    assert result["afterBrokenUndo"]["text"] == result["goodBeforeBroken"]

    # the executed prompt: the node validated the same JSON and returned the drawn geometry in canvas pixels
    history = server.wait_for_history(count=3)                     # the drawing, then the two warning runs
    entry = min(history.values(), key=lambda h: h["prompt"][0])
    assert entry["status"]["status_str"] == "success", entry["status"]
    outputs = entry["outputs"]
    ui = outputs[result["nodeIds"]["editor"]]
    executed = _by_caption(ui["instdiff_layout"][0]["annos"])
    x, y, w, h = executed["a red fox"]["bbox"]
    assert abs(x - 60) <= 2 and abs(y - 50) <= 2 and abs(w - 200) <= 3 and abs(h - 250) <= 3, (x, y, w, h)
    px, py = executed["a yellow bird"]["point"]
    assert abs(px - 400) <= 2 and abs(py - 120) <= 2, (px, py)
    assert len(executed["a winding path"]["scribble"]) == 20
    assert executed["a small pond"]["mask"]["counts"] == annos["a small pond"]["mask"]["counts"]
    assert ui["instdiff_background"][0]["type"] == "temp"
    assert outputs[result["nodeIds"]["output"]]["images"], "the layout preview did not reach Preview Image"


def test_node_warnings_show_on_the_node_and_clear(server):
    """web/js/node_warnings.js in the real frontend: Instance: Box with a box partly off the canvas shows the
    clipping warning on the node (read-only, not saved, not sent); a run without warnings removes it."""
    shot = os.path.join(os.path.dirname(os.environ.get("INSTDIFF_E2E_SCREENSHOT") or os.path.join(
        tempfile.gettempdir(), "instdiff-e2e", "editor.png")), "node-warnings.png")
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    proc = subprocess.run(["node", os.path.join(os.path.dirname(SCRIPT), "node_warnings_e2e.mjs"), server.url, shot,
                           chromium], capture_output=True, text=True, timeout=400, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("screenshots: " + ", ".join(result.get("screenshots", [])))
    assert result["ok"], f"{result.get('error')}\nserver log:\n{server.log_tail()}"
    assert not result["pageErrors"], result["pageErrors"]
    warned, clean = result["warned"], result["clean"]
    assert not warned["errors"], warned
    assert warned["shown"] and warned["readOnly"], warned
    assert "instance 0 ('a long bus') box" in warned["text"] and "clipped to corners [200, 10, 256, 60]" in warned["text"]
    assert "instdiff_warnings" not in result["promptInputs"], result["promptInputs"]
    assert all("clipped" not in str(v) for v in warned["widgetsValues"]), warned["widgetsValues"]
    assert not clean["shown"] and not clean["errors"], clean
