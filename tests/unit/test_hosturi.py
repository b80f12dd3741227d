"""Host URIs: what PUT /hosts/{name} accepts (no transport that runs a program, no query naming a
program, file or socket) and what the configuration file may say; a refusal changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from localvmss.config import config_from_dict
from localvmss.errors import InvalidSpec
from localvmss.hosturi import check_api_host_uri, check_config_host_uri
from tests.unit.servicefake import api_client, make_service, refused, snapshot

ACCEPTED = [
    "qemu:///system",
    "qemu+unix:///system",
    "qemu+ssh://root@rack2/system",
    "qemu+ssh://rack2/system",
    "qemu+ssh://admin@rack2.example.org:2222/system",
    "qemu+ssh://root@rack2/system?no_tty=1",
    "qemu+ssh://root@rack2/system?no_tty=1&no_verify=0",
    "qemu+libssh://root@rack2/system",
    "qemu+libssh2://root@rack2/system",
    "qemu+tls://rack2/system",
    "qemu+tls://rack2/system?no_verify=1",
    "qemu+tcp://198.19.0.11/system",
    "qemu+tcp://198.19.0.11:16509/system",
    "qemu+tcp://[fd00::11]/system",
]

REFUSED = [
    ("qemu+ext:///system?command=/tmp/x", "schemes allowed here"),
    ("qemu+ssh://h/system?command=/tmp/x", "query parameter 'command=/tmp/x'"),
    ("qemu+ssh://h/system?netcat=/tmp/x", "netcat"),
    ("qemu+ssh://h/system?proxy=native", "proxy"),
    ("qemu+ssh://h/system?mode=legacy", "mode"),
    ("qemu+ssh://h/system?keyfile=/root/.ssh/id", "keyfile"),
    ("qemu+ssh://h/system?known_hosts=/etc/shadow", "known_hosts"),
    ("qemu+tls://h/system?pkipath=/etc", "pkipath"),
    ("qemu+unix:///system?socket=/run/other.sock", "socket"),
    ("qemu:///system?socket=/run/other.sock", "socket"),
    ("qemu+ssh://h/system?no_tty=1;command=/tmp/x", "no_tty=1;command"),  # libvirt splits on ';' too
    ("qemu+ssh://h/system?no_tty=yes", "no_tty=yes"),
    ("qemu+ssh://h/system?%63ommand=/tmp/x", "%63ommand"),  # libvirt unescapes query keys
    ("qemu+ssh://h/system?", "query parameter ''"),
    ("qemu+tcp://h/system?no_tty=1", "allowed for qemu+tcp: none"),
    ("qemu+ssh://-oProxyCommand=x/system", "not allowed"),
    ("qemu+ssh://root:pw@h/system", "not allowed"),
    ("qemu+ssh://h/session", "not allowed"),
    ("qemu+ssh://h", "not allowed"),
    ("qemu+ssh://h/system#frag", "not allowed"),
    ("qemu+ssh://h:0/system", "not allowed"),
    ("qemu+ssh://h:70000/system", "not a TCP port"),
    ("qemu+ssh://[1::2::3]/system", "not an IPv6 address"),
    ("qemu:///session", "local host is qemu:///system"),
    ("qemu://h/system", "local host is qemu:///system"),
    ("xen:///system", "not a libvirt QEMU URI"),
    ("test:///default", "not a libvirt QEMU URI"),
    ("QEMU:///system", "not a libvirt QEMU URI"),
    ("qemu+ssh://h/system\n", "printable ASCII"),
    ("qemu+ssh://r\noot@h/system", "printable ASCII"),  # urllib would silently drop the newline
    ("qemu+ssh://h/system ", "printable ASCII"),
    ("qemu+ssh://hé/system", "printable ASCII"),
    ("", "non-empty"),
    ("qemu+ssh://" + "a" * 600 + "/system", "limit is 512"),
]


@pytest.mark.parametrize("uri", ACCEPTED)
def test_api_accepts_the_allowed_transports(uri: str) -> None:
    assert check_api_host_uri(uri) == uri


@pytest.mark.parametrize(("uri", "words"), REFUSED)
def test_api_refuses_uris_that_run_or_open_things(uri: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        check_api_host_uri(uri)
    assert words in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("qemu+unix:///system?socket=/var/lib/lab/run/libvirt-sock", True),  # the lab's own hosts
        ("qemu+ssh://root@h/system?keyfile=/root/.ssh/lab", True),
        ("qemu+ext:///system?command=/usr/local/bin/tunnel", True),  # root wrote it
        ("qemu+tcp://198.19.0.11/system", True),
        ("xen:///system", False),
        ("test:///default", False),
        ("qemu+ssh://h/system\nx", False),
        ("/system", False),
    ],
)
def test_configuration_file_uris_need_a_known_scheme(uri: str, ok: bool) -> None:
    data = {"hosts": [{"name": "h1", "uri": uri}]}
    if ok:
        assert check_config_host_uri(uri) == uri
        assert config_from_dict(data).hosts[0].uri == uri
    else:
        with pytest.raises(InvalidSpec, match="uri of \\[\\[hosts\\]\\] 'h1'"):
            config_from_dict(data)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        *[({"uri": uri}, words) for uri, words in REFUSED if uri],
        ({"uri": ""}, "non-empty"),
        ({"uri": "qemu+ssh://h/system", "network": "../x"}, "network"),
        ({"uri": "qemu+ssh://h/system", "network": 7}, "network"),
        ({"uri": "qemu+ssh://h/system", "zone": ""}, "zone"),
        ({"uri": "qemu+ssh://h/system", "staticAddresses": "198.18.0.2"}, "FIRST-LAST"),
        ({"uri": "qemu+ssh://h/system", "staticAddresses": "198.18.0.9-198.18.0.2"}, "above the last"),
        ({"uri": "qemu+ssh://h/system", "staticAddresses": 5}, "staticAddresses"),
    ],
)
def test_put_host_with_a_bad_uri_is_refused_and_changes_nothing(tmp_path: Path, body: dict, words: str) -> None:
    h = make_service(tmp_path)
    before = snapshot(h.store)
    refused(api_client(h).put("/hosts/rack2", json=body), 400, words)
    assert snapshot(h.store) == before
    assert h.inventory.calls == [] and h.reconciler.wakes == 0


def test_put_host_with_a_good_uri_reaches_the_inventory(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    h.service.add_host("rack2", {"uri": "qemu+ssh://root@rack2/system?no_tty=1", "zone": "2"})
    (call,) = h.inventory.calls
    assert call[0] == "add_host" and call[1].uri == "qemu+ssh://root@rack2/system?no_tty=1"
    assert call[1].static_addresses is None


def test_put_host_with_static_addresses_reaches_the_inventory(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    body = {"uri": "qemu+ssh://root@rack2/system", "staticAddresses": "198.18.0.2-198.18.0.9"}
    h.service.add_host("rack2", body)
    (call,) = h.inventory.calls
    assert call[0] == "add_host" and call[1].static_addresses == "198.18.0.2-198.18.0.9"
