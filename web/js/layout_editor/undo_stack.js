// Undo/redo over whole layout texts: the layout JSON is small (masks are compressed RLE) and is the single source
// of truth, so a snapshot of the text before each edit is simpler and safer than inverse operations. Pure.

export class UndoStack {
  constructor(limit = 100) {
    this.limit = limit;
    this.past = [];
    this.future = [];
  }

  /** Remember `state` (the text before an edit); a new edit forgets the redo branch. Repeats are ignored. */
  record(state) {
    if (this.past.length && this.past[this.past.length - 1] === state) return;
    this.past.push(state);
    if (this.past.length > this.limit) this.past.shift();
    this.future = [];
  }

  get canUndo() {
    return this.past.length > 0;
  }

  get canRedo() {
    return this.future.length > 0;
  }

  /** The state to go back to from `current`, or null when there is nothing to undo. */
  undo(current) {
    if (!this.past.length) return null;
    this.future.push(current);
    return this.past.pop();
  }

  /** The state to go forward to from `current`, or null when there is nothing to redo. */
  redo(current) {
    if (!this.future.length) return null;
    this.past.push(current);
    return this.future.pop();
  }

  clear() {
    this.past = [];
    this.future = [];
  }
}
