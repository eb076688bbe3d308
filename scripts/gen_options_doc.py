"""Write docs/OPTIONS.md from the option dataclasses, so the reference never drifts from the code.

Usage: python scripts/gen_options_doc.py [--check]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codes"))

from esrgan.options import TestOptions, TrainOptions

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "OPTIONS.md"


def _type_name(tp: typing.Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if args and type(None) in args:
        return " \\| ".join(_type_name(a) for a in args if a is not type(None)) + " \\| null"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of name -> {_type_name(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "`~`" if f.default is None else f"`{f.default}`"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "" if dataclasses.is_dataclass(value) else f"`{value}`"
    return "**required**"


def _rows(cls: type, prefix: str = "") -> list[str]:
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        bounds = (f"{lo} to {hi}" if lo is not None and hi is not None else f"min {lo}" if lo is not None
                  else f"max {hi}" if hi is not None else "")
        doc = f.metadata.get("doc", "") + (f" ({bounds})" if bounds else "")
        rows.append(f"| `{key}` | {_type_name(tp)} | {_default(f)} | {doc} |")
        inner = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if typing.get_origin(tp) is dict:
            rows += _rows(typing.get_args(tp)[1], f"{key}.<set>.")
        elif inner:
            rows += _rows(inner[0], f"{key}.")
    return rows


def render() -> str:
    header = "| key | type | default | meaning |\n|---|---|---|---|"
    return "\n".join([
        "# Options reference",
        "",
        "Generated from `codes/esrgan/options.py` by `python scripts/gen_options_doc.py`; do not edit by hand.",
        "Unknown keys are rejected with the nearest valid name; relative paths start at the repository root;",
        "any key can be overridden with `--set dotted.key=value` (the value is parsed as YAML).",
        "",
        "## Training (`train.py`)",
        "",
        header, *_rows(TrainOptions), "",
        "## Testing (`test.py`)",
        "",
        header, *_rows(TestOptions), "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/OPTIONS.md is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python scripts/gen_options_doc.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
