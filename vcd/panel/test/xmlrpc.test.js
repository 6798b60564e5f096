// The panel's XML-RPC codec against Python's xmlrpc.client (what vcd itself speaks):
// answers Python wrote are decoded, calls we encode are read back by Python.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { DOMParser } from "@xmldom/xmldom";
import { Binary, Fault, decodeResponse, encodeCall } from "../src/xmlrpc.js";

const parser = new DOMParser();

function python(script, input = "") {
  return execFileSync("python3", ["-c", script], { input, encoding: "utf-8" });
}

function pythonAnswer(expr) {
  return python(`import sys, xmlrpc.client as x\nsys.stdout.write(x.dumps(${expr}, methodresponse=True, allow_none=True))`);
}

test("decodes every type vcd answers with, as Python encodes them", () => {
  const xml = pythonAnswer("({'name': 'web1', 'n': -7, 'big': '18446744073709551615', 'ok': True, "
    + "'off': False, 'none': None, 'load': 0.25, 'list': [1, 'a&<b>'], 'png': x.Binary(b'\\x89PNG'), "
    + "'__proto__': 'data', 'nested': {'caps': ['INFO', 'EXEC']}},)");
  const value = decodeResponse(xml, parser);
  assert.equal(value.name, "web1");
  assert.equal(value.n, -7);
  assert.equal(value.big, "18446744073709551615");
  assert.equal(value.ok, true);
  assert.equal(value.off, false);
  assert.equal(value.none, null);
  assert.equal(value.load, 0.25);
  assert.deepEqual(value.list, [1, "a&<b>"]);
  assert.ok(value.png instanceof Binary);
  assert.deepEqual([...value.png.bytes()], [0x89, 0x50, 0x4e, 0x47]);
  assert.equal(value.png.dataURL("image/png"), "data:image/png;base64,iVBORw==");
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.equal(value.__proto__, "data");
  assert.deepEqual(value.nested.caps, ["INFO", "EXEC"]);
});

test("a nil answer (a void method) decodes to null", () => {
  assert.equal(decodeResponse(pythonAnswer("(None,)"), parser), null);
});

test("an untyped value is a string", () => {
  const xml = "<?xml version='1.0'?><methodResponse><params><param><value> plain </value></param></params></methodResponse>";
  assert.equal(decodeResponse(xml, parser), " plain ");
});

test("a fault answer throws Fault with its code and string", () => {
  const xml = pythonAnswer("x.Fault(200, \"'max' must be an unsigned decimal integer, got 'x'\")");
  assert.throws(() => decodeResponse(xml, parser), (err) => {
    assert.ok(err instanceof Fault);
    assert.equal(err.code, 200);
    assert.equal(err.message, "'max' must be an unsigned decimal integer, got 'x'");
    return true;
  });
});

test("what is not an XML-RPC answer is an error, not a value", () => {
  for (const text of ["<html><body>Not Found</body></html>",
    "<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
    "<methodResponse><params><param><value><boolean>2</boolean></value></param></params></methodResponse>",
    "<methodResponse><params><param><value><blob/></value></param></params></methodResponse>"]) {
    assert.throws(() => decodeResponse(text, parser), (err) => !(err instanceof Fault));
  }
});

test("Python reads the calls we encode, with every type and awkward text", () => {
  const xml = encodeCall("vx.exec", [{ username: "admin", password: "p<&>\"'ä]]>" },
    { name: "web1", command: "echo 'a b'", n: 3, big: 2 ** 40, f: 1.5, yes: true, no: false,
      none: null, list: ["x", 1], png: new Binary("iVBO\nRw==") }]);
  const seen = JSON.parse(python(
    "import sys, json, xmlrpc.client as x\n"
    + "params, method = x.loads(sys.stdin.read(), use_builtin_types=True)\n"
    + "params[1]['png'] = list(params[1]['png'])\n"
    + "print(json.dumps([method, params]))", xml));
  assert.deepEqual(seen, ["vx.exec", [
    { username: "admin", password: "p<&>\"'ä]]>" },
    { name: "web1", command: "echo 'a b'", n: 3, big: 2 ** 40, f: 1.5, yes: true, no: false,
      none: null, list: ["x", 1], png: [0x89, 0x50, 0x4e, 0x47] }]]);
});
