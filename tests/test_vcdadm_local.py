"""vcdadm's local commands: init and passwd work on the VXDB file directly."""
from __future__ import annotations

import stat
import subprocess
import sys

from vcdtest import REPO
from vcd import vxdb
from vcd.vxdb import schema


def vcdadm(config, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vcd.vcdadm", "-c", str(config), *args],
                          input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO)


def _config(tmp_path):
    conf = tmp_path / "vcd.conf"
    conf.write_text(f'datadir = "{tmp_path / "data"}"\nrundir = "{tmp_path / "run"}"\n')
    return conf


def test_init_creates_vxdb_and_first_user_password_files(tmp_path):
    conf = _config(tmp_path)
    out = vcdadm(conf, "init")
    assert out.returncode == 0, out.stderr
    db = tmp_path / "data" / "vxdb"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for user in ("admin", "vshelper"):
        assert stat.S_IMODE((tmp_path / "data" / f"{user}.password").stat().st_mode) == 0o600
    conn = vxdb.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # a second init keeps users and passwords
    before = (tmp_path / "data" / "admin.password").read_text()
    assert vcdadm(conf, "init").returncode == 0
    assert (tmp_path / "data" / "admin.password").read_text() == before


def test_passwd_from_stdin_changes_the_password_a_daemon_accepts(make_vcd):
    daemon = make_vcd()
    out = vcdadm(daemon.config_path, "passwd", "admin", "--password-stdin", stdin="brand-new-pw\n")
    assert out.returncode == 0, out.stderr
    assert daemon.proxy("admin", "brand-new-pw").vcd.login() is None
    assert "brand-new-pw" not in daemon.log()


def test_passwd_refuses_unknown_users_and_short_passwords(make_vcd):
    daemon = make_vcd()
    out = vcdadm(daemon.config_path, "passwd", "ghost", "--password-stdin", stdin="long-enough\n")
    assert out.returncode != 0 and "ghost" in out.stderr
    out = vcdadm(daemon.config_path, "passwd", "admin", "--password-stdin", stdin="short\n")
    assert out.returncode != 0 and "8 characters" in out.stderr


def test_bad_config_key_exits_2_naming_it(tmp_path):
    conf = tmp_path / "vcd.conf"
    conf.write_text("no_such_key = 1\n")
    out = vcdadm(conf, "init")
    assert out.returncode == 2 and "no_such_key" in out.stderr


def test_a_newer_schema_is_refused(tmp_path):
    conf = _config(tmp_path)
    assert vcdadm(conf, "init").returncode == 0
    conn = vxdb.connect(tmp_path / "data" / "vxdb")
    conn.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    conn.close()
    out = vcdadm(conf, "init")
    assert out.returncode != 0 and "newer" in out.stderr


def test_tls_init_makes_a_certificate_and_a_private_key(tmp_path):
    conf = _config(tmp_path)
    cert, key = tmp_path / "vcd.crt", tmp_path / "vcd.key"
    out = vcdadm(conf, "tls", "init", "--cert", str(cert), "--key", str(key))
    assert out.returncode == 0, out.stderr
    assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert vcdadm(conf, "tls", "bogus").returncode == 2
