"""Azure's own request bodies, taken as they are: what has no local meaning is kept, not refused.

Microsoft's examples and SDK models carry fields a libvirt host has no use for (``osDisk``,
``networkInterfaceConfigurations``, ``adminPassword``, a marketplace ``imageReference``). ARM
callers send them unchanged, so the ARM routes split a body into the part localvmss validates
strictly (the same models as the short paths, ``localvmss.spec``) and the part it keeps: stored
with the set, echoed in its views, and named in the answer so nobody believes they took effect.
Secrets (``adminPassword``, ``customData`` outside the model) are named but never stored.

Pure: no store, no I/O.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from localvmss.errors import InvalidSpec

# Never stored nor echoed, only named: Azure itself never returns them either.
SECRET_FIELDS = frozenset({"adminPassword", "protectedSettings", "secrets"})

# az's image aliases (azure-cli's vm/aliases.json) for Linux; Windows ones cannot run here.
LINUX_IMAGE_ALIASES = frozenset(
    {
        "centos85gen2",
        "debian11",
        "debian12",
        "flatcarlinuxfreegen2",
        "opensuseleap154gen2",
        "rhelraw8lvmgen2",
        "suseles15sp5",
        "ubuntu2204",
        "ubuntu2404",
        "ubuntu2404pro",
        "ubuntults",
        "almalinux9",
    }
)


def _models_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model a field holds (directly, optional, or as list items), and whether it is a list."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found, is_list = _models_in(arg)
            if found is not None:
                return found, is_list
        return None, False
    if origin is list:
        args = typing.get_args(annotation)
        found, _ = _models_in(args[0]) if args else (None, False)
        return found, found is not None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def split_body(model: type[BaseModel], data: Any, path: str = "") -> tuple[Any, dict[str, Any], list[str]]:
    """(the fields ``model`` knows, the others as a nested dict to keep, dotted paths of every
    field not taken). Walks nested models by their aliases; values of known fields pass as they
    are, so the strict parse after this still reports a known field's bad value."""
    if not isinstance(data, dict):
        return data, {}, []
    by_key: dict[str, FieldInfo] = {}
    for field_name, field_info in model.model_fields.items():
        by_key[field_info.alias or field_name] = field_info
        by_key[field_name] = field_info
    known: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        info = by_key.get(str(key))
        if info is None:
            ignored.append(where)
            if key not in SECRET_FIELDS:
                kept[key] = value
            continue
        inner, is_list = _models_in(info.annotation)
        if inner is not None and not is_list and isinstance(value, dict):
            known[key], sub_kept, sub_ignored = split_body(inner, value, where)
        elif inner is not None and is_list and isinstance(value, list):
            items, sub_kept_list, sub_ignored = [], [], []
            for i, item in enumerate(value):
                k, kk, ig = split_body(inner, item, f"{where}[{i}]")
                items.append(k)
                sub_kept_list.append(kk)
                sub_ignored += ig
            known[key] = items
            sub_kept = {"__items__": sub_kept_list} if any(sub_kept_list) else {}
        else:
            known[key], sub_kept, sub_ignored = value, {}, []
        if sub_kept:
            kept[key] = sub_kept
        ignored += sub_ignored
    return known, kept, ignored


def merge_kept(view: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """``view`` with the kept fields put back where they came from; what the view says wins."""
    out = dict(view)
    for key, value in kept.items():
        if key == "__items__":
            continue
        current = out.get(key)
        if isinstance(value, dict) and "__items__" in value and isinstance(current, list):
            out[key] = [
                merge_kept(item, extra) if isinstance(item, dict) else item
                for item, extra in zip(current, value["__items__"], strict=False)
            ] + current[len(value["__items__"]) :]
        elif isinstance(value, dict) and isinstance(current, dict):
            out[key] = merge_kept(current, value)
        elif key not in out or current is None:
            out[key] = value
    return out


def local_image(reference: Any, known_images: set[str]) -> tuple[str, str | None] | None:
    """The local image an ``imageReference`` means, and a note when it stands in for another:
    a local name or an id ending in one is that image; a marketplace reference (publisher, offer,
    sku), a URN ``publisher:offer:sku:version`` or one of az's Linux aliases is the only image
    imported. None when the reference is neither (the strict parse then explains). InvalidSpec
    when it names a Windows image, or several images could stand in."""
    if not isinstance(reference, dict):
        return None
    ref_id = reference.get("id")
    if isinstance(ref_id, str):
        last = ref_id.rstrip("/").rpartition("/")[2]
        if ref_id in known_images:
            return ref_id, None
        if last in known_images:
            return last, f"imageReference.id {ref_id!r} is the local image {last!r}"
    wanted = _marketplace_name(reference)
    if wanted is None:
        return None
    if "windows" in wanted.lower() or wanted.lower().startswith("win20"):
        raise InvalidSpec(
            f"image {wanted!r} is a Windows image; localvmss runs Linux guests from its own images "
            f"({', '.join(sorted(known_images)) or 'none imported yet'})"
        )
    if len(known_images) != 1:
        known = ", ".join(sorted(known_images)) or "none imported yet ('localvmss image import')"
        raise InvalidSpec(
            f"image {wanted!r} is not a local image, and {len(known_images)} images could stand in for it: "
            f"name one in imageReference.id ({known})"
        )
    (only,) = known_images
    return only, f"imageReference {wanted!r} has no local copy; the local image {only!r} stands in for it"


def _marketplace_name(reference: dict[str, Any]) -> str | None:
    parts = [reference.get(k) for k in ("publisher", "offer", "sku")]
    if all(isinstance(p, str) and p for p in parts):
        version = reference.get("version") or "latest"
        return ":".join([*(str(p) for p in parts), str(version)])
    ref_id = reference.get("id")
    if isinstance(ref_id, str) and (ref_id.count(":") == 3 or ref_id.lower() in LINUX_IMAGE_ALIASES):
        return ref_id
    if isinstance(ref_id, str) and ref_id.lower().startswith("win20"):
        return ref_id
    return None
