// What can be done to one vserver, shared by the list and the vserver's own page.
import { h, confirmAction } from "./dom.js";
import { Fault } from "./xmlrpc.js";

/** start/stop/restart/remove buttons for one vserver, as the caller's caps allow. */
export function actionButtons(s, name, running, after, before = () => {}) {
  const run = async (button, method, confirmText, label) => {
    if (confirmText && !(await confirmAction(confirmText, label))) return;
    before(method);
    button.setAttribute("aria-busy", "true");
    button.disabled = true;
    try {
      await s.call(method, { name });
      after(null, method);
    } catch (err) {
      after(err, method);
    } finally {
      button.removeAttribute("aria-busy");
      button.disabled = false;
    }
  };
  const button = (label, method, confirmText) => {
    const b = h("button", { type: "button", dataset: { action: label.toLowerCase(), name } }, label);
    b.addEventListener("click", () => run(b, method, confirmText, label));
    return b;
  };
  const out = [];
  if (s.can("INIT")) {
    if (!running) out.push(button("Start", "vx.start"));
    if (running) {
      out.push(button("Stop", "vx.stop", `Stop ${name}? Its processes are halted.`));
      out.push(button("Restart", "vx.restart", `Restart ${name}? Its processes are halted and started again.`));
    }
  }
  if (s.can("CREATE") && !running) {
    out.push(button("Remove", "vx.remove", `Remove ${name}? Its configuration and root filesystem are deleted.`));
  }
  return out;
}

export function errorText(err) {
  return err instanceof Fault ? `${err.message} (fault ${err.code})` : String(err.message || err);
}
