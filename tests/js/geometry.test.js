import { describe, expect, it } from "vitest";
import {
  boxToXywh, clampPoint, clampTranslation, clientToElement, closesPolygon, distanceToPolyline, fitView, handleAt,
  isUsableBox, layoutToView, normalizeBox, pointInPolygon, polygonArea, polylineLength, resamplePolyline, resizeBox,
  viewToLayout, xywhToBox,
} from "../../web/js/layout_editor/geometry.js";

describe("canvas <-> layout transforms", () => {
  it("fits the canvas into the area keeping its aspect ratio, centred", () => {
    const v = fitView(768, 512, 400, 400);
    expect(v.scale).toBeCloseTo(400 / 768);
    expect(v.ox).toBeCloseTo(0);
    expect(v.oy).toBeCloseTo((400 - 512 * v.scale) / 2);
    const tall = fitView(512, 1024, 300, 300, 10);
    expect(tall.scale).toBeCloseTo(280 / 1024);
    expect(tall.oy).toBeCloseTo(10);
  });

  it("maps layout pixels to view pixels and back", () => {
    const v = fitView(640, 480, 333, 211, 4);
    for (const [x, y] of [[0, 0], [640, 480], [123.5, 77.25]]) {
      const [vx, vy] = layoutToView(v, x, y);
      const [bx, by] = viewToLayout(v, vx, vy);
      expect(bx).toBeCloseTo(x, 9);
      expect(by).toBeCloseTo(y, 9);
    }
    const [cx, cy] = layoutToView(v, 320, 240);
    expect(cx).toBeCloseTo(333 / 2);
    expect(cy).toBeCloseTo(211 / 2);
  });

  it("undoes ComfyUI's zoom transform on pointer coordinates", () => {
    // element is 200x100 CSS pixels, shown at zoom 2 -> 400x200 on screen at (50, 30)
    const rect = { left: 50, top: 30, width: 400, height: 200 };
    expect(clientToElement(450, 230, rect, 200, 100)).toEqual([200, 100]);
    expect(clientToElement(150, 80, rect, 200, 100)).toEqual([50, 25]);
  });

  it("rejects a canvas without size", () => {
    expect(() => fitView(0, 512, 100, 100)).toThrow(/positive/);
  });
});

describe("boxes", () => {
  it("orders corners, clamps to the canvas and rounds", () => {
    expect(normalizeBox(300.4, 200.6, 100.2, -20, 256, 256)).toEqual([100, 0, 256, 201]);
  });

  it("converts between corners and official [x, y, w, h]", () => {
    const corners = [10, 20, 110, 70];
    expect(boxToXywh(corners)).toEqual([10, 20, 100, 50]);
    expect(xywhToBox(boxToXywh(corners))).toEqual(corners);
  });

  it("treats tiny drags as clicks", () => {
    expect(isUsableBox([5, 5, 6, 40])).toBe(false);
    expect(isUsableBox([5, 5, 9, 40])).toBe(true);
  });

  it("finds handles, corners before edge midpoints", () => {
    const b = [100, 100, 200, 160];
    expect(handleAt(b, 101, 99, 4)).toBe("nw");
    expect(handleAt(b, 150, 161, 4)).toBe("s");
    expect(handleAt(b, 199, 130, 4)).toBe("e");
    expect(handleAt(b, 150, 130, 4)).toBeNull();
  });

  it("resizes from a handle without flipping or leaving the canvas", () => {
    const b = [100, 100, 200, 160];
    expect(resizeBox(b, "se", 250, 300, 512, 256)).toEqual([100, 100, 250, 256]);
    expect(resizeBox(b, "w", 500, 130, 512, 512)).toEqual([198, 100, 200, 160]); // keeps the minimum size
    expect(resizeBox(b, "n", 150, -40, 512, 512)).toEqual([100, 0, 200, 160]);
  });
});

describe("hit testing helpers", () => {
  it("measures the distance to a polyline", () => {
    const line = [[0, 0], [10, 0], [10, 10]];
    expect(distanceToPolyline(line, 5, 3)).toBeCloseTo(3);
    expect(distanceToPolyline(line, 13, 5)).toBeCloseTo(3);
    expect(distanceToPolyline(line, -4, -3)).toBeCloseTo(5);
  });

  it("tests points against polygons with the even-odd rule", () => {
    const square = [[0, 0], [10, 0], [10, 10], [0, 10]];
    expect(pointInPolygon(square, 5, 5)).toBe(true);
    expect(pointInPolygon(square, 15, 5)).toBe(false);
    const concave = [[0, 0], [10, 0], [10, 10], [5, 3], [0, 10]];
    expect(pointInPolygon(concave, 5, 8)).toBe(false);
    expect(pointInPolygon(concave, 2, 2)).toBe(true);
  });

  it("computes polygon areas in either winding", () => {
    const tri = [[0, 0], [4, 0], [0, 3]];
    expect(polygonArea(tri)).toBeCloseTo(6);
    expect(polygonArea([...tri].reverse())).toBeCloseTo(6);
    expect(polygonArea([[0, 0], [5, 5], [10, 10]])).toBeCloseTo(0);
  });

  it("closes a polygon near its first corner only after three corners", () => {
    expect(closesPolygon([[0, 0], [10, 0]], 1, 1, 3)).toBe(false);
    expect(closesPolygon([[0, 0], [10, 0], [10, 10]], 1, 1, 3)).toBe(true);
    expect(closesPolygon([[0, 0], [10, 0], [10, 10]], 5, 5, 3)).toBe(false);
  });

  it("keeps points on the canvas and limits moves to it", () => {
    expect(clampPoint(-3, 600.6, 512, 512)).toEqual([0, 512]);
    expect(clampTranslation([10, 20, 50, 60], -30, 500, 100, 100)).toEqual([-10, 40]);
  });
});

describe("scribble resampling", () => {
  it("gives 20 points equally spaced along the stroke, ends kept, in drawing order", () => {
    const stroke = [[0, 0], [30, 0], [30, 40], [31, 40], [31, 40]];
    const out = resamplePolyline(stroke);
    expect(out).toHaveLength(20);
    expect(out[0]).toEqual([0, 0]);
    expect(out[19]).toEqual([31, 40]);
    const step = polylineLength(stroke) / 19;
    for (let k = 1; k < 20; k++) {
      // consecutive samples on the same straight piece are exactly one step apart; across the corner, less
      const d = Math.hypot(out[k][0] - out[k - 1][0], out[k][1] - out[k - 1][1]);
      expect(d).toBeLessThanOrEqual(step + 1e-9);
    }
    const arc = (p) => (p[1] === 0 ? p[0] : p[1] < 40 ? 30 + p[1] : 70 + (p[0] - 30)); // arc length along the stroke
    out.forEach((p, k) => expect(arc(p)).toBeCloseTo(Math.min(k * step, 71), 6));
  });

  it("supports any count and refuses strokes without length", () => {
    expect(resamplePolyline([[0, 0], [9, 0]], 4).map((p) => p[0])).toEqual([0, 3, 6, 9]);
    expect(resamplePolyline([[5, 5], [5, 5]])).toBeNull();
    expect(resamplePolyline([[5, 5]])).toBeNull();
    expect(() => resamplePolyline([[0, 0], [1, 1]], 1)).toThrow(/at least 2/);
  });
});
