"""Package-level names found when first asked for, not imported with the package.

The layers import each other's modules directly (`bridge.core.outbox`), and the bridge's config
sits between them: an `__init__` that imported all its modules would make almost any first import
a cycle back into a half-initialised module. So each package lists its public names in `__all__`
and imports them for type checkers only; those imports are also where `find` learns which module
holds a name, so that reading `bridge.adapters.Store` loads the store, not the embedded broker.
"""

from __future__ import annotations

import ast
import functools
import importlib
import sys
from collections.abc import Sequence


def find(package: str, public: Sequence[str], name: str) -> object:
    """`package.name` for a name in `public`, from the module its `__init__` imports it from
    for type checkers; kept on the package so that the lookup runs once."""
    if name not in public:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    home = sys.modules[package]
    source = _sources(str(home.__file__)).get(name)
    if source is None:
        raise AttributeError(
            f"{package}.__all__ names {name!r}, which its __init__ imports from nowhere"
        )
    module = importlib.import_module(source)
    # `from bridge.core import redelivery` names a module of the package itself.
    value = (
        importlib.import_module(f"{source}.{name}") if source == package else getattr(module, name)
    )
    setattr(home, name, value)
    return value


@functools.cache
def _sources(init_file: str) -> dict[str, str]:
    """Name -> the module an `__init__` imports it from (its `if TYPE_CHECKING:` imports)."""
    with open(init_file, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    return {
        alias.asname or alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module != __name__
        for alias in node.names
    }
