"""Names and other checked strings are matched whole: "$" lets a trailing newline through and
int()/isdigit() take non-ASCII digits, so every check uses fullmatch and ASCII classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localvmss.autoscale.metrics_catalog import build_query
from localvmss.autoscale.settings import MetricTrigger
from localvmss.cli import autoscale_cmds as ac
from localvmss.errors import InvalidSpec
from localvmss.lb.config import instance_of_server
from localvmss.lb.runtime import HAProxyError, _check_words
from localvmss.model import validate_name
from tests.unit.servicefake import api_client, make_service, refused, snapshot, uniform_body

TRAILING = ["web\n", "web\r", "web\n\n", "w\n", "\nweb", "web\x00", "web ", "wéb", "web\u2028"]


@pytest.mark.parametrize("name", ["w", "web", "web-2", "a" * 32, "a1"])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", [*TRAILING, "", "-web", "web-", "Web", "1web", "a" * 33, "web_1", "web.1"])
def test_names_are_matched_whole(name: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        validate_name(name, "scale set name")
    assert "scale set name" in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize("name", ["web%0A", "web%0D", "w%0A", "web%00"])
def test_api_refuses_a_name_with_a_trailing_newline_and_changes_nothing(tmp_path: Path, name: str) -> None:
    h = make_service(tmp_path)
    client = api_client(h)
    before = snapshot(h.store)
    refused(client.put(f"/scaleSets/{name}", json=uniform_body()), 400, "scale set name")
    refused(client.put("/virtualMachines/" + name, json={}), 400, "virtual machine name")
    refused(client.put("/hosts/" + name, json={"uri": "qemu+ssh://h/system"}), 400, "host name")
    refused(client.put("/images/" + name, json={"sourceDirectory": "/images/x"}), 400, "image name")
    assert snapshot(h.store) == before and h.inventory.calls == []


@pytest.mark.parametrize("word", ["i1\n", "lvmss-web-80/i1\nshutdown", "a;b", "x\r", "\n"])
def test_haproxy_words_are_matched_whole(word: str) -> None:
    with pytest.raises(HAProxyError):
        _check_words(f"set server {word} state ready")


@pytest.mark.parametrize(
    ("name", "iid"),
    [("i0", 0), ("i12", 12), ("i12\n", None), ("i²", None), ("i١", None), ("i", None), ("i01", None), ("x1", None)],
)
def test_server_names_read_back_to_instance_ids(name: str, iid: int | None) -> None:
    assert instance_of_server(name) == iid


@pytest.mark.parametrize("value", ["web-0\n", "web 0", "٣", "a" * 129, ""])
def test_dimension_values_are_matched_whole(value: str) -> None:
    trigger = MetricTrigger.model_validate(
        {
            "metricName": "Percentage CPU",
            "operator": "GreaterThan",
            "threshold": 1,
            "dimensions": [{"DimensionName": "host", "Values": [value]}],
        }
    )
    with pytest.raises(InvalidSpec, match="dimension value"):
        build_query(trigger, "web")


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (ac.parse_duration, "٥m"),
        (ac.parse_clock, "08:00\n0"),
        (ac.parse_clock, "٠٨:٠٠"),
        (ac.parse_scale, "out ٢"),
    ],
)
def test_cli_parsers_take_ascii_digits_only(call: Any, text: str) -> None:
    with pytest.raises(InvalidSpec):
        call(text)
