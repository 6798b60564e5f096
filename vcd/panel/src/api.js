// The caller's session: the {username, password} struct every call carries, who the
// daemon says the caller is (vcd.whoami) and which methods it has. Nothing is kept
// on the server; the password stays in this page's memory, or in sessionStorage
// when the user asks for it (that tab only, gone when it closes), never in a URL.
import { Client, Fault } from "./xmlrpc.js";

const STORAGE_KEY = "vcd.panel.login";

export class Session {
  constructor(username, password) {
    this.client = new Client("/RPC2");
    this.auth = { username, password };
    this.who = { username, admin: false, caps: [] };
    this.methods = new Set();
  }

  /** Log in: checks the password, then learns the caller's caps and the daemon's methods. */
  async open() {
    await this.call("vcd.login");
    this.who = await this.call("vcd.whoami");
    this.methods = new Set(await this.client.call("system.listMethods"));
    return this;
  }

  call(method, params = {}) {
    return this.client.call(method, this.auth, params);
  }

  /** Several calls in one request: an array of results, each a value or a Fault. */
  async multicall(calls) {
    if (calls.length === 0) return [];
    const answers = await this.client.call("system.multicall",
      calls.map(([methodName, params]) => ({ methodName, params: [this.auth, params || {}] })));
    return answers.map((a) => (Array.isArray(a) ? a[0] : new Fault(a.faultCode, a.faultString)));
  }

  can(cap) {
    return this.who.caps.includes(cap);
  }

  has(method) {
    return this.methods.has(method);
  }

  remember() {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(this.auth));
  }

  static forget() {
    sessionStorage.removeItem(STORAGE_KEY);
  }

  static remembered() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
      return saved && typeof saved.username === "string" ? saved : null;
    } catch {
      return null;
    }
  }
}
