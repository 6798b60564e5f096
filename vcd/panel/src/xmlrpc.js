// XML-RPC for the browser: encode a methodCall, decode a methodResponse (with the
// browser's DOMParser), and a fetch-based client.
//
// Our own, because the maintained npm codec (@foxglove/xmlrpc) decodes base64 with
// Node's Buffer, which a browser does not have, and vx.graph answers base64.
// Follows the XML-RPC spec (xmlrpc.com/spec) plus <nil/> and <i8>, which vcd sends.

/** A fault answer: `code` is the faultCode, `message` the faultString. */
export class Fault extends Error {
  constructor(code, message) {
    super(message);
    this.name = "Fault";
    this.code = code;
  }
}

/** A base64 value as received: kept as text, since a data: URL is what the panel needs. */
export class Binary {
  constructor(base64) {
    this.base64 = base64.replace(/\s+/g, "");
  }

  dataURL(type) {
    return `data:${type};base64,${this.base64}`;
  }

  bytes() {
    return Uint8Array.from(atob(this.base64), (c) => c.charCodeAt(0));
  }
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

function escapeText(text) {
  // & and < must be escaped in character data; > too, so "]]>" never appears
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/\r/g, "&#13;");
}

function encodeValue(value) {
  if (value === null || value === undefined) return "<nil/>";
  if (typeof value === "string") return `<string>${escapeText(value)}</string>`;
  if (typeof value === "boolean") return `<boolean>${value ? 1 : 0}</boolean>`;
  if (typeof value === "number") {
    if (Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX) {
      return `<int>${value}</int>`;
    }
    if (!Number.isFinite(value)) throw new TypeError(`cannot encode ${value} in XML-RPC`);
    return `<double>${value}</double>`;
  }
  if (value instanceof Binary) return `<base64>${value.base64}</base64>`;
  if (value instanceof Date) {
    return `<dateTime.iso8601>${value.toISOString().replace(/[-]|\.\d+/g, "").replace("Z", "")}</dateTime.iso8601>`;
  }
  if (Array.isArray(value)) {
    return `<array><data>${value.map((v) => `<value>${encodeValue(v)}</value>`).join("")}</data></array>`;
  }
  if (typeof value === "object") {
    const members = Object.entries(value).map(([k, v]) =>
      `<member><name>${escapeText(k)}</name><value>${encodeValue(v)}</value></member>`);
    return `<struct>${members.join("")}</struct>`;
  }
  throw new TypeError(`cannot encode a ${typeof value} in XML-RPC`);
}

/** The XML text of a methodCall. */
export function encodeCall(method, params) {
  const encoded = params.map((p) => `<param><value>${encodeValue(p)}</value></param>`).join("");
  return `<?xml version="1.0" encoding="UTF-8"?><methodCall><methodName>${escapeText(method)}`
    + `</methodName><params>${encoded}</params></methodCall>`;
}

function elements(node) {
  const out = [];
  for (let child = node.firstChild; child; child = child.nextSibling) {
    if (child.nodeType === 1) out.push(child);
  }
  return out;
}

function only(node, name) {
  const found = elements(node).filter((e) => e.nodeName === name);
  if (found.length !== 1) throw new Error(`malformed XML-RPC: expected one <${name}> in <${node.nodeName}>`);
  return found[0];
}

function decodeValue(valueNode) {
  const typed = elements(valueNode);
  if (typed.length === 0) return valueNode.textContent; // untyped: a string
  if (typed.length > 1) throw new Error("malformed XML-RPC: a <value> with two types");
  const node = typed[0];
  const text = node.textContent;
  switch (node.nodeName) {
    case "string":
      return text;
    case "int":
    case "i4":
    case "i8": {
      if (!/^\s*[-+]?\d+\s*$/.test(text)) throw new Error(`malformed XML-RPC integer: ${text}`);
      return Number(text);
    }
    case "double": {
      const n = Number(text);
      if (text.trim() === "" || Number.isNaN(n)) throw new Error(`malformed XML-RPC double: ${text}`);
      return n;
    }
    case "boolean":
      if (text.trim() === "1") return true;
      if (text.trim() === "0") return false;
      throw new Error(`malformed XML-RPC boolean: ${text}`);
    case "nil":
      return null;
    case "base64":
      return new Binary(text);
    case "dateTime.iso8601":
      return text.trim();
    case "array":
      return elements(only(node, "data")).map((v) => {
        if (v.nodeName !== "value") throw new Error("malformed XML-RPC: <data> holds only <value>s");
        return decodeValue(v);
      });
    case "struct": {
      const out = {};
      for (const member of elements(node)) {
        const name = only(member, "name").textContent;
        // defineProperty: a member called "__proto__" is data, not the object's prototype
        Object.defineProperty(out, name, {
          value: decodeValue(only(member, "value")), enumerable: true, writable: true, configurable: true,
        });
      }
      return out;
    }
    default:
      throw new Error(`malformed XML-RPC: unknown type <${node.nodeName}>`);
  }
}

/**
 * The value of a methodResponse; throws Fault for a fault answer and Error for
 * anything that is not XML-RPC. `parser` is a DOMParser (the browser's by default).
 */
export function decodeResponse(text, parser = new DOMParser()) {
  const doc = parser.parseFromString(text, "text/xml");
  const root = doc.documentElement;
  if (!root || root.nodeName !== "methodResponse" || doc.getElementsByTagName("parsererror").length) {
    throw new Error("the answer is not an XML-RPC methodResponse");
  }
  const [body] = elements(root);
  if (body && body.nodeName === "fault") {
    const fault = decodeValue(only(body, "value"));
    throw new Fault(Number(fault.faultCode), String(fault.faultString));
  }
  if (!body || body.nodeName !== "params") throw new Error("malformed XML-RPC: no <params>");
  return decodeValue(only(only(body, "param"), "value"));
}

/** Calls methods on one endpoint with fetch; no cookie is sent or stored. */
export class Client {
  constructor(url) {
    this.url = url;
  }

  async call(method, ...params) {
    const response = await fetch(this.url, {
      method: "POST",
      headers: { "Content-Type": "text/xml" },
      body: encodeCall(method, params),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText} from ${this.url}`);
    return decodeResponse(await response.text());
  }
}
