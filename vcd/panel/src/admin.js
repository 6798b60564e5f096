// Users with their capabilities, and groups of vservers: for callers with AUTH.
import { h, fill, confirmAction } from "./dom.js";
import { field, checkbox, form } from "./forms.js";
import { errorText } from "./actions.js";

// vcd's user capabilities (vcd/vocab.py USER_CAPS)
const CAPS = ["AUTH", "DLIM", "INIT", "MOUNT", "NET", "BCAP", "CCAP", "CFLAG", "RLIM", "SCHED",
  "UNAME", "CREATE", "EXEC", "INFO", "HELPER"];

export function usersView(app, session) {
  const tbody = h("tbody", { id: "users" });
  const status = h("p", { id: "status", role: "status" });
  async function load() {
    try {
      const users = await session.call("vcd.user.get");
      fill(tbody, users.map((u) => userRow(u)));
    } catch (err) {
      fill(status, h("span", { class: "fault" }, errorText(err)));
    }
  }
  function userRow(user) {
    const caps = h("div", { class: "caps" }, CAPS.map((cap) => {
      const box = h("input", { type: "checkbox", checked: user.caps.includes(cap), dataset: { cap } });
      box.addEventListener("change", async () => {
        try {
          await session.call(box.checked ? "vcd.user.caps.add" : "vcd.user.caps.remove",
            { username: user.username, cap });
          fill(status, h("span", { class: "notice" }, `${user.username}: ${cap} ${box.checked ? "granted" : "taken"}`));
        } catch (err) {
          box.checked = !box.checked;
          fill(status, h("span", { class: "fault" }, errorText(err)));
        }
      });
      return h("label", {}, box, cap);
    }));
    const remove = h("button", { type: "button", class: "quiet" }, "remove");
    remove.addEventListener("click", async () => {
      if (!(await confirmAction(`Remove user ${user.username}, its capabilities and ownerships?`, "Remove"))) return;
      try {
        await session.call("vcd.user.remove", { username: user.username });
        load();
      } catch (err) {
        fill(status, h("span", { class: "fault" }, errorText(err)));
      }
    });
    return h("tr", { dataset: { user: user.username } }, h("td", {}, user.username),
      h("td", {}, user.admin ? "admin" : ""), h("td", {}, caps),
      h("td", {}, user.username === session.who.username ? null : remove));
  }
  fill(app, h("h2", {}, "Users"), status,
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "user"), h("th", {}, ""), h("th", {}, "capabilities"), h("th", {}, ""))),
      tbody)),
    h("article", {}, h("h3", {}, "Add a user or set a password"),
      form([h("div", { class: "grid2" }, field("Username", "username", { required: true }),
        field("Password", "password", { type: "password", autocomplete: "new-password" })),
      checkbox("Administrator (may see and create every vserver)", "admin")],
      "Save", async (values) => {
        await session.call("vcd.user.set", values);
        load();
      }, { id: "user-form" })));
  load();
  return () => {};
}

export function groupsView(app, session) {
  const list = h("div", { id: "groups" });
  async function load() {
    try {
      const groups = await session.call("vg.list");
      const members = await session.multicall(groups.map((group) => ["vg.list", { group }]));
      fill(list, groups.length ? groups.map((group, i) => h("article", {}, h("h3", {}, group),
        h("ul", {}, (Array.isArray(members[i]) ? members[i] : []).map((name) => h("li", {}, name, " ",
          h("a", {
            href: "#", onclick: async (e) => {
              e.preventDefault();
              await session.call("vg.remove", { group, name }).catch(() => {});
              load();
            },
          }, "remove")))),
        h("button", {
          type: "button", class: "quiet", dataset: { group }, onclick: async () => {
            if (!(await confirmAction(`Remove group ${group}? Its vservers stay.`, "Remove"))) return;
            await session.call("vg.remove", { group }).catch(() => {});
            load();
          },
        }, "remove group"))) : h("p", { class: "muted" }, "No groups."));
    } catch (err) {
      fill(list, h("p", { class: "fault" }, errorText(err)));
    }
  }
  fill(app, h("h2", {}, "Groups"), h("p", { class: "muted" }, "Members of the group 'onboot' start with the daemon."), list,
    h("article", {}, h("h3", {}, "Add a vserver to a group"),
      form(h("div", { class: "grid2" }, field("Group", "group", { required: true }), field("Vserver", "name")),
        "Add", async (values) => { await session.call("vg.add", values); load(); }, { id: "group-form" })));
  load();
  return () => {};
}
