// The panel: a login form, then views chosen by the URL's #fragment. Every action
// is an XML-RPC call to /RPC2 with the caller's {username, password}; a button is
// shown only when the caller's capabilities (vcd.whoami) allow its method.
import { Session } from "./api.js";
import { h, fill, duration } from "./dom.js";
import { actionButtons, errorText } from "./actions.js";
import { field, checkbox, form } from "./forms.js";
import { vserverView } from "./vserver.js";
import { usersView, groupsView } from "./admin.js";
import { Fault } from "./xmlrpc.js";

const REFRESH_MS = 4000;
const app = document.getElementById("app");
const nav = document.getElementById("nav");
let session = null;
let stopView = () => {};  // ends the current view's timers

// -- login -----------------------------------------------------------------------------

function loginView(message) {
  fill(nav);
  const f = form([
    field("Username", "username", { autocomplete: "username", required: true, autofocus: true }),
    field("Password", "password", { type: "password", autocomplete: "current-password", required: true }),
    checkbox("Stay logged in while this tab is open (kept in sessionStorage)", "remember"),
  ], "Log in", async ({ username, password, remember }) => {
    session = await new Session(username || "", password || "").open();
    if (remember) session.remember();
    route();
  }, { id: "login" });
  // a first-time user has no idea which password this is: say where the first start put it
  fill(app, h("article", { class: "login" }, h("h2", {}, "Log in to vcd"),
    message ? h("p", { class: "fault" }, message) : null, f,
    h("p", { id: "login-hint" }, h("small", {}, "First time? User admin: its password is in ",
      h("code", {}, "admin.password"), " in vcd's datadir (",
      h("code", {}, "/var/lib/vcd"), " by default) on the daemon's host."))));
}

function logout() {
  Session.forget();
  session = null;
  stopView();
  location.hash = "";
  loginView("Logged out.");
}

function navigation(current) {
  const link = (href, label, id) => h("li", {}, h("a", { href, id, class: current === href ? "active" : null }, label));
  fill(nav,
    link("#/", "vservers", "nav-list"),
    session.can("AUTH") ? link("#/users", "users", "nav-users") : null,
    session.can("AUTH") ? link("#/groups", "groups", "nav-groups") : null,
    h("li", { class: "who" }, h("span", { id: "whoami" }, session.who.username,
      session.who.admin ? " (admin)" : "")),
    h("li", {}, h("a", { href: "#", id: "logout", onclick: (e) => { e.preventDefault(); logout(); } }, "log out")));
}

// -- the list of vservers ----------------------------------------------------------------

function listView() {
  const status = h("p", { id: "status", role: "status" });
  const tbody = h("tbody", { id: "vservers" });
  const canCreate = session.who.admin && session.can("CREATE");
  const net = session.can("NET");  // addresses are NET's to read
  const columns = ["name", "state", ...(net ? ["address"] : []), "load", "uptime", "processes", ""];
  fill(app,
    h("h2", {}, "Virtual servers"),
    canCreate ? h("p", {}, h("a", { href: "#/create", role: "button", id: "create" }, "Create a vserver")) : null,
    status,
    h("div", { class: "scroll" }, h("table", { class: "cards" },
      h("thead", {}, h("tr", {}, columns.map((label) => h("th", {}, label)))),
      tbody)));
  let timer = null;
  let alive = true;
  let pending = 0;  // actions under way: their rows are not redrawn meanwhile
  const before = () => { pending += 1; };
  const after = (err, method) => {
    pending -= 1;
    fill(status, err ? h("span", { class: "fault" }, errorText(err)) : h("span", { class: "notice" }, `${method} done`));
    refresh();
  };
  async function refresh() {
    clearTimeout(timer);
    try {
      const names = await session.call("vxdb.list");
      const calls = [];
      for (const name of names) {
        calls.push(["vx.status", { name }]);
        if (net) calls.push(["vxdb.nx.addr.get", { name }]);
      }
      const answers = await session.multicall(calls);
      if (!alive) return;
      if (pending) {
        timer = setTimeout(refresh, REFRESH_MS);
        return;
      }
      const per = net ? 2 : 1;
      fill(tbody, names.map((name, i) => current(name, answers[per * i], net ? answers[per * i + 1] : null)));
      for (const name of [...rows.keys()]) if (!names.includes(name)) rows.delete(name);
      if (names.length === 0) fill(tbody, h("tr", {}, h("td", { colspan: 7, class: "muted", dataset: { label: "" } }, "No vservers you may see.")));
    } catch (err) {
      if (alive) fill(status, h("span", { class: "fault" }, errorText(err)));
    }
    if (alive) timer = setTimeout(refresh, REFRESH_MS);
  }
  // A row is rebuilt only when its state, addresses or buttons change; load, uptime
  // and processes are updated in place, so a button is never swapped under the pointer.
  const rows = new Map();
  function current(name, st, addrs) {
    const known = st && !(st instanceof Fault);
    const key = JSON.stringify([known ? st.running : String(st && st.code), addrs instanceof Fault ? addrs.code : addrs]);
    const old = rows.get(name);
    if (!old || old.key !== key) {
      rows.set(name, { key, tr: row(name, st, addrs) });
    } else if (known && st.running) {
      const cells = figures(st);
      for (const [label, text] of Object.entries(cells)) {
        old.tr.querySelector(`td[data-label="${label}"]`).textContent = text;
      }
    }
    return rows.get(name).tr;
  }
  function figures(st) {
    return st.running ? { load: `${st.load1m} ${st.load5m} ${st.load15m}`, uptime: duration(st.uptime), processes: String(st.nproc) }
      : { load: "—", uptime: "—", processes: "—" };
  }
  function row(name, st, addrs) {
    const known = st && !(st instanceof Fault);
    const running = known && st.running;
    // data-label: on a phone each row is a card and the cells name themselves
    const cell = (label, ...content) => h("td", { dataset: { label } }, ...content);
    return h("tr", { dataset: { vserver: name } },
      cell("name", h("a", { href: `#/vx/${encodeURIComponent(name)}` }, name)),
      cell("state", known ? h("span", { class: `state ${running ? "running" : "stopped"}` }, running ? "running" : "stopped")
        : h("span", { class: "muted" }, "?")),
      net ? cell("address", Array.isArray(addrs) && addrs.length ? addrs.map((a) => a.addr).join(", ") : "—") : null,
      Object.entries(figures(running ? st : { running: false })).map(([label, text]) => cell(label, text)),
      h("td", {}, h("div", { class: "actions" }, actionButtons(session, name, running, after, before))));
  }
  refresh();
  return () => { alive = false; clearTimeout(timer); };
}

// -- creating ------------------------------------------------------------------------------

function createView() {
  const templates = h("div", {}, h("p", { "aria-busy": "true" }, "Loading templates…"));
  fill(app, h("h2", {}, "Create a vserver"), templates);
  session.call("vx.templates").then((list) => {
    if (list.length === 0) {
      fill(templates, h("p", {}, "No templates: build one with ", h("code", {}, "vcdadm template"), "."));
      return;
    }
    fill(templates, form([
      field("Name", "name", { required: true, placeholder: "web1" }),
      field("Template", "template", { options: list.map((t) => t.name) }),
      h("p", { class: "muted" }, list.map((t) => h("span", {}, h("strong", {}, t.name), `: ${t.description} `))),
      checkbox("Start it once created", "start", true),
    ], "Create", async ({ name, template, start }) => {
      await session.call("vx.create", { name: name || "", template });
      if (start && session.can("INIT")) await session.call("vx.start", { name });
      location.hash = `#/vx/${encodeURIComponent(name)}`;
    }, { id: "create-form" }));
  }, (err) => fill(templates, h("p", { class: "fault" }, errorText(err))));
  return () => {};
}

// -- routing ---------------------------------------------------------------------------------

function route() {
  stopView();
  stopView = () => {};
  if (!session) {
    loginView();
    return;
  }
  const hash = location.hash || "#/";
  let match;
  if ((match = /^#\/vx\/(.+)$/.exec(hash))) {
    navigation("#/");
    stopView = vserverView(app, session, decodeURIComponent(match[1]));
  } else if (hash === "#/create" && session.who.admin && session.can("CREATE")) {
    navigation("#/");
    stopView = createView();
  } else if (hash === "#/users" && session.can("AUTH")) {
    navigation(hash);
    stopView = usersView(app, session);
  } else if (hash === "#/groups" && session.can("AUTH")) {
    navigation(hash);
    stopView = groupsView(app, session);
  } else {
    navigation("#/");
    stopView = listView();
  }
}

async function start() {
  window.addEventListener("hashchange", route);
  const saved = Session.remembered();
  if (saved) {
    try {
      session = await new Session(saved.username, saved.password).open();
    } catch (err) {
      Session.forget();
      loginView(errorText(err));
      return;
    }
  }
  route();
}

start();
