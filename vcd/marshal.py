"""The wire form of XML-RPC: reading methodCalls as old clients send them, and turning
results and faults into methodResponse bodies every XML-RPC client can parse.

A number arrives remembering the text it was sent as (`IntText`, `FloatText`): Perl's
Frontier::Client and RPC::XML send every number-like string as ``<i4>``/``<int>``/``<i8>``
with the string's own characters (``<int>00123456</int>`` for the password ``00123456``),
Frontier also ``<double>1.10</double>``, so where a string is expected `sent_text` gives
those characters back; ``int()`` and ``float()`` would lose leading zeros, signs and
trailing zeros.

Every string the daemon sends passes through here (results at any depth, struct
keys, fault strings, system.multicall entries), so the rules live in one place:

* A character XML 1.0 forbids (C0 controls other than tab, newline and carriage
  return, U+FFFE, U+FFFF and lone surrogates, which a ``surrogateescape``-decoded
  byte leaves behind) becomes U+FFFD. Raw, it makes Python's xmlrpc.client, PHP,
  both Perl libraries, Java and xmlrpc-c reject the whole answer (XML 1.0, section 2.2,
  production [2] Char).
* A carriage return travels as the character reference ``&#13;``: a literal one is
  turned into a newline by every conforming parser (end-of-line handling, section 2.11),
  so ``a\\r\\nb`` would arrive as ``a\\nb``.
* ``bytes`` stay ``<base64>``: the form for a caller who needs every byte.
* ``None`` is ``<nil/>`` (the original daemon's behaviour); with ``nil=False`` (the
  client asked ``POST /RPC2?nil=0``) a void result is boolean true instead, for
  clients that cannot read ``<nil/>`` (Perl's Frontier::Client, Ruby and Java without
  their extension flag).
"""
from __future__ import annotations

import re
import xmlrpc.client
from typing import Any

REPLACEMENT = "\ufffd"
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class IntText(int):
    """An ``<int>``/``<i4>``/``<i8>`` as sent: an int that keeps its literal `text`."""
    text: str

    def __new__(cls, text: str) -> "IntText":
        number = super().__new__(cls, int(text))
        number.text = text.strip()
        return number

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return IntText, (self.text,)


class FloatText(float):
    """A ``<double>`` as sent: a float that keeps its literal `text`."""
    text: str

    def __new__(cls, text: str) -> "FloatText":
        number = super().__new__(cls, float(text))
        number.text = text.strip()
        return number

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return FloatText, (self.text,)


def sent_text(value: Any) -> str | None:
    """The characters of a number sent where a string was meant (Perl's clients type every
    number-like string), or None for anything that is not a number (booleans included)."""
    if isinstance(value, (IntText, FloatText)):
        return value.text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class RequestUnmarshaller(xmlrpc.client.Unmarshaller):
    """xmlrpc.client's Unmarshaller, except that numbers keep the text they were sent as."""
    dispatch = dict(xmlrpc.client.Unmarshaller.dispatch)

    def end_int(self, data: str) -> None:
        self.append(IntText(data))
        self._value = 0

    def end_double(self, data: str) -> None:
        self.append(FloatText(data))
        self._value = 0

    for _tag in ("i1", "i2", "i4", "i8", "int", "biginteger"):
        dispatch[_tag] = end_int
    for _tag in ("double", "float"):
        dispatch[_tag] = end_double
    del _tag


def xml_text(text: str) -> str:
    """`text` with every character XML 1.0 forbids replaced by U+FFFD."""
    return _FORBIDDEN.sub(REPLACEMENT, text)


def xml_safe(value: Any) -> Any:
    """`value` with every string in it (struct keys too, at any depth) made XML-safe, and
    every number as its plain type (xmlrpc.client refuses subclasses: an echoed `IntText`)."""
    if isinstance(value, (IntText, FloatText)):
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, str):
        return xml_text(value) if _FORBIDDEN.search(value) else value
    if isinstance(value, dict):
        return {xml_safe(k) if isinstance(k, str) else k: xml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [xml_safe(v) for v in value]
    return value


def _encode(body: str) -> bytes:
    # xmlrpc.client never writes a carriage return of its own: each one is from a value
    return body.replace("\r", "&#13;").encode("utf-8")


def dump_result(value: Any, nil: bool = True) -> bytes:
    """A methodResponse carrying `value`. Raises OverflowError (an int beyond 32 bits) or
    TypeError (a type XML-RPC has no form for)."""
    if value is None and not nil:
        value = True
    return _encode(xmlrpc.client.dumps((xml_safe(value),), methodresponse=True, allow_none=True,
                                       encoding="utf-8"))


def dump_fault(code: int, message: str) -> bytes:
    """A methodResponse carrying the fault {faultCode: code, faultString: message}."""
    return _encode(xmlrpc.client.dumps(xmlrpc.client.Fault(int(code), xml_text(message)),
                                       methodresponse=True, allow_none=True, encoding="utf-8"))
