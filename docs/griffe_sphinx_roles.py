"""A griffe extension for the API reference: Sphinx roles in docstrings become cross-references.

lit-meta's docstrings are Google style with Sphinx roles (``:class:`~lit_meta.tasks.Task```,
``:meth:`episode```), which Markdown would print as they are. Each role becomes an optional autorefs
link: a name this object's scope resolves (``MAML`` in ``anil.py``, ``episode`` in a ``MetaLearner``
method) links to its entry in the reference when there is one; otherwise it stays code, without a
warning. ``~`` shows the last component only, as in Sphinx.
"""

from __future__ import annotations

import html
import re

from griffe import Extension, NameResolutionError, Object

ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(?P<tilde>~?)(?P<target>[^`]+)`")


def qualified(obj: Object, target: str) -> str:
    """``target`` as a full path, resolved from ``obj``'s scope where it is relative."""
    head, _, rest = target.lstrip(".").partition(".")
    scope: Object | None = obj
    while scope is not None:
        try:
            if scope.is_class and head in scope.all_members:  # inherited members too
                member = scope.all_members[head]
                resolved = member.target_path if member.is_alias else member.path
            else:
                resolved = scope.resolve(head)
        except (NameResolutionError, KeyError, AttributeError):
            scope = scope.parent
            continue
        return f"{resolved}.{rest}" if rest else resolved
    return target.lstrip(".")


def crossref(obj: Object, match: re.Match[str]) -> str:
    target = match["target"]
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target.lstrip(".")
    identifier = html.escape(qualified(obj, target), quote=True)
    return f'<autoref identifier="{identifier}" optional><code>{html.escape(shown)}</code></autoref>'


class SphinxRoles(Extension):
    """Rewrite the roles of every docstring griffe loads."""

    def on_object(self, *, obj: Object, **kwargs: object) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(lambda match: crossref(obj, match), obj.docstring.value)
