"""Load a YAML config, apply ``key.sub=value`` overrides, validate; errors name the file and the key."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from personagpt.errors import ConfigError


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    """``["train.lr=3e-4", "data.persona=most_active"]`` -> ``[("train.lr", 3e-4), ...]``.

    Values are parsed as YAML scalars/flow collections (numbers, booleans, null, ``[1, 2]``)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from None
        out.append((key, value))
    return out


def apply_overrides(data: dict[str, Any], overrides: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    for key, value in overrides:
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[:i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def _format_validation(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = e["msg"]
            if "input" in e and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None, overrides: Sequence[str] = (), schema=None):
    """Read ``path`` (or start from defaults when None), apply overrides, validate against ``schema``."""
    from personagpt.config.root import Config

    schema = schema or Config
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    parsed = parse_overrides(overrides)
    apply_overrides(data, parsed)
    if parsed:
        source += " (with overrides " + ", ".join(k for k, _ in parsed) + ")"
    try:
        cfg = schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source)) from None
    cfg._source = str(path) if path is not None else None
    return cfg
