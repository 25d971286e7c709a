import { describe, expect, it } from "vitest";
import { UndoStack } from "../../web/js/layout_editor/undo_stack.js";

describe("undo stack", () => {
  it("walks back and forth through recorded states", () => {
    const s = new UndoStack();
    let current = "a";
    for (const next of ["b", "c"]) {
      s.record(current);
      current = next;
    }
    current = s.undo(current);
    expect(current).toBe("b");
    current = s.undo(current);
    expect(current).toBe("a");
    expect(s.undo(current)).toBeNull();
    current = s.redo(current);
    expect(current).toBe("b");
    current = s.redo(current);
    expect(current).toBe("c");
    expect(s.redo(current)).toBeNull();
  });

  it("forgets the redo branch on a new edit and ignores repeated snapshots", () => {
    const s = new UndoStack();
    s.record("a");
    s.record("a");
    expect(s.past).toHaveLength(1);
    expect(s.undo("b")).toBe("a");
    s.record("a");
    expect(s.canRedo).toBe(false);
  });

  it("keeps at most `limit` steps", () => {
    const s = new UndoStack(3);
    for (const v of ["1", "2", "3", "4", "5"]) s.record(v);
    expect(s.past).toEqual(["3", "4", "5"]);
  });
});
