"""The network of a context: its own namespace, one veth pair, routed from the host.

Inside: ``eth0`` with the spec's addresses (and broadcast), loopback up, and a
default route out of eth0.  Host side: ``vx<xid>[-tag]`` without an address,
a /32 route per context address, proxy ARP and a strict reverse-path filter (a
packet from the context carries one of its own addresses; IPv6, which has no such
filter, is off there when the context has no IPv6 address), so the host (and what it
forwards) reaches the context and the context's ARP for any host address is
answered.  The pair is created in the host namespace, then its inner end is
moved; when the context's namespace dies the kernel deletes both ends.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from ..api import NetAddr, NetworkError

INNER_NAME = "eth0"


@dataclass(frozen=True)
class NetPlan:
    host_if: str                      # the host end; the peer is INNER_NAME inside
    addresses: list[tuple[str, int]]  # (address, prefix length)
    broadcast: str | None


def host_ifname(xid: int, tag: str) -> str:
    name = f"vx{xid}" + (f"-{tag}" if tag else "")
    return name[:15]


def plan(xid: int, tag: str, addrs: list[NetAddr], broadcast: str | None) -> NetPlan:
    out = []
    for a in addrs:
        try:
            ip = ipaddress.ip_address(a.addr)
            if ip.version == 4:
                prefix = ipaddress.IPv4Network(f"0.0.0.0/{a.netmask or '255.255.255.0'}").prefixlen
            else:
                prefix = int(a.netmask or 64) if str(a.netmask or "64").isdigit() else \
                    ipaddress.IPv6Network(f"::/{a.netmask}").prefixlen
        except ValueError as e:
            raise NetworkError(f"invalid address {a.addr}/{a.netmask}: {e}") from None
        out.append((str(ip), prefix))
    if broadcast is not None:
        try:
            ipaddress.IPv4Address(broadcast)
        except ValueError as e:
            raise NetworkError(f"invalid broadcast {broadcast}: {e}") from None
    host = host_ifname(xid, tag)
    return NetPlan(host, out, broadcast)


def _ipr():
    from pyroute2 import IPRoute  # imported late: 200 ms and 20 MiB only where networks exist
    return IPRoute()


def create_pair(p: NetPlan, pid: int) -> None:
    """Host side, once pid has its own network namespace: the veth pair, its peer made
    right in there as INNER_NAME (moving a made device to another namespace waits 20-25
    ms in the kernel, most of a start; a rename costs more), proxy ARP and the reverse-path filter on the host end, the
    host end up, a route to each address."""
    netns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _ipr() as ipr:
            ipr.link("add", ifname=p.host_if, kind="veth",
                     peer={"ifname": INNER_NAME, "net_ns_fd": netns_fd})
            host = ipr.link_lookup(ifname=p.host_if)
            if not host:
                raise NetworkError(f"veth pair {p.host_if} vanished")
            # before the link is up: nothing passes without the filter
            _host_sysctls(p)
            ipr.link("set", index=host[0], state="up")
            for addr, _prefix in p.addresses:
                ipr.route("add", dst=addr, dst_len=128 if ":" in addr else 32, oif=host[0],
                          family=10 if ":" in addr else 2)
    finally:
        os.close(netns_fd)


def _host_sysctls(p: NetPlan) -> None:
    """Of the host end (the writer's network namespace: the supervisor's)."""
    with open(f"/proc/sys/net/ipv4/conf/{p.host_if}/proxy_arp", "w") as f:
        f.write("1")
    # Strict reverse-path filter (RFC 3704): a packet from the context is taken only
    # with a source the host routes back out of this veth, i.e. one of the context's own
    # addresses. Without it root inside with NET_ADMIN (or NET_RAW) sends as another
    # vserver or the host (the kernel takes max(all, this interface); an admin's "all=2"
    # makes it loose again).
    with open(f"/proc/sys/net/ipv4/conf/{p.host_if}/rp_filter", "w") as f:
        f.write("1")
    if any(":" in a for a, _ in p.addresses):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{p.host_if}/proxy_ndp", "w") as f:
                f.write("1")
        except OSError:
            pass
    else:
        # IPv6 has no rp_filter: with IPv6 on the host end, root inside (NET_ADMIN, or
        # IPV6_FREEBIND to the end's link-local address) sent the host datagrams from any
        # IPv6 source, the host's own network's too. A context without an IPv6 address
        # has no IPv6 to the host at all.
        try:
            with open(f"/proc/sys/net/ipv6/conf/{p.host_if}/disable_ipv6", "w") as f:
                f.write("1")
        except FileNotFoundError:
            pass    # a kernel without IPv6


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Inside a new network namespace: `lo` up. An ioctl, not netlink: every default
    vserver (HIDE_NETIF) gets its own namespace, and importing pyroute2 in the start
    path would cost more than the whole start; the guest can't do it without NET_ADMIN."""
    import fcntl
    import socket
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, req)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def configure_inside(p: NetPlan) -> None:
    """Inside the context's namespace: eth0, its addresses, loopback, default route."""
    loopback_up()
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=INNER_NAME)
        if not found:
            raise NetworkError(f"the veth peer {INNER_NAME} did not arrive in the context")
        idx = found[0]
        for addr, prefix in p.addresses:
            kw = {}
            # RFC 3021: a /31 (and a /32) has no broadcast address; its other address
            # is the peer, which a broadcast would make unreachable
            if ":" not in addr and prefix < 31:
                kw["broadcast"] = p.broadcast or str(
                    ipaddress.IPv4Network(f"{addr}/{prefix}", strict=False).broadcast_address)
            ipr.addr("add", index=idx, address=addr, prefixlen=prefix, **kw)
        ipr.link("set", index=idx, state="up")
        if any(":" not in a for a, _ in p.addresses):
            ipr.route("add", dst="0.0.0.0", dst_len=0, oif=idx, scope=253, family=2)


def delete_host_side(host_if: str) -> None:
    """Best-effort removal (the kernel removes the pair itself when the namespace dies)."""
    try:
        with _ipr() as ipr:
            idx = ipr.link_lookup(ifname=host_if)
            if idx:
                ipr.link("del", index=idx[0])
    except Exception:
        pass


def read_counters(pid: int) -> dict[str, tuple[int, int, int, int, int]]:
    """Per interface (rx_packets, rx_bytes, tx_packets, tx_bytes, errors) of pid's netns."""
    out = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        v = [int(x) for x in rest.split()]
        out[name.strip()] = (v[1], v[0], v[9], v[8], v[2] + v[10])
    return out
