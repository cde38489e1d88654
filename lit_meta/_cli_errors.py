"""One line for a user's mistake on the command line: what was expected, what was given, and for a
misspelt key the nearest valid one. Tracebacks stay for errors that are not the user's input.

jsonargparse reports a bad value inside a subclass (``--data.shots 0``) as a union of failed
alternatives (``Expected a <class 'NoneType'>`` among them), with the usage text; only the line
about the given class is the user's.
"""

from __future__ import annotations

import difflib
import inspect
import re
from types import TracebackType

from lightning.pytorch import LightningDataModule, LightningModule

from lit_meta._imports import import_subclass

_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value", "NoneType")


_CONFIGURING_HOOKS = ("setup", "prepare_data", "on_load_checkpoint", "load_state_dict")


class CommandLineError(Exception):
    """A configuration mistake, reported as the one line of its message with exit status 2."""


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of ``err``'s ``raise ... from`` chain: ours, under jsonargparse's."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def raised_while_configuring(err: BaseException) -> bool:
    """Whether ``err`` was raised in the ``setup``, ``prepare_data`` or checkpoint-loading hook of a
    datamodule or module: checks of the data (or of a checkpoint to resume) against the configuration,
    before any step has run."""
    tb: TracebackType | None = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name in _CONFIGURING_HOOKS and isinstance(owner, (LightningDataModule, LightningModule)):
            return True
        tb = tb.tb_next
    return False


def parser_message(message: str, options: list[str]) -> str:
    """One line from jsonargparse's multi-line error ``message``; ``options``: the parser's option
    strings, to suggest the nearest of an unrecognised one."""
    lines = [line.strip() for line in message.splitlines()]
    group = re.match(r'Parser key "([^"]+)"', lines[0]) if lines else None
    class_path = next((m.group(1) for line in lines if (m := re.search(r"given class_path '([^']+)'", line))), None)
    prefix = f"{group.group(1)}." if group else ""
    if unknown := next(
        (m.group(1) for line in lines if (m := re.search(r"Option '([^']+)' is not accepted", line))), None
    ):
        known = _parameters(class_path)
        hint = difflib.get_close_matches(unknown, known, n=1)
        suggestion = f" (did you mean `{prefix}{hint[0]}`?)" if hint else ""
        return f"Expected a parameter of {class_path}, but got `{prefix}{unknown}`{suggestion}."
    nested = [m.group(1) for line in lines if (m := re.match(r'Parser key "([^"]+)":', line))]
    if bad := next((m for line in lines if (m := re.search(r"Expected a (.+)\. Got value: (.*)", line))), None):
        key = ".".join(dict.fromkeys(nested))
        return f"Expected `{key}` to be {_type_text(bad.group(1))}, but got {bad.group(2)!r}."
    if lines and lines[0].startswith("unrecognized arguments:"):
        given = [a.split("=")[0] for a in lines[0].split(":", 1)[1].split() if a.startswith("--")]
        hint = difflib.get_close_matches(given[0], options, n=1) if given else []
        suggestion = f" (did you mean `{hint[0]}`?)" if hint else ""
        return f"Expected known options, but got `{' '.join(given) or lines[0]}`{suggestion}."
    useful = [line.lstrip("- ") for line in lines if line and not any(noise in line for noise in _NOISE)]
    return " ".join(useful) or message


def _type_text(annotation: str) -> str:
    """``<class 'int'>`` -> ``int``; ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    if literal := re.fullmatch(r"typing\.Literal\[(.*)\]", annotation):
        return f"one of {literal.group(1)}"
    return re.sub(r"<class '([\w.]+)'>", r"\1", annotation)


def _parameters(class_path: str | None) -> list[str]:
    """Constructor parameters of ``class_path`` and, through ``**kwargs``, of its bases."""
    cls = import_subclass(class_path, object)
    names: list[str] = []
    for klass in inspect.getmro(cls) if cls is not None else ():
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters.values()
            names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                break
    return names
