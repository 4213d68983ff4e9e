"""Job configs: pydantic models, filled from YAML and command-line flags.

Every job's settings are one pydantic model. A YAML file (``--config``) gives a base, flags
override it, and validation errors name the offending key, e.g. ``train.lr: Input should
be greater than 0``. Unknown keys are errors (``extra="forbid"``), so a typo never passes
silently, and so is a key given twice in one YAML mapping. Every integer setting has a range: its own
bounds, within a 32-bit signed integer (seeds from 0), so a huge number fails here rather than
deep inside a step. :func:`add_model_arguments` turns a model's fields into argparse flags
(``--steps``, nested ``--train.lr``) with each field's description and effective default as
its help. A nested flag or YAML key overrides only the field it names: the rest of the nested
block keeps the job's own defaults (``ponder demo --rlp.steps 5`` keeps the demo's RLP lr).
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from ponder.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: The pydantic config of every settings model: an unknown key is an error, and so is inf or NaN in any
#: float setting (an infinite learning rate would turn every weight into NaN).
SETTINGS = ConfigDict(extra="forbid", allow_inf_nan=False)
#: The widest range of any integer setting (a C int: what torch, numpy and the sampler's seeds take).
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_SENTINEL = argparse.SUPPRESS  # unset flags stay out of the namespace (and out of --help defaults)


def parse_seeds(text: str | int | list) -> list[int]:
    """Seeds from ``"0-9"`` (a range, both ends included), ``"0,1,2"``, a mix (``"0-4,7"``), one number,
    or a list of these. Anything else is a :class:`ConfigError` whose one line says what to pass."""
    if isinstance(text, bool) or not isinstance(text, int | str | list | tuple):
        raise ConfigError(f"seeds: {text!r} is not a seed list; pass e.g. 0-9 or 0,1,2")
    parts = [str(t) for t in text] if isinstance(text, list | tuple) else str(text).replace(" ", "").split(",")
    seeds: list[int] = []
    for part in filter(None, parts):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ConfigError(
                f"seeds: cannot read {part!r} in {text!r}; pass a range 0-9, a list 0,1,2 or both (0-4,7)"
            )
        lo, hi = int(first), int(last) if dash else int(first)
        if hi > INT_MAX:
            raise ConfigError(f"seeds: {part!r} is out of range; seeds run from 0 to {INT_MAX}")
        if hi < lo:
            raise ConfigError(f"seeds: range {part!r} runs backwards; write it low-high, e.g. {hi}-{lo}")
        seeds += range(lo, hi + 1)
    if not seeds:
        raise ConfigError(f"seeds: {text!r} names no seed; pass e.g. 0-9 or 0,1,2")
    if len(set(seeds)) != len(seeds):
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ConfigError(f"seeds: {twice} listed more than once in {text!r}; list each seed once")
    return seeds


def parse_choices(text: str, allowed, what: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (blanks dropped), each one of ``allowed``; else a one-line :class:`ConfigError`."""
    chosen = [c.strip() for c in str(text).split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return chosen


#: A settings field of seeds: a YAML list, or a string such as ``0-9`` / ``0,1,2`` (flags and YAML alike).
SeedList = Annotated[list[int], BeforeValidator(parse_seeds)]


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
    if origin is list and typing.get_args(annotation) == (int,):
        return parse_seeds  # the only integer lists are seed lists: ranges too (0-9)
    if origin is list and typing.get_args(annotation) in ((float,), (str,)):
        item = typing.get_args(annotation)[0]
        return lambda text: [item(x) for x in text.split(",") if x.strip()]
    if annotation in (int, float, str, bool, Path):
        return annotation
    return None


def _nested_model(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def add_model_arguments(
    parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None
) -> None:
    """Add one flag per scalar field of ``model`` (recursing into nested models).

    ``defaults``: the instance whose values the help shows (a nested block's default in its
    parent, e.g. the demo's RLP settings), else the model's own field defaults.
    """
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        default = getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)
        if nested := _nested_model(ann):
            add_model_arguments(parser, nested, prefix=f"{path}.", defaults=default)
            continue
        conv = _scalar_type(ann)
        if conv is None:
            continue
        help_text = (field.description or "").rstrip(".")
        if "(default:" not in help_text:  # a description that explains its default says it once
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


def _fill_nested_defaults(model: type[BaseModel], data: dict) -> dict:
    """``data`` with every nested block it names completed from that field's default instance.

    Without this a nested block given in part (``{"rlp": {"steps": 5}}``) would be validated
    into the nested class's own defaults, silently replacing every sibling the job sets.
    """
    out = dict(data)
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is None or not isinstance(out.get(name), dict):
            continue
        default = field.get_default(call_default_factory=True)
        base = default.model_dump() if isinstance(default, BaseModel) else {}
        out[name] = {**base, **_fill_nested_defaults(nested, out[name])}
    return out


def _format_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = "unknown key (check its spelling)" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{key}: {msg}")
    return f"invalid settings in {source}: " + "; ".join(parts)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int):
        super().__init__(f"key {key!r} appears twice in one mapping (line {line})")
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (the plain loader keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base loader reports it
                continue
            if duplicate:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path} ({e.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as e:
        raise ConfigError(f"config file {path}: {e}; keep one") from None
    except yaml.YAMLError as e:
        reason = " ".join(str(e).split())  # one line: the parser's message spans several
        raise ConfigError(f"config file {path} is not valid YAML: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def build_config(model: type[M], config_path: str | Path | None = None, overrides: dict | None = None) -> M:
    """Validate YAML (optional) + overrides (dotted keys) into ``model``; errors name the key."""
    data = read_yaml(config_path) if config_path else {}
    for path, value in (overrides or {}).items():
        if value is not _SENTINEL:
            _set_path(data, path, value)
    source = f"{config_path} and the command line" if config_path else "the command line"
    try:
        cfg = model.model_validate(_fill_nested_defaults(model, data))
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None
    if bad := _out_of_range_ints(cfg):
        raise ConfigError(f"invalid settings in {source}: " + "; ".join(bad))
    return cfg


def _out_of_range_ints(cfg: BaseModel, prefix: str = "") -> list[str]:
    """``key: value is out of range ...`` for every integer setting of ``cfg`` outside the widest range
    (:data:`INT_MIN`..:data:`INT_MAX`; seeds from 0), nested settings included."""
    bad = []
    for name, value in cfg:
        if isinstance(value, BaseModel):
            bad += _out_of_range_ints(value, f"{prefix}{name}.")
            continue
        lo = 0 if "seed" in name else INT_MIN
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, int) and not isinstance(v, bool) and not lo <= v <= INT_MAX:
                bad.append(f"{prefix}{name}: {v} is out of range; pass a whole number from {lo} to {INT_MAX}")
                break
    return bad


def config_from_args(model: type[M], args: argparse.Namespace) -> M:
    """The config of a job from its parsed arguments (``--config`` plus field flags)."""
    overrides = {k: v for k, v in vars(args).items() if "." in k or k in model.model_fields}
    return build_config(model, getattr(args, "config", None), overrides)


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
