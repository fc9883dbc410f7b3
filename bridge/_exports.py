"""Package-level names found when first asked for, not imported with the package.

The layers import each other's modules directly (`bridge.core.outbox`), and the bridge's config
sits between them: an `__init__` that imported all its modules would make almost any first import
a cycle back into a half-initialised module. So each package lists its public names in `__all__`
(and imports them for type checkers only), and `find` looks a name up in the package's modules the
first time someone reads it from the package.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence


def find(package: str, public: Sequence[str], name: str) -> object:
    """`package.name` for a name in `public`: a module of the package, or a name one of them
    defines; kept on the package so that the search runs once."""
    if name not in public:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    home = sys.modules[package]
    modules = [info.name for info in pkgutil.iter_modules(home.__path__)]
    if name in modules:
        value: object = importlib.import_module(f"{package}.{name}")
    else:
        for module_name in modules:
            module = importlib.import_module(f"{package}.{module_name}")
            if name in vars(module):
                value = vars(module)[name]
                break
        else:
            raise AttributeError(f"{package}.__all__ names {name!r}, which none of its modules has")
    setattr(home, name, value)
    return value
