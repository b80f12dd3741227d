"""Probe paths (the set's health probe and the load balancer's) are refused at create and at
update unless they are short printable ASCII starting with '/', with no space, quote or control
character: one bad path used to stop every set's health probing (UnicodeEncodeError) or make
HAProxy refuse the whole configuration (a quote)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localvmss.errors import InvalidSpec
from localvmss.lb.spec import check_probe_path
from tests.unit.servicefake import api_client, make_service, refused, snapshot, uniform_body

GOOD = ["/", "/healthz", "/health/ready?verbose=1&x=2", "/a-b_c.d~e", "/%7Euser", "/" + "a" * 254]
BAD = [
    ("healthz", "must start with '/'"),
    ("", "must start with '/'"),
    ("/héalth", "ASCII"),
    ("/health\u2028", "whitespace"),
    ("/ready\u00a0", "whitespace"),
    ("/a b", "whitespace"),
    ("/a\tb", "whitespace"),
    ("/a\nb", "whitespace"),
    ("/healthz\n", "whitespace"),
    ("/a\x00b", "control"),
    ("/a\x7fb", "control"),
    ("/it's", "quotes"),
    ('/a"b', "quotes"),
    ("/a`b`", "quotes"),
    ("/a#b", "'#'"),
    ("/a\\b", "'\\'"),
    ("/a{b}", "ASCII URL characters"),
    ("/a<b>", "ASCII URL characters"),
    ("/" + "a" * 255, "limit is 255"),
]


@pytest.mark.parametrize("path", GOOD)
def test_good_probe_paths(path: str) -> None:
    assert check_probe_path(path) == path


@pytest.mark.parametrize(("path", "words"), BAD)
def test_bad_probe_paths(path: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        check_probe_path(path, "health probe path")
    assert words in err.value.message and err.value.message.startswith("health probe path")
    assert "\n" not in err.value.message


def health(path: str) -> dict[str, Any]:
    return {"networkProfile": {"healthProbe": {"protocol": "http", "port": 80, "path": path}}}


def lb(path: str) -> dict[str, Any]:
    return {
        "loadBalancingRules": [{"protocol": "Tcp", "frontendPort": 8081, "backendPort": 80}],
        "probes": [{"protocol": "Http", "requestPath": path}],
    }


@pytest.mark.parametrize(("path", "words"), BAD)
@pytest.mark.parametrize("where", ["healthProbe", "loadBalancer"])
def test_bad_paths_are_refused_at_create_and_update_and_change_nothing(
    tmp_path: Path, path: str, words: str, where: str
) -> None:
    h = make_service(tmp_path)
    client = api_client(h)

    def body(p: str) -> dict[str, Any]:
        return uniform_body(2, **health(p)) if where == "healthProbe" else uniform_body(2, lb=lb(p))

    before = snapshot(h.store)
    refused(client.put("/scaleSets/web", json=body(path)), 400, words)
    assert snapshot(h.store) == before
    assert client.put("/scaleSets/web", json=body("/healthz")).status_code == 201
    before = snapshot(h.store)
    refused(client.put("/scaleSets/web", json=body(path)), 400, words)
    assert snapshot(h.store) == before
