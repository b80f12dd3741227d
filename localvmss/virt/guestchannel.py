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
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

import libvirt

from localvmss.errors import GuestAgentError, GuestAgentUnavailable
from localvmss.virt.domainxml import AGENT_CHANNEL

MAX_REPLY_BYTES = 4096


def has_agent_channel(domain_xml: str) -> bool:
    """True if the domain XML has the virtio channel the guest's command service listens on."""
    root = ET.fromstring(domain_xml)
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
    One command of ``converse``; see there."""
    return converse(conn, dom, [line], timeout_s, prime=prime)[0]


def converse(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    lines: Sequence[str | Callable[[], str]],
    timeout_s: float,
    prime: bool = False,
) -> list[str]:
    """Send ``lines`` to the guest's command service one after the other over one stream, each
    after the reply to the one before; returns the replies (raw, stripped). One stream for
    several commands saves the guest's poll for a new host end and libvirt's channel set-up.

    A line may be a function, called just before it is sent (a time stamp). With ``prime`` a
    ``ping`` goes first and the lines only after its ``pong``: the guest polls for a host end, so
    a time stamp sent at once would be read later than it was taken.

    Raises GuestAgentUnavailable when the domain has no channel, is not running, or nobody
    answers within ``timeout_s`` (a guest still booting, or an image without the service).
    """
    makers = [m if callable(m) else (lambda text=str(m): text) for m in lines]
    probes = [m() for m in makers]
    for probe in probes:
        if "\n" in probe or not probe.strip():
            raise GuestAgentError(f"a guest command is one non-empty line, not {probe!r}")
    if not probes:
        return []
    name = dom.name()
    if not has_agent_channel(dom.XMLDesc(0)):
        raise GuestAgentUnavailable(
            f"domain {name} has no {AGENT_CHANNEL} channel (defined by an older localvmss); redefine it to use it"
        )
    state = dom.state()[0]
    if state != libvirt.VIR_DOMAIN_RUNNING:
        raise GuestAgentUnavailable(f"the guest of {name} is not running (libvirt state {state}); nothing can answer")
    words = [expected_reply_word(p) for p in probes]
    stream = conn.newStream(0)
    dom.openChannel(AGENT_CHANNEL, stream, 0)
    replies: list[str] = []
    result: dict[str, object] = {}

    def send(step: int) -> None:
        stream.send((makers[step]().strip() + "\n").encode())

    def receive() -> None:
        """Blocking reads on their own thread, so the caller can give up after ``timeout_s``."""
        buffer = b""
        step = -1 if prime else 0  # -1: waiting for the pong
        try:
            if not prime:
                send(0)
            while True:
                data = stream.recv(256)
                if not data or not isinstance(data, bytes):
                    result["error"] = "the channel closed before an answer"
                    return
                buffer += data
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    reply = raw.decode(errors="replace").strip()
                    if step == -1 and reply == "pong":
                        step = 0
                        send(0)
                    elif step >= 0 and _is_reply_to(words[step], reply):
                        replies.append(reply)
                        step += 1
                        if step == len(makers):
                            result["done"] = True
                            return
                        send(step)
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
            if reader.is_alive() or "done" not in result:
                stream.abort()
            else:
                stream.finish()
        except libvirt.libvirtError:
            pass
        reader.join(1.0)
    if "done" in result:
        return list(replies)
    word = words[len(replies)] if len(replies) < len(words) else words[-1]
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
