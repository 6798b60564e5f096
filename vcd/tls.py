"""`vcdadm tls init`: a self-signed certificate and key for a first HTTPS setup.

    vcdadm tls init [-c vcd.conf] [--cert PATH] [--key PATH] [--name HOST ...] [--days N] [--force]

Made with the `openssl` command (Debian's `openssl` package; the `cryptography`
wheel would be a large dependency for one command). The key is an EC P-256 key,
written with mode 0600 and never readable by anyone else at any moment: openssl
writes into a private directory (0700, umask 077) next to the target, and the
files are then renamed into place. The certificate names this host, `localhost`,
127.0.0.1 and ::1, so the same file serves as `--cacert` for local clients.

For production, replace the pair with one from your CA; clients then use that CA.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from vcd import config as configmod

DEFAULT_CERT = Path("/etc/vcd/vcd.crt")
DEFAULT_KEY = Path("/etc/vcd/vcd.key")
DEFAULT_DAYS = 825       # the longest validity browsers and most clients still accept
KEY_MODE = 0o600
CERT_MODE = 0o644
OPENSSL_TIMEOUT = 60


class TLSError(Exception):
    pass


def default_names() -> list[str]:
    names = [socket.getfqdn(), socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def _san(names: list[str]) -> str:
    entries = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            entries.append(f"IP:{name}")
        except ValueError:
            entries.append(f"DNS:{name}")
    return ",".join(entries)


def make_self_signed(cert: Path, key: Path, names: list[str], days: int = DEFAULT_DAYS,
                     force: bool = False) -> None:
    """Write a self-signed certificate for `names` and its private key.

    Refuses to overwrite an existing file unless `force`. Raises TLSError.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSError("the 'openssl' command is needed (Debian package 'openssl')")
    if not names:
        raise TLSError("at least one host name is needed")
    for path in (cert, key):
        if path.exists() and not force:
            raise TLSError(f"{path} exists; use --force to replace it")
    for path in {cert.parent, key.parent}:
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
    # the private directory lives beside the key so the final rename stays on one filesystem
    work = Path(tempfile.mkdtemp(prefix=".vcd-tls-", dir=key.parent))
    try:
        new_key, new_cert = work / "key.pem", work / "cert.pem"
        argv = [openssl, "req", "-x509", "-new", "-nodes",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", str(new_key), "-out", str(new_cert), "-days", str(days),
                "-subj", f"/CN={names[0][:64]}",
                "-addext", f"subjectAltName={_san(names)}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
                "-addext", "extendedKeyUsage=serverAuth,clientAuth"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT,
                                umask=0o077, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise TLSError(f"openssl failed: {result.stderr.strip()[-500:]}")
        os.chmod(new_key, KEY_MODE)
        os.chmod(new_cert, CERT_MODE)
        os.replace(new_key, key)
        # the certificate is public and may live elsewhere (another filesystem): copy it
        shutil.copyfile(new_cert, cert.with_name(cert.name + ".new"))
        os.chmod(cert.with_name(cert.name + ".new"), CERT_MODE)
        os.replace(cert.with_name(cert.name + ".new"), cert)
    except subprocess.TimeoutExpired:
        raise TLSError("openssl did not finish") from None
    except OSError as exc:
        raise TLSError(f"{exc.filename or ''}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fingerprint(cert: Path) -> str:
    """SHA-256 fingerprint of a PEM certificate, as clients show it (AB:CD:...)."""
    import hashlib
    import ssl
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vcdadm tls init",
                                description="Make a self-signed certificate and key for vcd's HTTPS.")
    p.add_argument("-c", "--config", type=Path,
                   help="vcd config whose tls_cert/tls_key name the files "
                        f"(default {configmod.DEFAULT_CONFIG} if it exists)")
    p.add_argument("--cert", type=Path, help=f"certificate file (default: tls_cert or {DEFAULT_CERT})")
    p.add_argument("--key", type=Path, help=f"key file (default: tls_key or {DEFAULT_KEY})")
    p.add_argument("--name", action="append", dest="names", metavar="HOST",
                   help="host name or address the certificate is for (repeatable; "
                        "default: this host, localhost, 127.0.0.1, ::1)")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity (default {DEFAULT_DAYS})")
    p.add_argument("--force", action="store_true", help="replace existing files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vcdadm tls init`; returns the exit status (0 ok, 1 failed, 2 usage)."""
    args = parse_args(argv)
    if not 1 <= args.days <= 36500:
        print("vcdadm tls init: --days must be between 1 and 36500", file=sys.stderr)
        return 2
    cert, key = args.cert, args.key
    if cert is None or key is None:
        path = args.config or (configmod.DEFAULT_CONFIG if configmod.DEFAULT_CONFIG.exists() else None)
        try:
            config = configmod.load(path)
        except configmod.ConfigError as exc:
            print(f"vcdadm tls init: {exc}", file=sys.stderr)
            return 2
        cert = cert or config.tls_cert or DEFAULT_CERT
        key = key or config.tls_key or DEFAULT_KEY
    if cert.resolve() == key.resolve():
        print("vcdadm tls init: certificate and key must be different files", file=sys.stderr)
        return 2
    names = args.names or default_names()
    try:
        make_self_signed(cert, key, names, args.days, args.force)
    except TLSError as exc:
        print(f"vcdadm tls init: {exc}", file=sys.stderr)
        return 1
    print(f"certificate {cert} (for {', '.join(names)}; valid {args.days} days)")
    print(f"key         {key} (mode 0600)")
    print(f"SHA-256 fingerprint {fingerprint(cert)}")
    print("In vcd.conf:")
    print(f'  tls_cert = "{cert}"')
    print(f'  tls_key = "{key}"')
    print(f"Clients: vcc --url https://HOST:PORT --cacert {cert}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
