import { describe, expect, it } from "vitest";
import {
  decodeCounts, decodeRLE, emptyMask, encodeCounts, encodeRLE, fillPolygons, maskBounds, maskCount, maskToRuns,
  maskValueToBitmap, paintStroke, resampleMask, runsToMask, shiftMask,
} from "../../web/js/layout_editor/mask_bitmap.js";

/** A deterministic pseudo-random mask (blobs and noise), so long and short runs both occur. */
function sampleMask(w, h, seed = 7) {
  const bits = emptyMask(w, h);
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const blob = (x - w / 3) ** 2 + (y - h / 2) ** 2 < (Math.min(w, h) / 4) ** 2;
      bits[y * w + x] = blob !== rnd() < 0.05 ? 1 : 0;
    }
  }
  return bits;
}

describe("COCO RLE", () => {
  it("runs go column-major and start with zeros", () => {
    // 2x2, only (x=0, y=1) set: column-major pixels are 0, 1, 0, 0
    const bits = Uint8Array.from([0, 0, 1, 0]);
    expect(maskToRuns(bits, 2, 2)).toEqual([1, 1, 2]);
    expect(encodeRLE(bits, 2, 2)).toEqual({ size: [2, 2], counts: "112" });
    // first pixel set: a zero-length run of zeros comes first
    expect(maskToRuns(Uint8Array.from([1, 0, 0, 0]), 2, 2)).toEqual([0, 1, 3]);
  });

  it("round-trips masks through the compressed string (long runs, negative deltas)", () => {
    for (const [w, h] of [[37, 23], [128, 96], [300, 1]]) {
      const bits = sampleMask(w, h, w);
      const rle = encodeRLE(bits, w, h);
      expect(rle.size).toEqual([h, w]);
      expect(typeof rle.counts).toBe("string");
      expect(Array.from(decodeRLE(rle, w, h))).toEqual(Array.from(bits));
      const runs = maskToRuns(bits, w, h);
      expect(decodeCounts(encodeCounts(runs))).toEqual(runs);
      expect(runs.reduce((a, b) => a + b, 0)).toBe(w * h);
    }
  });

  it("reads uncompressed list counts too", () => {
    const bits = sampleMask(20, 10);
    const runs = maskToRuns(bits, 20, 10);
    expect(Array.from(decodeRLE({ size: [10, 20], counts: runs }, 20, 10))).toEqual(Array.from(bits));
  });

  it("round-trips runs larger than one character and negative differences", () => {
    const runs = [0, 5000, 3, 70000, 2, 1, 1000000 - 75006];
    expect(decodeCounts(encodeCounts(runs))).toEqual(runs);
  });

  it("names the problem in bad RLE", () => {
    expect(() => decodeRLE({ size: [4, 4], counts: [1, 2] }, 4, 4)).toThrow(/cover 3 pixels/);
    expect(() => decodeRLE({ size: [4, 5], counts: [20] }, 4, 4)).toThrow(/does not match/);
    expect(() => decodeCounts("1\u0001")).toThrow(/invalid character/);
    expect(() => runsToMask([2, -1, 3], 2, 2)).toThrow(/non-negative/);
  });
});

describe("painting and polygons", () => {
  it("paints a disc of the brush radius at a click", () => {
    const bits = paintStroke(emptyMask(40, 40), 40, 40, 20, 20, 20, 20, 5);
    expect(bits[20 * 40 + 20]).toBe(1);
    expect(bits[20 * 40 + 26]).toBe(0);
    const area = maskCount(bits);
    expect(area).toBeGreaterThan(Math.PI * 4.5 * 4.5);
    expect(area).toBeLessThan(Math.PI * 5.5 * 5.5);
  });

  it("paints a capsule along a stroke and erases with value 0", () => {
    const bits = paintStroke(emptyMask(60, 20), 60, 20, 10, 10, 50, 10, 3);
    expect(maskBounds(bits, 60, 20)).toEqual([7, 7, 53, 13]);
    paintStroke(bits, 60, 20, 30, 0, 30, 20, 4, 0);
    expect(bits[10 * 60 + 30]).toBe(0);
    expect(bits[10 * 60 + 20]).toBe(1);
  });

  it("fills polygons at pixel centres, unions several", () => {
    const bits = fillPolygons(emptyMask(20, 20), 20, 20, [[[2, 2], [8, 2], [8, 6], [2, 6]], [[10, 10], [14, 10], [14, 12], [10, 12]]]);
    expect(maskCount(bits)).toBe(6 * 4 + 4 * 2);
    expect(maskBounds(bits, 20, 20)).toEqual([2, 2, 14, 12]);
  });

  it("reads every mask value of the layout JSON", () => {
    const poly = [[2, 2, 8, 2, 8, 6, 2, 6]];
    expect(maskCount(maskValueToBitmap(poly, 10, 10))).toBe(24);
    expect(maskCount(maskValueToBitmap(poly[0], 10, 10))).toBe(24); // a single flat polygon
    expect(maskValueToBitmap([], 10, 10)).toBeNull();
    const bits = sampleMask(10, 10);
    expect(Array.from(maskValueToBitmap(encodeRLE(bits, 10, 10), 10, 10))).toEqual(Array.from(bits));
    expect(() => maskValueToBitmap([[1, 2, 3]], 10, 10)).toThrow(/polygon/);
  });
});

describe("moving and resizing masks", () => {
  it("shifts by whole pixels and drops what leaves the canvas", () => {
    const bits = fillPolygons(emptyMask(10, 10), 10, 10, [[[0, 0], [4, 0], [4, 4], [0, 4]]]);
    const moved = shiftMask(bits, 10, 10, 3, 2);
    expect(maskBounds(moved, 10, 10)).toEqual([3, 2, 7, 6]);
    expect(maskCount(moved)).toBe(16);
    expect(maskCount(shiftMask(bits, 10, 10, -2, 0))).toBe(8);
  });

  it("resamples to another canvas size keeping the relative extent", () => {
    const bits = fillPolygons(emptyMask(100, 50), 100, 50, [[[20, 10], [60, 10], [60, 30], [20, 30]]]);
    const big = resampleMask(bits, 100, 50, 200, 100);
    expect(maskBounds(big, 200, 100)).toEqual([40, 20, 120, 60]);
  });
});
