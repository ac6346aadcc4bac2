"""Turn a spec into its typed model, or into messages that name the field and the reason."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...], prefix: str = "spec") -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def messages(exc: ValidationError, prefix: str = "spec") -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        # "Value error, exactly one of …" → "exactly one of …"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{field_path(err['loc'], prefix)}: {msg}")
    return out


def parse(model: type[M], data: Any, prefix: str = "spec") -> tuple[M | None, list[str]]:
    try:
        return model.model_validate(data if data is not None else {}), []
    except ValidationError as exc:
        return None, messages(exc, prefix)
