// One vserver's page: state and actions, exec, console, graphs, and the settings
// forms (limits, addresses, uname, init, owners), each shown only to callers whose
// capabilities allow its methods.
import { h, fill, duration, sleep } from "./dom.js";
import { field, form } from "./forms.js";
import { actionButtons, errorText } from "./actions.js";
import { Fault } from "./xmlrpc.js";

const REFRESH_MS = 4000;
// vcd's vocabularies (vcd/vocab.py); a value outside them is refused with a fault anyway
const LIMITS = ["CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS",
  "LOCKS", "SIGPENDING", "MSGQUEUE", "NSOCK", "OPENFD", "ANON", "SHMEM", "SEMARY", "NSEMS", "DENTRY", "MAPPED"];
const UNAMES = ["SYSNAME", "NODENAME", "RELEASE", "VERSION", "MACHINE", "DOMAINNAME"];
const METRICS = [["cpu", "CPU"], ["mem", "memory"], ["sys_LOADAVG", "load"], ["thread_TOTAL", "threads"],
  ["sys_NPROC", "processes"]];
const PERIODS = [["1h", "hour"], ["1d", "day"], ["1w", "week"]];

export function vserverView(app, session, name) {
  let alive = true;
  let timer = null;
  let running = null;
  const state = h("span", { id: "state", class: "state" });
  const actions = h("div", { class: "actions", id: "actions" });
  const status = h("p", { id: "status", role: "status" });
  const facts = h("p", { id: "facts", class: "muted" });
  const sections = h("div", {});
  fill(app, h("p", {}, h("a", { href: "#/" }, "← all vservers")),
    h("h2", {}, name, " ", state), actions, status, facts, sections);

  const after = (err, method) => {
    if (err) fill(status, h("span", { class: "fault" }, errorText(err)));
    else if (method === "vx.remove") location.hash = "#/";
    else fill(status, h("span", { class: "notice" }, `${method} done`));
    refresh();
  };

  async function refresh() {
    clearTimeout(timer);
    try {
      const st = await session.call("vx.status", { name });
      if (!alive) return;
      state.className = `state ${st.running ? "running" : "stopped"}`;
      state.textContent = st.running ? "running" : "stopped";
      fill(facts, st.running
        ? `up ${duration(st.uptime)} · load ${st.load1m} ${st.load5m} ${st.load15m} · ${st.nproc} processes, ${st.thr_total} threads`
        : "stopped");
      if (st.running !== running) {
        running = st.running;
        fill(actions, actionButtons(session, name, running, after));
      }
    } catch (err) {
      if (!alive) return;
      if (err instanceof Fault && err.code === 101 && running === null) {
        // neither INIT nor INFO: no state to show, the actions still work
        running = false;
        fill(actions, actionButtons(session, name, false, after));
      } else {
        fill(status, h("span", { class: "fault" }, errorText(err)));
      }
    }
    if (alive) timer = setTimeout(refresh, REFRESH_MS);
  }

  const stops = [];
  if (session.can("EXEC")) sections.append(execSection(session, name));
  if (session.has("vx.console") && session.can("INFO")) sections.append(consoleSection(session, name, stops));
  if (session.can("INFO")) sections.append(graphSection(session, name));
  if (session.can("RLIM")) {
    sections.append(keyedSection(session, name, {
      id: "limits", title: "Resource limits", area: "vxdb.vx.limit", key: "limit",
      columns: ["limit", "soft", "max"],
      help: "Memory types (RSS, AS, ANON, MAPPED, MEMLOCK, SHMEM) in KiB, the others are counts; 'inf' = unlimited. Takes effect at the next start.",
      fields: () => [field("Limit", "limit", { options: LIMITS }), field("Soft", "soft", { placeholder: "= max" }),
        field("Max", "max", { required: true, placeholder: "e.g. 65536 or inf" })],
    }));
  }
  if (session.can("NET")) {
    sections.append(keyedSection(session, name, {
      id: "addresses", title: "Addresses", area: "vxdb.nx.addr", key: "addr", columns: ["addr", "netmask"],
      fields: () => [field("Address", "addr", { required: true, placeholder: "10.0.0.2" }),
        field("Netmask", "netmask", { placeholder: "255.255.255.0" })],
    }));
  }
  if (session.can("UNAME")) {
    sections.append(keyedSection(session, name, {
      id: "uname", title: "System information (uname)", area: "vxdb.vx.uname", key: "uname", columns: ["uname", "value"],
      fields: () => [field("Field", "uname", { options: UNAMES }), field("Value", "value")],
    }));
  }
  if (session.can("INIT")) sections.append(initSection(session, name));
  if (session.can("AUTH")) sections.append(ownersSection(session, name));
  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
    for (const stop of stops) stop();
  };
}

function section(id, title, ...content) {
  return h("article", { id }, h("h3", {}, title), ...content);
}

// -- exec ----------------------------------------------------------------------------------

function execSection(session, name) {
  const output = h("pre", { class: "output", id: "exec-output", hidden: true });
  const result = h("p", { id: "exec-result" });
  const f = form([field("Command", "command", { required: true, placeholder: "uname -a", id: "exec-command" })],
    "Run", async ({ command }) => {
      fill(result);
      output.hidden = false;
      fill(output);
      if (session.has("task.log")) await execAsTask(session, name, command, output, result);
      else await execBlocking(session, name, command, output, result);
    }, { id: "exec-form" });
  return section("exec", "Run a command", f, result, output);
}

async function execAsTask(session, name, command, output, result) {
  // the task API: output appears while the command runs
  const id = await session.call("vx.exec", { name, command, background: true });
  let offset = 0;
  for (;;) {
    const chunk = await session.call("task.log", { id, offset });
    output.append(chunk.data);
    offset = chunk.offset;
    if (chunk.eof) break;
    await sleep(500);
  }
  const task = await session.call("task.get", { id });
  if (!task.fault_code) fill(result, h("span", { class: "notice" }, "exit status 0"));
  else if (task.fault_code > 1000) fill(result, h("span", { class: "fault" }, `exit status ${task.fault_code - 1000}`));
  else fill(result, h("span", { class: "fault" }, `${task.fault_string} (fault ${task.fault_code})`));
}

async function execBlocking(session, name, command, output, result) {
  try {
    output.textContent = await session.call("vx.exec", { name, command });
    fill(result, h("span", { class: "notice" }, "exit status 0"));
  } catch (err) {
    if (err instanceof Fault && err.code > 1000) {
      // a command that exited N: the fault carries its output after the standard text
      output.textContent = err.message.replace(/^Command execution failed: (exit status \d+(: |$))?/, "");
      fill(result, h("span", { class: "fault" }, `exit status ${err.code - 1000}`));
    } else {
      output.hidden = true;
      throw err;
    }
  }
}

// -- console ---------------------------------------------------------------------------------

function consoleSection(session, name, stops) {
  const output = h("pre", { class: "output", id: "console-output" });
  const note = h("p", { class: "muted" });
  let offset = null;
  let timer = null;
  let alive = true;
  async function poll() {
    try {
      const chunk = await session.call("vx.console", offset === null ? { name, lines: 100 } : { name, offset });
      if (!alive) return;
      output.append(chunk.data);
      offset = chunk.offset;
      fill(note);
    } catch (err) {
      if (alive) fill(note, h("span", { class: "fault" }, errorText(err)));
    }
    if (alive) timer = setTimeout(poll, 2000);
  }
  const details = h("details", {}, h("summary", {}, "Console log"), output, note);
  details.addEventListener("toggle", () => {
    clearTimeout(timer);
    if (details.open) poll();
  });
  stops.push(() => { alive = false; clearTimeout(timer); });
  return h("article", { id: "console" }, details);
}

// -- graphs -----------------------------------------------------------------------------------

function graphSection(session, name) {
  const img = h("img", { id: "graph", alt: "", hidden: true });
  const note = h("p", { id: "graph-note" });
  let metric = "cpu";
  let period = "1h";
  const metricSelect = h("select", { id: "graph-metric", "aria-label": "metric" },
    METRICS.map(([m, label]) => h("option", { value: m }, label)));
  metricSelect.addEventListener("change", () => { metric = metricSelect.value; draw(); });
  const periodButtons = PERIODS.map(([p, label]) => {
    const b = h("button", { type: "button", dataset: { period: p } }, `1 ${label}`);
    b.addEventListener("click", () => { period = p; draw(); });
    return b;
  });
  let drawn = 0;  // only the latest request's answer is shown, however they arrive
  async function draw() {
    const seq = ++drawn;
    fill(note, h("span", { "aria-busy": "true" }, "drawing…"));
    for (const b of periodButtons) b.className = b.dataset.period === period ? "" : "quiet";
    try {
      const png = await session.call("vx.graph", { name, metric, period });
      if (seq !== drawn) return;
      img.src = png.dataURL("image/png");
      img.alt = `${metric} of ${name} over 1 ${PERIODS.find(([p]) => p === period)[1]}`;
      img.hidden = false;
      fill(note);
    } catch (err) {
      if (seq !== drawn) return;
      img.hidden = true;
      fill(note, h("span", { class: "fault" }, errorText(err)));
    }
  }
  const details = h("details", { id: "graphs-details" }, h("summary", {}, "Graphs"),
    h("div", { class: "actions" }, metricSelect, periodButtons), note, h("div", { class: "graph" }, img));
  details.addEventListener("toggle", () => { if (details.open && img.hidden) draw(); });
  return h("article", { id: "graphs" }, details);
}

// -- settings -----------------------------------------------------------------------------------

/** A keyed VXDB area (limits, addresses, uname): its rows, a remove button each, a set form. */
function keyedSection(session, name, spec) {
  const tbody = h("tbody", {});
  async function load() {
    try {
      const rows = await session.call(`${spec.area}.get`, { name });
      fill(tbody, rows.length ? rows.map((row) => h("tr", { dataset: { key: row[spec.key] } },
        spec.columns.map((c) => h("td", {}, String(row[c]))),
        h("td", {}, h("button", {
          type: "button", class: "quiet",
          onclick: async () => {
            await session.call(`${spec.area}.remove`, { name, [spec.key]: row[spec.key] }).catch(() => {});
            load();
          },
        }, "remove"))))
        : h("tr", {}, h("td", { colspan: spec.columns.length + 1, class: "muted" }, "none set")));
    } catch (err) {
      fill(tbody, h("tr", {}, h("td", { class: "fault" }, errorText(err))));
    }
  }
  const f = form(h("div", { class: "grid2" }, spec.fields()), "Set", async (values) => {
    await session.call(`${spec.area}.set`, { name, ...values });
    load();
  }, { id: `${spec.id}-form` });
  load();
  return section(spec.id, spec.title, spec.help ? h("p", { class: "muted" }, spec.help) : null,
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, spec.columns.map((c) => h("th", {}, c)), h("th", {}, ""))), tbody)), f);
}

function initSection(session, name) {
  const holder = h("div", {}, h("p", { "aria-busy": "true" }, "loading…"));
  session.call("vxdb.init.get", { name }).then((cur) => {
    fill(holder, form(h("div", { class: "grid2" },
      field("Init", "init", { value: cur.init, required: true }),
      field("Halt", "halt", { value: cur.halt, required: true }),
      field("Reboot", "reboot", { value: cur.reboot, required: true }),
      field("Stop timeout (s)", "timeout", { value: cur.timeout, type: "text", inputmode: "numeric" })),
    "Save", async (values) => {
      if (values.timeout !== undefined && /^\d+$/.test(values.timeout)) values.timeout = Number(values.timeout);
      await session.call("vxdb.init.set", { name, ...values });
    }, { id: "init-form" }));
  }, (err) => fill(holder, h("p", { class: "fault" }, errorText(err))));
  return section("init", "Init, halt and reboot", holder);
}

function ownersSection(session, name) {
  const list = h("ul", { id: "owners-list" });
  async function load() {
    try {
      const owners = await session.call("vxdb.owner.get", { name });
      fill(list, owners.length ? owners.map((u) => h("li", {}, u, " ",
        h("a", {
          href: "#", onclick: async (e) => {
            e.preventDefault();
            await session.call("vxdb.owner.remove", { name, username: u }).catch(() => {});
            load();
          },
        }, "remove"))) : h("li", { class: "muted" }, "no owners"));
    } catch (err) {
      fill(list, h("li", { class: "fault" }, errorText(err)));
    }
  }
  load();
  return section("owners", "Owners", list, form(field("Username", "username", { required: true }), "Add owner",
    async ({ username }) => { await session.call("vxdb.owner.add", { name, username }); load(); },
    { id: "owners-form" }));
}
