"""Package attributes imported when first used (PEP 562), for the packages whose
``__init__`` re-exports names of their submodules: a command that needs one submodule does
not pay for the others at start-up (issue 19 item 3, CLI start-up).

In a package's ``__init__``::

    __getattr__, __dir__ = lazy_attributes(__name__, {"Name": "submodule", ...}, {"submodule", ...})

``names`` maps each re-exported name to the submodule defining it; ``submodules`` are the
submodules reachable as attributes (``package.sub``) without an import statement.  The value
is kept in the package's namespace, so the hook runs once per name.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterable, Mapping


def lazy_attributes(package: str, names: Mapping[str, str], submodules: Iterable[str] = ()
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` (see the module docstring)."""
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in subs:
            value: Any = importlib.import_module(f"{package}.{name}")
        elif name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | subs | set(names))

    return __getattr__, __dir__
