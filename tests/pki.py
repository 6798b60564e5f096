"""A throw-away PKI for the TLS tests, made with the `openssl` command.

    pki = Pki(tmp_path)           # a CA
    server = pki.issue("server", ["127.0.0.1", "localhost"])
    client = pki.issue("client")  # signed by the same CA
    rogue = Pki(tmp_path / "rogue").issue("client")  # signed by another CA
"""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path | None = None) -> None:
    exe = shutil.which("openssl")
    assert exe, "the TLS tests need the openssl command (Debian package openssl)"
    result = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                            stdin=subprocess.DEVNULL, umask=0o077)
    assert result.returncode == 0, result.stderr


@dataclass
class Pair:
    cert: Path
    key: Path


class Pki:
    def __init__(self, root: Path, name: str = "test-ca") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = Pair(root / "ca.pem", root / "ca.key")
        openssl("req", "-x509", "-new", *_EC, "-keyout", str(self.ca.key), "-out", str(self.ca.cert),
                "-days", "2", "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str, hosts: list[str] | None = None) -> Pair:
        pair = Pair(self.root / f"{name}.pem", self.root / f"{name}.key")
        csr = self.root / f"{name}.csr"
        ext = self.root / f"{name}.ext"
        lines = ["basicConstraints=critical,CA:FALSE",
                 "keyUsage=critical,digitalSignature",
                 f"extendedKeyUsage={'serverAuth' if hosts else 'clientAuth'}"]
        if hosts:
            lines.append("subjectAltName=" + ",".join(
                f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts))
        ext.write_text("\n".join(lines) + "\n")
        openssl("req", "-new", *_EC, "-keyout", str(pair.key), "-out", str(csr), "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key),
                "-CAcreateserial", "-out", str(pair.cert), "-days", "2", "-extfile", str(ext))
        return pair


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
