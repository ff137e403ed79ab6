"""Settings as dataclass fields that describe themselves: the command line, `--config`
files and the resume policy all come from the field definitions.

    lr: float = option(2e-4, "Adam learning rate of G and D", resume="apply")

Each option carries its help text (every flag has one), and optionally its flag name,
choices, metavar, how a tuple is written on the command line ("size": 128x64, "ints":
32,64, "floats": 0.5,0.999), whether the command line requires it, a mutually exclusive
group, and what `--resume` does when the value differs from the checkpoint's:

- "fixed": resume refuses, naming the field (the model, the data, the seed, the data order);
- "apply": the new value takes effect from the resumed step on and the change is recorded
  (learning rates, loss weights, the number of steps);
- "free": the new value is used and nothing is recorded (where to write, how often, workers).

Nested dataclass fields (a family's model config inside its training config) are
flattened: their options become flags of the same command, so names must not collide.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Iterator
from typing import Any

__all__ = ["option", "Option", "ModelConfig", "options", "flat_values", "flatten_dict", "from_flat", "parse_text", "jsonable", "check_ints", "RESUME_POLICIES"]

RESUME_POLICIES = ("fixed", "apply", "free")


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its field name, type, default and the metadata of `option()`."""

    name: str
    type: Any  # the resolved annotation
    default: Any  # dataclasses.MISSING for required fields
    help: str
    flag: str
    choices: tuple | None
    metavar: str | None
    parse: str | None
    required: bool
    group: str | None
    resume: str
    cli: bool

    @property
    def base_type(self) -> Any:
        """The annotation without `| None`."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if typing.get_origin(self.type) in (typing.Union, _UnionType) and len(args) == 1:
            return args[0]
        return self.type


_UnionType = type(int | None)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    flag: str | None = None,
    choices: tuple | list | None = None,
    metavar: str | None = None,
    parse: str | None = None,
    required: bool = False,
    group: str | None = None,
    resume: str = "fixed",
    cli: bool = True,
) -> Any:
    """A dataclass field with the metadata of one setting (see the module docstring)."""
    if resume not in RESUME_POLICIES:
        raise ValueError(f"resume must be one of {RESUME_POLICIES}, got {resume!r}")
    if parse not in (None, "size", "ints", "floats"):
        raise ValueError(f"parse must be None, 'size', 'ints' or 'floats', got {parse!r}")
    metadata = dict(help=help, flag=flag, choices=tuple(choices) if choices else None, metavar=metavar, parse=parse,
                    required=required, group=group, resume=resume, cli=cli)  # fmt: skip
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"pydeform": metadata})


def _nested(annotation: Any) -> type | None:
    return annotation if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) else None


def options(cls: type) -> Iterator[Option]:
    """The options of a config dataclass, nested dataclass fields flattened in place."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        if _nested(annotation) is not None:
            yield from options(annotation)
            continue
        meta = field.metadata.get("pydeform")
        if meta is None:
            raise TypeError(f"{cls.__name__}.{field.name} is not declared with pydeform.options.option()")
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        flag = meta["flag"] or "--" + field.name.replace("_", "-")
        yield Option(field.name, annotation, default, meta["help"], flag, meta["choices"], meta["metavar"],
                     meta["parse"], meta["required"], meta["group"], meta["resume"], meta["cli"])  # fmt: skip


def flat_values(config: Any) -> dict[str, Any]:
    """{option name: value} of a config instance, nested configs flattened."""
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            values.update(flat_values(value))
        else:
            values[field.name] = value
    return values


def flatten_dict(values: dict[str, Any]) -> dict[str, Any]:
    """A config as saved (`dataclasses.asdict`: nested dicts for nested configs) flattened
    like `flat_values`."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten_dict(value))
        else:
            flat[key] = value
    return flat


def from_flat(cls: type, values: dict[str, Any]) -> Any:
    """Build `cls` from {option name: value} (nested configs from the same dict); names
    absent from `values` keep their defaults. The classes' own checks run as usual."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        nested = _nested(hints[field.name])
        if nested is not None:
            kwargs[field.name] = from_flat(nested, values)
        elif field.name in values:
            kwargs[field.name] = values[field.name]
    return cls(**kwargs)


class ModelConfig:
    """Base of the model configs (dataclasses): the dict a checkpoint saves as its "config",
    and back. Keys this version does not know (a newer or older pydeform's) are ignored."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def check_ints(config: Any, names: tuple[str, ...], minimum: int = 1) -> None:
    """Raise ValueError unless config.<name> is an int (not a bool) >= minimum, for each
    name: the check every model config makes of its widths and counts."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
            raise ValueError(f"{name} must be {expected}, got {value!r}")


def jsonable(value: Any) -> Any:
    """The value as a JSON round trip gives it back (tuples become lists), for comparisons
    between a config and one read from a file."""
    return json.loads(json.dumps(value))


def parse_text(opt: Option, text: str) -> Any:
    """A command-line string -> the option's value; ValueError with the expected form."""
    kind = opt.base_type
    if opt.parse == "size":
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
        if match is None:
            raise ValueError(f"expected HxW like 128x64, got {text!r}")
        return int(match.group(1)), int(match.group(2))
    if opt.parse in ("ints", "floats"):
        convert = int if opt.parse == "ints" else float
        try:
            return tuple(convert(part) for part in text.split(","))
        except ValueError:
            example = "32,64,128" if opt.parse == "ints" else "0.5,0.999"
            raise ValueError(f"expected comma-separated {opt.parse} like {example}, got {text!r}") from None
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    return text
