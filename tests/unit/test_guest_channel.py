"""The command channel's pure parts: the domain XML element and the reply rules."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from localvmss.errors import GuestAgentError
from localvmss.virt import guestchannel
from localvmss.virt.domainxml import AGENT_CHANNEL, InstanceDomain, build_domain_xml


def test_every_instance_domain_has_the_agent_channel_without_a_path() -> None:
    xml = build_domain_xml(
        InstanceDomain(
            name="d",
            domain_type="qemu",
            vcpus=1,
            memory_mib=256,
            pool="p",
            os_volume="o",
            seed_volume="s",
            network="n",
            mac="52:54:00:00:00:01",
        )  # fmt: skip
    )
    channels = ET.fromstring(xml).findall("devices/channel")
    assert len(channels) == 1
    assert channels[0].get("type") == "unix" and channels[0].find("source") is None, "libvirt picks the socket"
    assert channels[0].find("target").attrib == {"type": "virtio", "name": AGENT_CHANNEL}
    assert guestchannel.has_agent_channel(xml)
    assert not guestchannel.has_agent_channel("<domain><devices/></domain>")


@pytest.mark.parametrize(
    ("line", "reply", "error"),
    [
        ("ping", "pong", None),
        ("clock 1.5", "clock 1.500000", None),
        ("identity a b 52:54:00:00:00:01", "identity ok", None),
        ("identity a b c", "identity error invalid mac", "refused"),
        ("clock x", "clock error not a unix time: x", "refused"),
        ("bogus", "error unknown command: bogus", "refused"),
        ("ping", "clock 1.0", "unexpected"),
    ],
)
def test_check_reply(line: str, reply: str, error: str | None) -> None:
    if error is None:
        assert guestchannel.check_reply(line, reply) == reply
    else:
        with pytest.raises(GuestAgentError, match=error):
            guestchannel.check_reply(line, reply)


@pytest.mark.parametrize(("reply", "value"), [("clock 1796151485.685391", 1796151485.685391), ("clock 0.000001", 1e-6)])
def test_parse_clock_reply(reply: str, value: float) -> None:
    assert guestchannel.parse_clock_reply(reply) == value


@pytest.mark.parametrize("reply", ["clock", "clock soon"])
def test_unreadable_clock_reply(reply: str) -> None:
    with pytest.raises(GuestAgentError):
        guestchannel.parse_clock_reply(reply)
