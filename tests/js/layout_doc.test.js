import { describe, expect, it } from "vitest";
import {
  LayoutTextError, MAX_INSTANCES, SLOT_LIMIT_MESSAGE, annoBox, canAddInstance, annoScribble, emptyLayout, hitTest, instanceColour, layoutIssues, modalitiesOf,
  parseLayoutText, scaleLayout, serializeLayout, setBox, translateAnno,
} from "../../web/js/layout_editor/layout_doc.js";
import { decodeRLE, emptyMask, encodeRLE, fillPolygons, maskBounds, maskValueToBitmap } from "../../web/js/layout_editor/mask_bitmap.js";

const demo = {
  caption: "a kitchen",
  width: 512,
  height: 512,
  annos: [
    { category_name: "dog", caption: "a corgi", bbox: [100, 200, 150, 120], mask: [], extra: 1 },
    { caption: "a mug", point: [400.5, 100] },
    { caption: "a cable", scribble: [10, 10, 50, 60, 90, 10] },
  ],
};

describe("layout text", () => {
  it("round-trips the official JSON, keeping unknown keys and official key order", () => {
    const text = serializeLayout(parseLayoutText(JSON.stringify(demo)));
    expect(JSON.parse(text)).toEqual(demo);
    const firstAnno = text.split("\n").find((l) => l.includes("corgi"));
    expect(firstAnno.indexOf('"caption"')).toBeLessThan(firstAnno.indexOf('"bbox"'));
    expect(firstAnno.indexOf('"bbox"')).toBeLessThan(firstAnno.indexOf('"category_name"'));
    expect(text.split("\n").filter((l) => l.trim().startsWith('{"caption"'))).toHaveLength(3); // one line each
  });

  it("reads empty text as an empty layout of the fallback canvas", () => {
    expect(parseLayoutText("  ", 640, 384)).toEqual(emptyLayout(640, 384));
  });

  it("fills a missing canvas size and annos, and rejects what cannot be drawn", () => {
    expect(parseLayoutText('{"caption": "x"}', 300, 200)).toMatchObject({ width: 300, height: 200, annos: [] });
    expect(() => parseLayoutText('{"width": -5, "height": 10, "annos": []}')).toThrow(/"width" is -5/);
    expect(() => parseLayoutText('{"annos": {}}')).toThrow(/must be a list/);
    expect(() => parseLayoutText('{"annos": [3]}')).toThrow(/annos\[0\]/);
    expect(() => parseLayoutText("[1, 2]")).toThrow(LayoutTextError);
  });

  it("points at the line of a JSON syntax error", () => {
    const bad = '{\n "caption": "a",\n "annos": [\n  {"caption": "b" "bbox": [1, 2, 3, 4]}\n ]\n}';
    expect(() => parseLayoutText(bad)).toThrow(/line 4/);
  });
});

describe("geometry of instances", () => {
  it("reads boxes as corners and flat scribbles as pairs", () => {
    const doc = parseLayoutText(JSON.stringify(demo));
    expect(annoBox(doc.annos[0])).toEqual([100, 200, 250, 320]);
    expect(annoScribble(doc.annos[2])).toEqual([[10, 10], [50, 60], [90, 10]]);
    expect(doc.annos.map(modalitiesOf)).toEqual([["box"], ["point"], ["scribble"]]);
  });

  it("reports what the Python loader would reject", () => {
    const doc = emptyLayout(100, 100);
    doc.annos.push({ caption: "  ", bbox: [1, 1, 5, 5] }, { caption: "a cat" });
    expect(layoutIssues(doc)).toEqual(["instance 0 has no prompt", "instance 1 has no box, point, scribble or mask"]);
    doc.annos = Array.from({ length: 31 }, () => ({ caption: "x", point: [1, 1] }));
    expect(layoutIssues(doc)[0]).toMatch(/31 instances.*30 slots/);
  });

  it("a box entirely outside the canvas is an issue; partly outside is left to the loader, which clips it", () => {
    const doc = emptyLayout(100, 80);
    doc.annos.push({ caption: "a", bbox: [90, 10, 30, 30] }, { caption: "b", bbox: [120, 10, 30, 30] },
      { caption: "c", bbox: [-40, 10, 40, 30] }, { caption: "d", bbox: [10, 80, 5, 5] });
    expect(layoutIssues(doc)).toEqual([
      "instance 1's box [120, 10, 30, 30] lies entirely outside the 100x80 canvas; move it onto the canvas or delete it",
      "instance 2's box [-40, 10, 40, 30] lies entirely outside the 100x80 canvas; move it onto the canvas or delete it",
      "instance 3's box [10, 80, 5, 5] lies entirely outside the 100x80 canvas; move it onto the canvas or delete it",
    ]);
  });

  it("moves every location of an instance, never off the canvas", () => {
    const w = 64;
    const h = 48;
    const bits = fillPolygons(emptyMask(w, h), w, h, [[[10, 10], [20, 10], [20, 20], [10, 20]]]);
    const anno = { caption: "a", bbox: [5, 5, 20, 20], point: [12, 12], scribble: [[6, 6], [24, 24]], mask: encodeRLE(bits, w, h) };
    const moved = translateAnno(anno, 100, -2, w, h, bits);
    expect(moved).toEqual([w - 25, -2]); // the box's right edge (25) stops at the canvas edge
    expect(annoBox(anno)).toEqual([5 + w - 25, 3, w, 23]);
    expect(anno.point).toEqual([12 + w - 25, 10]);
    expect(anno.scribble[1]).toEqual([24 + w - 25, 22]);
    expect(maskBounds(decodeRLE(anno.mask, w, h), w, h)).toEqual([10 + w - 25, 8, 20 + w - 25, 18]);
  });

  it("moves polygon masks by their vertices", () => {
    const anno = { caption: "a", mask: [[10, 10, 30, 10, 30, 30]] };
    const bits = maskValueToBitmap(anno.mask, 100, 100);
    expect(translateAnno(anno, 5, 7, 100, 100, bits)).toEqual([5, 7]);
    expect(anno.mask).toEqual([[15, 17, 35, 17, 35, 37]]);
  });

  it("scales a layout to a new canvas size", () => {
    const doc = parseLayoutText(JSON.stringify(demo));
    const bits = fillPolygons(emptyMask(512, 512), 512, 512, [[[0, 0], [256, 0], [256, 128], [0, 128]]]);
    doc.annos.push({ caption: "rle", mask: encodeRLE(bits, 512, 512) }, { caption: "poly", mask: [[0, 0, 100, 0, 100, 50]] });
    const big = scaleLayout(doc, 1024, 256);
    expect(big.width).toBe(1024);
    expect(big.height).toBe(256);
    expect(annoBox(big.annos[0])).toEqual([200, 100, 500, 160]);
    expect(big.annos[1].point).toEqual([801, 50]);
    expect(big.annos[0].category_name).toBe("dog");
    expect(maskBounds(decodeRLE(big.annos[3].mask, 1024, 256), 1024, 256)).toEqual([0, 0, 512, 64]);
    expect(big.annos[4].mask).toEqual([[0, 0, 200, 0, 200, 25]]);
    expect(annoBox(doc.annos[0])).toEqual([100, 200, 250, 320]); // the original is unchanged
  });
});

describe("hit testing", () => {
  const doc = emptyLayout(200, 200);
  doc.annos.push({ caption: "big", bbox: [0, 0, 200, 200] });
  doc.annos.push({ caption: "dot", point: [50, 50] });
  doc.annos.push({ caption: "line", scribble: [[100, 100], [150, 100]] });
  setBox(doc.annos[0], [0, 0, 200, 200]);

  it("prefers thin shapes over areas and later instances over earlier ones", () => {
    expect(hitTest(doc, 52, 49, 3)).toBe(1);
    expect(hitTest(doc, 120, 102, 3)).toBe(2);
    expect(hitTest(doc, 80, 160, 3)).toBe(0); // inside the big box only
    expect(hitTest(doc, 250, 250, 3)).toBe(-1);
  });

  it("hits masks by their pixels", () => {
    const d = emptyLayout(50, 50);
    const bits = fillPolygons(emptyMask(50, 50), 50, 50, [[[10, 10], [20, 10], [20, 20], [10, 20]]]);
    d.annos.push({ caption: "m", mask: encodeRLE(bits, 50, 50) });
    expect(hitTest(d, 15, 15, 2, () => bits)).toBe(0);
    expect(hitTest(d, 30, 30, 2, () => bits)).toBe(-1);
  });
});

describe("colours", () => {
  it("gives 30 distinct colours, matching the preview palette's first entries", () => {
    const colours = Array.from({ length: 30 }, (_, i) => instanceColour(i).join(","));
    expect(new Set(colours).size).toBe(30);
    expect(instanceColour(0)).toEqual([230, 25, 75]);
    for (const c of colours) for (const v of c.split(",").map(Number)) expect(Number.isInteger(v) && v >= 0 && v <= 255).toBe(true);
  });
});

describe("instance slots", () => {
  it("canAddInstance allows exactly 30 instances", () => {
    const doc = emptyLayout(64, 64);
    expect(MAX_INSTANCES).toBe(30);
    for (let i = 0; i < 30; i++) {
      expect(canAddInstance(doc)).toBe(true);
      doc.annos.push({ caption: `x${i}`, point: [i, i] });
    }
    expect(canAddInstance(doc)).toBe(false);
    doc.annos.push({ caption: "one too many", point: [1, 1] }); // pasted JSON may hold more
    expect(canAddInstance(doc)).toBe(false);
    expect(layoutIssues(doc)[0]).toMatch(/31 instances: the model has 30 slots; delete 1/);
    expect(SLOT_LIMIT_MESSAGE).toMatch(/^the model has 30 instance slots; delete one first/);
  });
});
