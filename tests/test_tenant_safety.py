"""Tenant-safe configuration (issue 11): what a vserver owner who is not an admin may
set, and what a removed vserver leaves behind.

Each test plays a tenant made through the API (a user with capabilities and owned
vservers, no admin flag) against a real daemon; the start tests run real contexts.
"""
from __future__ import annotations

import os
import sqlite3
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest

from api_helpers import create_vserver, fault, fault_code, unique
from vcdtest import CGROUP_PARENT, VcdDaemon, _toml, wait_until

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")
EVERY_CAP = ("AUTH", "DLIM", "INIT", "MOUNT", "NET", "BCAP", "CCAP", "CFLAG", "RLIM", "SCHED",
             "UNAME", "CREATE", "EXEC", "INFO")


@pytest.fixture(scope="module")
def admin(vcd_module):
    return vcd_module.proxy()


def tenant(daemon: VcdDaemon, *caps: str, owns: tuple[str, ...] = ()):
    """A non-admin user made through the API, with these capabilities and vservers."""
    admin = daemon.proxy()
    username = unique("tenant")
    password = f"password-{username}"
    admin.vcd.user.set(username=username, password=password, admin=False)
    for cap in caps:
        admin.vcd.user.caps.add(username=username, cap=cap)
    for name in owns:
        admin.vxdb.owner.add(name=name, username=username)
    return daemon.proxy(username, password)


# -- mounts ------------------------------------------------------------------------------

@pytest.mark.parametrize("mount,reason", [
    ({"src": "/", "dst": "/mnt/h", "type": "rbind"}, "whole root"),
    ({"src": "/", "dst": "/mnt/h", "type": "bind"}, "whole root"),
    ({"src": "/", "dst": "/mnt/h", "type": "auto", "opts": "rbind"}, "whole root"),
    ({"src": "/etc", "dst": "/mnt/h", "type": "ext4", "opts": "bind"}, "binds, but 'type'"),
    ({"src": "/etc", "dst": "/mnt/h", "type": "xfs", "opts": "ro,rbind"}, "binds, but 'type'"),
    ({"src": "devtmpfs", "dst": "/mnt/d", "type": "devtmpfs"}, "'devtmpfs'"),
    ({"src": "/dev/sda1", "dst": "/mnt/d", "type": "ext4"}, "'ext4'"),
    ({"src": "/dev/sda1", "dst": "/mnt/d"}, "/dev"),
    ({"src": "/dev/sda1", "dst": "/mnt/d", "type": "tmpfs"}, "label"),
    ({"src": "proc", "dst": "/mnt/p", "type": "proc"}, "'proc'"),
    ({"src": "sysfs", "dst": "/mnt/s", "type": "sysfs"}, "'sysfs'"),
    ({"src": "cgroup", "dst": "/mnt/c", "type": "cgroup", "opts": "pids"}, "'cgroup'"),
    ({"src": "cgroup2", "dst": "/mnt/c", "type": "cgroup2"}, "'cgroup2'"),
    ({"src": "debugfs", "dst": "/mnt/c", "type": "debugfs"}, "'debugfs'"),
    ({"src": "bpf", "dst": "/mnt/c", "type": "bpf"}, "'bpf'"),
    ({"src": "none", "dst": "/mnt/c", "type": "hugetlbfs"}, "'hugetlbfs'"),
    ({"src": "/proc", "dst": "/mnt/p", "type": "bind"}, "/proc"),
    ({"src": "/proc/sys/kernel", "dst": "/mnt/p", "type": "rbind"}, "/proc"),
    ({"src": "/sys", "dst": "/mnt/s"}, "/sys"),
    ({"src": "relative", "dst": "/mnt/r", "type": "bind"}, "absolute path"),
])
def test_a_tenant_cannot_mount_what_shows_the_host(admin, vcd_module, mount, reason):
    name = create_vserver(vcd_module)
    user = tenant(vcd_module, "MOUNT", owns=(name,))
    f = fault(user.vxdb.mount.set, name=name, **mount)
    assert f.faultCode == 101 and reason in f.faultString, f.faultString
    assert admin.vxdb.mount.get(name=name, dst=mount["dst"]) == []


@pytest.mark.parametrize("mount", [
    {"src": "/srv/data", "dst": "/mnt/data"},
    {"src": "/srv/data", "dst": "/mnt/data", "type": "bind", "opts": "ro"},
    {"src": "/srv/data", "dst": "/mnt/data", "type": "rbind"},
    {"src": "tmpfs", "dst": "/tmp", "type": "tmpfs", "opts": "size=16m,nosuid"},
    {"src": "mqueue", "dst": "/dev/mqueue", "type": "mqueue"},
])
def test_a_tenant_may_bind_its_own_paths_and_mount_tmpfs(admin, vcd_module, mount):
    name = create_vserver(vcd_module)
    user = tenant(vcd_module, "MOUNT", owns=(name,))
    user.vxdb.mount.set(name=name, **mount)
    assert user.vxdb.mount.get(name=name, dst=mount["dst"])[0]["src"] == mount["src"]


def test_an_admin_may_set_any_mount(admin, vcd_module):
    name = create_vserver(vcd_module)
    admin.vxdb.mount.set(name=name, dst="/mnt/d", src="devtmpfs", type="devtmpfs")
    admin.vxdb.mount.set(name=name, dst="/mnt/p", src="proc", type="proc")
    assert [m["dst"] for m in admin.vxdb.mount.get(name=name)] == ["/mnt/d", "/mnt/p"]


@ROOT_ONLY
@pytest.mark.parametrize("mount", [
    {"type": "rbind"}, {"type": "ext4", "opts": "bind"}, {"type": "auto", "opts": "rbind,ro"},
])
def test_every_form_of_bind_takes_its_source_inside_the_vserver(admin, vcd_module, tmp_path,
                                                                  mount):
    """Rows an admin set (or an older VXDB holds) are confined at start as well: the
    source is the guest's path of that name, never the host's."""
    name = create_vserver(vcd_module)
    vdir = vcd_module.vbasedir / name
    host_dir = tmp_path / "host-only"
    host_dir.mkdir()
    (host_dir / "secret").write_text("host")
    guest_twin = vdir / str(host_dir).lstrip("/")
    guest_twin.mkdir(parents=True)
    (guest_twin / "guest-file").write_text("guest")
    (vdir / "mnt" / "h").mkdir(parents=True)
    admin.vxdb.mount.set(name=name, dst="/mnt/h", src=str(host_dir), **mount)
    admin.vx.start(name=name)
    try:
        listing = admin.vx.exec(name=name, command="ls /mnt/h")
    finally:
        admin.vx.stop(name=name)
    assert "guest-file" in listing and "secret" not in listing


@ROOT_ONLY
def test_a_guest_symlink_cannot_turn_a_bind_into_one_of_proc(admin, vcd_module):
    name = create_vserver(vcd_module)
    user = tenant(vcd_module, "MOUNT", "INIT", "EXEC", owns=(name,))
    vdir = vcd_module.vbasedir / name
    (vdir / "srv").mkdir(exist_ok=True)
    (vdir / "mnt" / "p").mkdir(parents=True)
    os.symlink("/proc/sys", vdir / "srv" / "innocent")   # what root inside could plant
    user.vxdb.mount.set(name=name, dst="/mnt/p", src="/srv/innocent")
    f = fault(user.vx.start, name=name)
    assert f.faultCode == 500 and "kernel interface" in f.faultString
    assert user.vx.status(name=name)["running"] is False


# -- addresses ---------------------------------------------------------------------------

def test_an_address_belongs_to_one_vserver_at_a_time(admin, vcd_module):
    first, second = create_vserver(vcd_module), create_vserver(vcd_module)
    alice = tenant(vcd_module, "NET", owns=(first,))
    bob = tenant(vcd_module, "NET", owns=(second,))
    alice.vxdb.nx.addr.set(name=first, addr="10.231.0.5")
    f = fault(bob.vxdb.nx.addr.set, name=second, addr="10.231.0.5", netmask="255.255.0.0")
    assert f.faultCode == 201 and "10.231.0.5" in f.faultString and first not in f.faultString
    # the holder is named to admins only
    f = fault(admin.vxdb.nx.addr.set, name=second, addr="10.231.0.5")
    assert f.faultCode == 201 and first in f.faultString
    assert bob.vxdb.nx.addr.get(name=second) == []
    # the holder may change its own row; once it lets go, the other may take it
    alice.vxdb.nx.addr.set(name=first, addr="10.231.0.5", netmask="255.255.0.0")
    alice.vxdb.nx.addr.remove(name=first, addr="10.231.0.5")
    bob.vxdb.nx.addr.set(name=second, addr="10.231.0.5")
    assert bob.vxdb.nx.addr.get(name=second)[0]["addr"] == "10.231.0.5"


def test_vxdb_itself_refuses_a_second_holder_of_an_address(admin, vcd_module):
    first, second = create_vserver(vcd_module), create_vserver(vcd_module)
    admin.vxdb.nx.addr.set(name=first, addr="10.231.1.1")
    db = sqlite3.connect(vcd_module.datadir / "vxdb")
    try:
        xid = db.execute("SELECT xid FROM vservers WHERE name = ?", (second,)).fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO nx_addr (xid, addr, netmask) VALUES (?, '10.231.1.1', "
                       "'255.255.255.0')", (xid,))
    finally:
        db.close()


def test_the_migration_keeps_duplicate_addresses_for_the_lowest_xid(tmp_path):
    """An older VXDB that holds an address twice migrates without failing."""
    from vcd import vxdb
    from vcd.vxdb import schema
    path = tmp_path / "vxdb"
    conn = vxdb.connect(path, create=True)
    try:
        with vxdb.transaction(conn, immediate=True):
            for statement in vxdb._split(schema.MIGRATIONS[0]):
                conn.execute(statement)
            conn.execute("PRAGMA user_version = 1")
            for xid in (2, 3, 4):
                conn.execute("INSERT INTO vservers (xid, name, vdir) VALUES (?, ?, ?)",
                             (xid, f"v{xid}", f"/vservers/v{xid}"))
                conn.execute("INSERT INTO nx_addr (xid, addr, netmask) VALUES (?, '10.0.0.1', "
                             "'255.255.255.0')", (xid,))
            conn.execute("INSERT INTO nx_addr (xid, addr, netmask) VALUES (3, '10.0.0.3', "
                         "'255.255.255.0')")
        assert vxdb.migrate(conn) == 1
        assert [tuple(r) for r in conn.execute("SELECT xid, addr FROM nx_addr ORDER BY xid")] \
            == [(2, "10.0.0.1"), (3, "10.0.0.3")]
        assert [tuple(r) for r in conn.execute(
            "SELECT xid, addr FROM nx_addr_displaced ORDER BY xid")] == [(3, "10.0.0.1"),
                                                                        (4, "10.0.0.1")]
    finally:
        conn.close()


# -- security settings -------------------------------------------------------------------

def test_security_settings_are_for_admins_only(admin, vcd_module):
    name = create_vserver(vcd_module)
    owner = tenant(vcd_module, *EVERY_CAP, owns=(name,))
    assert owner.vxdb.vx.security.get(name=name) == {"privileged": False, "seccomp": True}
    for params in ({"privileged": True}, {"seccomp": False}, {}):
        f = fault(owner.vxdb.vx.security.set, name=name, **params)
        assert f.faultCode == 101 and "admins only" in f.faultString
    assert owner.vxdb.vx.security.get(name=name) == {"privileged": False, "seccomp": True}
    assert owner.vx.status(name=name)["privileged"] is False
    admin.vxdb.vx.security.set(name=name, privileged=True)
    admin.vxdb.vx.security.set(name=name, seccomp=False)      # keeps privileged
    assert owner.vxdb.vx.security.get(name=name) == {"privileged": True, "seccomp": False}
    assert owner.vx.status(name=name)["privileged"] is True
    admin.vxdb.vx.security.set(name=name, privileged=False, seccomp=True)
    assert admin.vxdb.vx.security.get(name=name) == {"privileged": False, "seccomp": True}


def test_someone_elses_security_settings_do_not_exist(vcd_module):
    name = create_vserver(vcd_module)
    stranger = tenant(vcd_module, *EVERY_CAP)
    assert fault_code(stranger.vxdb.vx.security.get, name=name) == 202


# -- host-protecting defaults ------------------------------------------------------------

def test_a_new_vserver_gets_the_default_process_limit_and_no_memory_limit(admin, vcd_module):
    name = create_vserver(vcd_module)
    assert admin.vxdb.vx.limit.get(name=name) == [
        {"limit": "NPROC", "soft": "4096", "max": "4096"}]
    assert admin.vxdb.dx.limit.get(name=name)["space"] == ""


def test_default_nproc_follows_the_config_and_the_template(make_vcd):
    daemon = make_vcd(default_nproc=0)
    admin = daemon.proxy()
    assert admin.vxdb.vx.limit.get(name=create_vserver(daemon)) == []
    daemon.stop()
    daemon.write_config(default_nproc=300)
    daemon.start()
    admin = daemon.proxy()
    assert admin.vxdb.vx.limit.get(name=create_vserver(daemon), limit="NPROC")[0]["max"] == "300"
    # a template that sets its own NPROC wins
    from templates.metadata import LimitSpec, TemplateMeta
    (daemon.templatedir / "capped.tar.gz").symlink_to(
        next(daemon.templatedir.glob("busybox.tar*")))
    TemplateMeta(name="capped", limits=[LimitSpec("NPROC", 77, 77)]).save(
        daemon.templatedir / "capped.conf")
    name = unique("capped")
    admin.vx.create(name=name, template="capped")
    assert admin.vxdb.vx.limit.get(name=name) == [{"limit": "NPROC", "soft": "77", "max": "77"}]


# -- removal leaves nothing --------------------------------------------------------------

class StatsVcd(VcdDaemon):
    """A vcd whose config also carries a [vstatd] table (where the RRD files live)."""

    def __init__(self, root: Path, vstatd: dict[str, Any], **config: Any) -> None:
        self.vstatd_table = dict(vstatd)
        super().__init__(root, **config)

    def write_config(self, **changes: Any) -> None:
        super().write_config(**changes)
        with open(self.config_path, "a") as f:
            f.write("\n[vstatd]\n")
            f.writelines(f"{k} = {_toml(v)}\n" for k, v in self.vstatd_table.items())


def _rows_of(datadir: Path, xid: int) -> dict[str, int]:
    db = sqlite3.connect(datadir / "vxdb")
    try:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%xid%'")]
        counts = {t: db.execute(f"SELECT count(*) FROM {t} WHERE xid = ?", (xid,)).fetchone()[0]
                  for t in tables}
        return {t: n for t, n in counts.items() if n}
    finally:
        db.close()


def _cgroups_of(xid: int) -> list[str]:
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        group = hierarchy / CGROUP_PARENT / str(xid)
        if group.exists():
            found.append(str(group))
    return found


@ROOT_ONLY
@pytest.mark.parametrize("on_remove", ["keep", "delete"])
def test_a_new_vserver_with_a_removed_ones_xid_starts_clean(tmp_path, on_remove):
    from vstatd.store import ARCHIVE, MARKER, Identity, _write_marker
    rrddir = tmp_path / "rrd"
    daemon = StatsVcd(tmp_path / "vcd", {"rrddir": str(rrddir), "on_remove": on_remove})
    try:
        daemon.start()
        admin = daemon.proxy()
        old = create_vserver(daemon)
        xid = admin.vxdb.xid.get(name=old)
        admin.vxdb.dx.limit.set(name=old, space="65536", inodes=4096)
        admin.vxdb.nx.addr.set(name=old, addr="10.232.0.2")
        admin.vxdb.vx.security.set(name=old, seccomp=False)
        admin.vg.add(group="cleanup", name=old)
        admin.vx.start(name=old)
        admin.vx.exec(name=old, command="sh -c 'echo mine > /root/old-file'")
        admin.vx.stop(name=old)
        image = daemon.datadir / "images" / f"{xid}.img"
        assert image.exists()
        # the statistics vstatd keeps for it (its marker names the vserver)
        db = sqlite3.connect(daemon.datadir / "vxdb")
        created = db.execute("SELECT created FROM vservers WHERE xid = ?", (xid,)).fetchone()[0]
        db.close()
        stats = rrddir / old
        stats.mkdir(parents=True)
        _write_marker(stats, Identity(xid, created), since=int(time.time()))
        (stats / "sys_NPROC.rrd").write_bytes(b"rrd")

        admin.vx.remove(name=old)
        assert not image.exists()
        assert not stats.exists()
        archived = list((rrddir / ARCHIVE).glob(f"{old}.*")) if (rrddir / ARCHIVE).exists() else []
        assert len(archived) == (1 if on_remove == "keep" else 0)
        assert _rows_of(daemon.datadir, xid) == {}
        assert _cgroups_of(xid) == []

        new = create_vserver(daemon, name=old if on_remove == "delete" else None)
        assert admin.vxdb.xid.get(name=new) == xid
        vdir = daemon.vbasedir / new
        assert not (vdir / "root" / "old-file").exists()
        assert not image.exists()
        assert admin.vxdb.dx.limit.get(name=new)["space"] == ""
        assert admin.vxdb.nx.addr.get(name=new) == []
        assert admin.vxdb.vx.security.get(name=new) == {"privileged": False, "seccomp": True}
        assert admin.vg.list(group="cleanup") == []
        assert not (rrddir / new / MARKER).exists()
        assert fault_code(admin.vx.stats, name=new, metric="sys_NPROC") == 200
        admin.vx.start(name=new)
        try:
            assert "old-file" not in admin.vx.exec(name=new, command="ls /root")
        finally:
            admin.vx.stop(name=new)
    finally:
        daemon.cleanup()


@ROOT_ONLY
def test_a_rebuild_is_the_same_vserver_and_keeps_its_configuration(admin, vcd_module):
    name = create_vserver(vcd_module)
    xid = admin.vxdb.xid.get(name=name)
    admin.vxdb.nx.addr.set(name=name, addr="10.232.1.2")
    admin.vxdb.vx.security.set(name=name, seccomp=False)
    admin.vxdb.vx.limit.set(name=name, limit="NPROC", max=123)
    admin.vx.create(name=name, template="busybox", rebuild=True)
    assert admin.vxdb.xid.get(name=name) == xid
    assert admin.vxdb.nx.addr.get(name=name)[0]["addr"] == "10.232.1.2"
    assert admin.vxdb.vx.security.get(name=name)["seccomp"] is False
    assert admin.vxdb.vx.limit.get(name=name, limit="NPROC")[0]["max"] == "123"


# -- tasks -------------------------------------------------------------------------------

@ROOT_ONLY
def test_a_tenant_may_have_task_max_running_tasks_running_and_no_more(make_vcd):
    """Each task is a process: without a bound a tenant's background calls would fill the
    host's memory and process table, and every task.list would read them all."""
    daemon = make_vcd(task_max_running=2)
    admin = daemon.proxy()
    name = create_vserver(daemon)
    user = tenant(daemon, "EXEC", "INIT", owns=(name,))
    user.vx.start(name=name)
    tmp = daemon.vbasedir / name / "tmp"
    wait = "sh -c 'while [ ! -e /tmp/go-{0} ]; do sleep 0.05; done'"
    ids = []
    try:
        ids = [user.vx.exec(name=name, command=wait.format(i), timeout=600, background=True)
               for i in range(2)]
        refused = fault(lambda: user.vx.exec(name=name, command="true", background=True))
        assert refused.faultCode == 302
        assert "task_max_running = 2" in refused.faultString
        # per user: another user's tasks are not counted against it
        other = admin.vx.exec(name=name, command=wait.format("admin"), timeout=600,
                              background=True)
        (tmp / "go-admin").touch()
        (tmp / "go-0").touch()
        wait_until(lambda: not user.task.get(id=ids[0])["running"], what="a task to end")
        # room again for the tenant, once one of its tasks has ended
        ids.append(user.vx.exec(name=name, command="true", background=True))
        wait_until(lambda: not admin.task.get(id=other)["running"], what="admin's task")
    finally:
        for i in range(2):
            (tmp / f"go-{i}").touch()
        for task_id in ids:
            wait_until(lambda: not admin.task.get(id=task_id)["running"], what="tasks ended")
        admin.vx.stop(name=name)


@ROOT_ONLY
def test_a_tenants_rebuild_holds_no_vxdb_write_lock_while_it_extracts(make_vcd):
    """A tenant may rebuild its vserver again and again; were its tree removed and
    extracted inside the write transaction, every other writer of the daemon (another
    user's setter, a failed login to record) would wait, and fail past busy_timeout."""
    import fcntl
    import threading
    from templates.busybox import build_rootfs
    daemon = make_vcd()
    admin = daemon.proxy()
    name = create_vserver(daemon)
    build_rootfs(daemon.templatedir / "dirtpl")
    user = tenant(daemon, "CREATE", owns=(name,))
    # sharing a template directory takes the template store's lock shared: holding it
    # keeps the rebuild in its extraction for as long as the test needs
    lock = os.open(daemon.templatedir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    answers: list[Any] = []

    def rebuild() -> None:
        try:
            answers.append(user.vx.create(name=name, template="dirtpl", rebuild=True))
        except Exception as exc:  # noqa: BLE001 - the test looks at what came back
            answers.append(exc)

    fcntl.flock(lock, fcntl.LOCK_EX)
    worker = threading.Thread(target=rebuild)
    try:
        worker.start()
        wait_until(lambda: (daemon.vbasedir / f".{name}.vcd-partial").exists(),
                   what="the rebuild extracting")
        db = sqlite3.connect(daemon.datadir / "vxdb", timeout=0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")   # free: "database is locked" if the rebuild held it
            db.execute("ROLLBACK")
        finally:
            db.close()
        admin.vcd.user.set(username=unique("other"), password="password-other", admin=False)
        assert answers == []
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        worker.join(120)
    try:
        assert answers == [None]
        assert (daemon.vbasedir / name / "bin" / "busybox").exists()
        db = sqlite3.connect(daemon.datadir / "vxdb")
        try:
            assert db.execute("SELECT template, shared FROM vservers WHERE name = ?",
                              (name,)).fetchone() == ("dirtpl", 1)
        finally:
            db.close()
    finally:
        admin.vx.remove(name=name)      # unmounts the shared template's overlay


@ROOT_ONLY
def test_a_tenants_many_tasks_never_prune_another_users_ended_tasks(make_vcd):
    """task_keep_count counts each user's ended tasks: a tenant starting task after task
    keeps its own newest, and pushes out nobody else's result and log."""
    daemon = make_vcd(task_keep_count=2)
    admin = daemon.proxy()
    name = create_vserver(daemon)
    user = tenant(daemon, "EXEC", "INIT", owns=(name,))
    user.vx.start(name=name)
    try:
        def ended(proxy, task_id):
            return wait_until(lambda: (lambda t: t if not t["running"] else None)(
                proxy.task.get(id=task_id)), what=f"task {task_id} to end")

        mine = admin.vx.exec(name=name, command="echo mine", background=True)
        assert ended(admin, mine)["result"] == "mine\n"
        theirs = []
        for i in range(4):
            theirs.append(user.vx.exec(name=name, command=f"echo {i}", background=True))
            ended(user, theirs[-1])
        # the tenant keeps two of its own (which two, of those that ended within one
        # second, the ids decide)
        listed = {t["id"] for t in user.task.list()}       # prunes, as every start does
        assert len(listed) == 2 and listed <= set(theirs)
        assert admin.task.get(id=mine)["result"] == "mine\n"
        assert admin.task.log(id=mine)["data"] == "mine\n"
    finally:
        admin.vx.stop(name=name)
