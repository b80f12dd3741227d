"""Which libvirt URIs a host may have, depending on who wrote them.

libvirt's remote driver runs programs and opens files named in the URI, as the daemon's user
(root): the ``ext`` transport runs ``?command=``, the ``ssh`` transport runs ``ssh`` (or
``?command=``) and names the remote ``?netcat=``/``?proxy=``/``?mode=``, and ``?socket=``,
``?keyfile=``, ``?pkipath=`` and ``?known_hosts=`` name sockets and files the daemon reads. So:

* a URI from the API (``PUT /hosts/{name}``: anyone who may write to the API socket) is held to
  ``qemu:///system``, ``qemu+unix:///system`` or ``qemu+{ssh,libssh,libssh2,tls,tcp}://[user@]host
  [:port]/system``, with no query but the two yes/no flags ``no_tty`` (ssh) and ``no_verify`` (ssh,
  tls), each ``0`` or ``1``;
* a URI in the configuration file (written by root) may use any query and the ``ext`` transport,
  but must still name the QEMU driver with a transport libvirt knows.

Both are one printable ASCII line. Imports nothing of ours but ``errors``.
"""

from __future__ import annotations

import ipaddress
import re

from localvmss.errors import InvalidSpec

MAX_URI_CHARS = 512
LOCAL_SCHEMES = ("qemu", "qemu+unix")
REMOTE_SCHEMES = ("qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+tls", "qemu+tcp")
API_SCHEMES = LOCAL_SCHEMES + REMOTE_SCHEMES
CONFIG_SCHEMES = API_SCHEMES + ("qemu+ext",)
# Query flags an API URI may carry, per scheme; every other key names a program, file or socket.
API_FLAGS: dict[str, frozenset[str]] = {
    "qemu+ssh": frozenset({"no_tty", "no_verify"}),
    "qemu+tls": frozenset({"no_verify"}),
}
API_URI_RULE = (
    "qemu:///system, or qemu+ssh|libssh|libssh2|tls|tcp://[user@]host[:port]/system "
    "(query: only no_tty=0|1 and no_verify=0|1; the configuration file allows more)"
)

_SCHEME = re.compile(r"(?P<scheme>[a-z0-9+]+)://(?P<rest>.*)")
_REMOTE = re.compile(
    r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})@)?"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"/system(?:\?(?P<query>.*))?"
)
_LOCAL = re.compile(r"/system(?:\?(?P<query>.*))?")


def _one_printable_line(uri: object, what: str) -> str:
    if not isinstance(uri, str) or not uri:
        raise InvalidSpec(f"{what} must be a non-empty string")
    if len(uri) > MAX_URI_CHARS:
        raise InvalidSpec(f"{what} is {len(uri)} characters long; the limit is {MAX_URI_CHARS}")
    if not all("!" <= ch <= "~" for ch in uri):
        raise InvalidSpec(f"{what} {uri[:80]!r} must be printable ASCII without spaces or line breaks")
    return uri


def _scheme(uri: str, allowed: tuple[str, ...], what: str) -> tuple[str, str]:
    match = _SCHEME.fullmatch(uri)
    if match is None or match["scheme"] not in allowed:
        raise InvalidSpec(f"{what} {uri!r} is not a libvirt QEMU URI; schemes allowed here: {', '.join(allowed)}")
    return match["scheme"], match["rest"]


def check_config_host_uri(uri: object, what: str = "host uri") -> str:
    """A host URI from the configuration file: a known QEMU scheme, one printable line."""
    text = _one_printable_line(uri, what)
    _scheme(text, CONFIG_SCHEMES, what)
    return text


def check_api_host_uri(uri: object) -> str:
    """A host URI from the API: the allow-list above, or InvalidSpec naming what is refused."""
    text = _one_printable_line(uri, "uri")
    scheme, rest = _scheme(text, API_SCHEMES, "uri")
    if scheme in LOCAL_SCHEMES:
        match = _LOCAL.fullmatch(rest)
        if match is None:
            raise InvalidSpec(f"uri {text!r} is not allowed: a local host is {scheme}:///system; use {API_URI_RULE}")
    else:
        match = _REMOTE.fullmatch(rest)
        if match is None:
            raise InvalidSpec(f"uri {text!r} is not allowed; use {API_URI_RULE}")
        host = match["host"]
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise InvalidSpec(f"uri {text!r}: {host} is not an IPv6 address") from None
        if match["port"] is not None and int(match["port"]) > 65535:
            raise InvalidSpec(f"uri {text!r}: port {match['port']} is not a TCP port")
    query = match["query"]
    if query is not None:
        allowed = API_FLAGS.get(scheme, frozenset())
        # libvirt splits its query on both '&' and ';' and unescapes %XX: compare the raw text.
        for item in re.split(r"[&;]", query):
            key, sep, value = item.partition("=")
            if key not in allowed or not sep or value not in ("0", "1"):
                flags = ", ".join(f"{f}=0|1" for f in sorted(allowed)) or "none"
                raise InvalidSpec(
                    f"uri {text!r}: query parameter {item[:40]!r} is not allowed through the API "
                    f"(it can name programs, files or sockets); allowed for {scheme}: {flags}; "
                    "hosts in the configuration file may use more"
                )
    return text
