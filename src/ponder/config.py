"""Job configs: pydantic models, filled from YAML and command-line flags.

Every job's settings are one pydantic model. A YAML file (``--config``) gives a base, flags
override it, and validation errors name the offending key, e.g. ``train.lr: Input should
be greater than 0``. Unknown keys are errors (``extra="forbid"``), so a typo never passes
silently. :func:`add_model_arguments` turns a model's fields into argparse flags
(``--steps``, nested ``--train.lr``) with each field's description as its help.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ponder.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
_SENTINEL = argparse.SUPPRESS  # unset flags stay out of the namespace (and out of --help defaults)


def _flag(path: str) -> str:
    return "--" + path.replace("_", "-")


def _scalar_type(annotation):
    """The argparse converter of a field annotation, or None for non-scalar fields."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_type(args[0]) if len(args) == 1 else None
    if origin is typing.Literal:
        return str
    if origin is list and typing.get_args(annotation) in ((int,), (float,), (str,)):
        item = typing.get_args(annotation)[0]
        return lambda text: [item(x) for x in text.split(",") if x.strip()]
    if annotation in (int, float, str, bool, Path):
        return annotation
    return None


def add_model_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str = "") -> None:
    """Add one flag per scalar field of ``model`` (recursing into nested models)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            add_model_arguments(parser, ann, prefix=f"{path}.")
            continue
        conv = _scalar_type(ann)
        if conv is None:
            continue
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or "").rstrip(".")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        choices = list(typing.get_args(ann)) if typing.get_origin(ann) is typing.Literal else None
        if conv is bool:
            parser.add_argument(
                _flag(path), dest=path, action=argparse.BooleanOptionalAction, default=_SENTINEL, help=help_text
            )
        else:
            is_list = typing.get_origin(ann) is list
            metavar = None if choices else (f"{name.upper()}[,...]" if is_list else name.upper())
            parser.add_argument(
                _flag(path),
                dest=path,
                type=conv if conv is not Path else str,
                default=_SENTINEL,
                choices=choices,
                help=help_text,
                metavar=metavar,
            )


def _set_path(data: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        data = data.setdefault(k, {})
    data[keys[-1]] = value


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = "unknown key (check its spelling)" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return f"invalid settings in {source}:\n" + "\n".join(lines)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _merge(base: dict, given: dict) -> dict:
    """``given`` over ``base``, recursively for nested mappings."""
    out = dict(base)
    for key, value in given.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _over_nested_defaults(model: type[BaseModel], data: dict) -> dict:
    """Settings of a nested model given in part keep the job's own default for the rest.

    Without this, ``--train.steps 40`` (or a YAML ``train: {steps: 40}``) would rebuild ``train``
    from its class defaults and silently drop the job's other ``train`` settings.
    """
    out = dict(data)
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(out.get(name), dict) and isinstance(default, BaseModel):
            out[name] = _merge(default.model_dump(), out[name])
    return out


def build_config(model: type[M], config_path: str | Path | None = None, overrides: dict | None = None) -> M:
    """Validate YAML (optional) + overrides (dotted keys) into ``model``; errors name the key.

    A nested settings block given in part keeps the job's defaults for the keys not given.
    """
    data = read_yaml(config_path) if config_path else {}
    for path, value in (overrides or {}).items():
        if value is not _SENTINEL:
            _set_path(data, path, value)
    data = _over_nested_defaults(model, data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        source = f"{config_path} and the command line" if config_path else "the command line"
        raise ConfigError(_format_error(e, source)) from None


def config_from_args(model: type[M], args: argparse.Namespace) -> M:
    """The config of a job from its parsed arguments (``--config`` plus field flags)."""
    overrides = {k: v for k, v in vars(args).items() if "." in k or k in model.model_fields}
    return build_config(model, getattr(args, "config", None), overrides)


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
