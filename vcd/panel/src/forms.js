// Forms whose faults land next to the field they name: vcd's fault strings name the
// parameter first ("'max' must be ..."), so the message goes under that input.
import { h, fill } from "./dom.js";
import { Fault } from "./xmlrpc.js";

/** A labelled input with a place for its fault message. */
export function field(label, name, attrs = {}) {
  const input = attrs.options
    ? h("select", { name, id: attrs.id }, attrs.options.map((o) =>
      h("option", { value: o, selected: o === attrs.value }, o)))
    : h("input", { name, type: "text", autocomplete: "off", ...attrs });
  return h("label", {}, label, input, h("small", { class: "fault", dataset: { faultFor: name } }));
}

export function checkbox(label, name, checked = false) {
  return h("label", {}, h("input", { type: "checkbox", name, checked }), label);
}

/** The form's values by input name (checkboxes as booleans, empty fields left out). */
export function values(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.value !== "") out[el.name] = el.value;
  }
  return out;
}

export function clearFaults(form) {
  for (const el of form.querySelectorAll("[data-fault-for]")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** Show an error next to the field it names, or for the whole form. */
export function showFault(form, err) {
  const message = err instanceof Fault ? err.message : String(err.message || err);
  const named = /'([A-Za-z_0-9]+)'/.exec(message);
  const slot = named && form.querySelector(`[data-fault-for="${named[1]}"]`);
  const target = slot || form.querySelector("[data-fault-for='']");
  if (slot) {
    const input = form.elements.namedItem(named[1]);
    if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
  }
  fill(target, message);
}

/**
 * A form: `fields` inside, a submit button, a form-level fault slot; `submit(values)`
 * runs on submit and its fault is shown next to its field.
 */
export function form(fields, buttonLabel, submit, attrs = {}) {
  const button = h("button", { type: "submit" }, buttonLabel);
  const el = h("form", { method: "post", action: "#", ...attrs }, fields, button,
    h("small", { class: "fault", dataset: { faultFor: "" } }));
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFaults(el);
    button.setAttribute("aria-busy", "true");
    button.disabled = true;
    try {
      await submit(values(el), el);
    } catch (err) {
      showFault(el, err);
    } finally {
      button.removeAttribute("aria-busy");
      button.disabled = false;
    }
  });
  return el;
}
