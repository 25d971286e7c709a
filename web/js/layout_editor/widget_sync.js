// Notices every change of a widget's value, whoever makes it: the widget's own UI, the Vue node renderer of newer
// frontends (Nodes 2.0), a workflow being loaded, another extension. The editor used to pick such changes up in
// onDrawForeground, which the Vue renderer does not call; a property hook on `value` does not depend on drawing.

/** Wrap `widget.value` so that `onChange(value)` runs after each assignment (reads are unchanged). Works for a plain
 *  data property and for an accessor on the widget or its prototype (class widgets). Returns an `unwatch()` that
 *  puts the original back, or null if `value` cannot be redefined. */
export function watchWidgetValue(widget, onChange) {
  let owner = widget;
  let desc;
  while (owner && !(desc = Object.getOwnPropertyDescriptor(owner, "value"))) owner = Object.getPrototypeOf(owner);
  const own = owner === widget;
  if (own && desc && !desc.configurable) return null;
  let stored = widget.value;
  const accessor = !!(desc && (desc.get || desc.set));
  const get = accessor ? () => desc.get?.call(widget) : () => stored;
  const set = accessor ? (v) => desc.set?.call(widget, v) : (v) => { stored = v; };
  Object.defineProperty(widget, "value", {
    configurable: true,
    enumerable: desc ? desc.enumerable : true,
    get,
    set(v) {
      set(v);
      onChange(v);
    },
  });
  return () => {
    if (own && desc) {
      if (!accessor) desc.value = stored;
      Object.defineProperty(widget, "value", desc);
    } else {
      const value = get();
      delete widget.value;
      if (!accessor) widget.value = value;
    }
  };
}
