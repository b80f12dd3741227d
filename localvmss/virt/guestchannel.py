"""The host -> guest command channel: one line out, one line back, over a virtio-serial port.

Every instance domain carries a ``<channel type='unix'>`` named ``AGENT_CHANNEL`` (domainxml);
the base image's ``channel`` service answers ``ping``, ``clock <unix time>`` and ``identity
<instance-id> <hostname> <mac> [<ip>/<prefix> <gateway>]`` on it. The host end is ``virDomainOpenChannel`` on a libvirt
stream, so it works wherever the connection does (a local socket or qemu+ssh) without a path on
the host. ``Host.guest_command`` and ``Host.sync_clock`` are the entry points; this module keeps
the exchange and the reply rules so they can be tested apart from libvirt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import libvirt
from lxml import etree

from localvmss.errors import GuestAgentError, GuestAgentUnavailable
from localvmss.virt.domainxml import AGENT_CHANNEL

MAX_REPLY_BYTES = 4096


def has_agent_channel(domain_xml: str) -> bool:
    """True if the domain XML has the virtio channel the guest's command service listens on."""
    root = etree.fromstring(domain_xml.encode())
    return any(t.get("name") == AGENT_CHANNEL for t in root.iterfind("devices/channel/target"))


def expected_reply_word(line: str) -> str:
    """The first word of a good reply to ``line``: ``pong`` for ``ping``, else the command itself."""
    words = line.split()
    if not words:
        raise GuestAgentError("empty guest command")
    return "pong" if words[0] == "ping" else words[0]


def check_reply(line: str, reply: str) -> str:
    """``reply`` if the guest did what ``line`` asked; GuestAgentError with the guest's reason if not."""
    word = expected_reply_word(line)
    words = reply.split()
    if words[:1] == ["error"] or words[1:2] == ["error"]:
        raise GuestAgentError(f"the guest refused {word!r}: {reply}")
    if words[:1] != [word]:
        raise GuestAgentError(f"unexpected answer to {word!r} from the guest: {reply!r}")
    return reply


def parse_clock_reply(reply: str) -> float:
    """The guest's unix time from ``clock <seconds.micro>``."""
    words = reply.split()
    try:
        return float(words[1])
    except (IndexError, ValueError):
        raise GuestAgentError(f"unreadable clock answer from the guest: {reply!r}") from None


def _is_reply_to(word: str, reply: str) -> bool:
    """A late answer to an earlier command that timed out may still sit in the port: skip it."""
    first = reply.split()[:1]
    return first in ([word], ["error"])


def exchange(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    line: str | Callable[[], str],
    timeout_s: float,
    prime: bool = False,
) -> str:
    """Send ``line`` to the guest's command service and return its reply line (raw, stripped).

    ``line`` may be a function, called just before sending. With ``prime`` a ``ping`` goes
    first and ``line`` only after its ``pong``: the guest polls for a host end about every 0.1 s,
    so a time stamp sent at once would be read up to that much later.

    Raises GuestAgentUnavailable when the domain has no channel, is not running, or nobody
    answers within ``timeout_s`` (a guest still booting, or an image without the service).
    """
    make_line = line if callable(line) else (lambda: str(line))
    probe = make_line()
    if "\n" in probe or not probe.strip():
        raise GuestAgentError(f"a guest command is one non-empty line, not {probe!r}")
    name = dom.name()
    if not has_agent_channel(dom.XMLDesc(0)):
        raise GuestAgentUnavailable(
            f"domain {name} has no {AGENT_CHANNEL} channel (defined by an older localvmss); redefine it to use it"
        )
    state = dom.state()[0]
    if state != libvirt.VIR_DOMAIN_RUNNING:
        raise GuestAgentUnavailable(f"the guest of {name} is not running (libvirt state {state}); nothing can answer")
    word = expected_reply_word(probe)
    stream = conn.newStream(0)
    dom.openChannel(AGENT_CHANNEL, stream, 0)
    result: dict[str, object] = {}

    def receive() -> None:
        """Blocking reads on their own thread, so the caller can give up after ``timeout_s``."""
        buffer = b""
        expect = "pong" if prime else word
        try:
            if not prime:
                stream.send((probe.strip() + "\n").encode())
            while True:
                data = stream.recv(256)
                if not data or not isinstance(data, bytes):
                    result["error"] = "the channel closed before an answer"
                    return
                buffer += data
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    reply = raw.decode(errors="replace").strip()
                    if expect != word and reply == "pong":
                        expect = word
                        stream.send((make_line().strip() + "\n").encode())
                    elif expect == word and _is_reply_to(word, reply):
                        result["reply"] = reply
                        return
                if len(buffer) > MAX_REPLY_BYTES:
                    result["error"] = "an over-long answer"
                    return
        except libvirt.libvirtError as exc:
            result["error"] = exc.get_error_message()

    reader = threading.Thread(target=receive, name=f"guest-channel-{name}", daemon=True)
    try:
        if prime:
            stream.send(b"ping\n")
        reader.start()
        reader.join(timeout_s)
    finally:
        try:
            if reader.is_alive() or "reply" not in result:
                stream.abort()
            else:
                stream.finish()
        except libvirt.libvirtError:
            pass
        reader.join(1.0)
    if "reply" in result:
        return str(result["reply"])
    why = result.get("error") or f"no answer within {timeout_s:.1f} s"
    raise GuestAgentUnavailable(f"the guest of {name} did not answer {word!r} on {AGENT_CHANNEL}: {why}")


def sync_clock(conn: libvirt.virConnect, dom: libvirt.virDomain, timeout_s: float = 5.0) -> float:
    """Set the guest clock to the host's; the remaining skew in seconds (guest minus host).

    The host's time is taken the moment it is sent, after a ``ping`` answered (see ``prime``).
    busybox date takes whole seconds: the guest steps to the nearest one at once (unless it is
    closer already) and answers, so the skew returned is up to half a second; in the background
    it then sets the next whole second precisely (a few ms off), about a second later.
    """
    reply = exchange(conn, dom, lambda: f"clock {time.time():.6f}", timeout_s, prime=True)
    return parse_clock_reply(check_reply("clock", reply)) - time.time()
