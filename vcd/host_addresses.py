"""Which IPv4 addresses a vserver may not hold, and why (issue 11, "Addresses").

libvserver routes every address of a vserver from the host: a /32 route in the host's
main table out of the vserver's veth plus proxy ARP (``libvserver/native/netns.py``).
A /32 beats every wider route, so an address the host itself talks to (its default
gateway, a peer on one of its links, one of its own addresses) would send the host's
own traffic for it into that vserver: a tenant with the NET capability could take over
the host's DNS server or gateway traffic. Addresses that can never be a vserver's
(loopback, unspecified, multicast, the reserved and limited-broadcast block) are
refused for everyone.
"""
from __future__ import annotations

import ipaddress

# RFC 1122 3.2.1.3 and RFC 5771 / RFC 1112: never a unicast address of one host
SPECIAL = {
    ipaddress.IPv4Network("0.0.0.0/8"): "'this network' (unspecified)",
    ipaddress.IPv4Network("127.0.0.0/8"): "loopback (every vserver has its own lo)",
    ipaddress.IPv4Network("224.0.0.0/4"): "multicast",
    ipaddress.IPv4Network("240.0.0.0/4"): "reserved or the limited broadcast",
}

_KERNEL_PROTO = 2   # RTPROT_KERNEL: the connected subnet of one of the host's addresses
_MAIN_TABLE = 254


def special_kind(addr: str) -> str | None:
    """What kind of non-unicast address ``addr`` (dot-decimal) is, or None."""
    ip = ipaddress.IPv4Address(addr)
    for net, kind in SPECIAL.items():
        if ip in net:
            return kind
    return None


def host_use(addr: str) -> str | None:
    """Why the host itself uses ``addr`` (one of its addresses, a gateway of one of its
    routes, or an address on a subnet one of its own addresses is on), or None.

    Read from the kernel (rtnetlink, the host's network namespace) at the time of the
    call; routes to vservers (libvserver's /32 routes, proto static) do not count."""
    from pyroute2 import IPRoute   # late: only the non-admin address path needs it
    ip = ipaddress.IPv4Address(addr)
    with IPRoute() as ipr:
        for a in ipr.get_addr(family=2):
            for attr in ("IFA_LOCAL", "IFA_ADDRESS"):
                if a.get_attr(attr) == addr:
                    return "an address of the host"
        for r in ipr.get_routes(family=2, table=_MAIN_TABLE):
            if r.get_attr("RTA_GATEWAY") == addr:
                return "the gateway of one of the host's routes"
            dst = r.get_attr("RTA_DST")
            if r["proto"] == _KERNEL_PROTO and dst is not None and \
                    ip in ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False):
                return f"on the host's own link {dst}/{r['dst_len']}"
    return None
