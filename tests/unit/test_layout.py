"""The layout as documented in docs/layout.md: each package's public names, and which layer may
import which. Read from the source (ast), so that a wrong import fails here, not in review."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "bridge"
PACKAGES = ("core", "mes", "adapters", "engine", "web", "commands")

# What each part of bridge/ may import from the rest of bridge/ (besides itself). A module is
# named by its dotted path under bridge; a package by its name. Mirrors docs/layout.md.
MAY_IMPORT: dict[str, set[str]] = {
    "core": {"config", "mes.models", "mes.errors"},
    "mes": {"core.domain", "adapters.tls", "adapters.secrets", "faults"},
    "adapters": {"core", "config", "faults"},
    "engine": {"core", "mes", "adapters", "config", "faults", "version"},
    "web": {"core", "mes", "adapters", "engine", "config", "version"},
    "commands": {"core", "mes", "adapters", "engine", "web", "config", "faults", "version", "app"},
    "app": {"core", "mes", "adapters", "engine", "web", "commands", "config", "faults", "version"},
    "__main__": {"commands"},
    "config": {"adapters.tls", "adapters.secrets", "mes.settings"},
    "faults": set(),
    "version": set(),
    "_exports": set(),
    "__init__": set(),
}


def _part(path: Path) -> str:
    relative = path.relative_to(BRIDGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module under bridge, names) for every `from bridge… import …` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bridge"):
            found.append(
                (node.module.removeprefix("bridge").lstrip("."), [a.name for a in node.names])
            )
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("bridge") for a in node.names), path
    return found


def _allowed(target: str, allowed: set[str]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


SOURCES = sorted(p for p in BRIDGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_the_layers_below_it(path: Path) -> None:
    part = _part(path)
    assert part in MAY_IMPORT, f"{part} is not in the layout: add it to docs/layout.md and here"
    for module, names in _imports(path):
        if module == "_exports" or module.split(".")[0] == part:
            continue
        targets = [module] if module else [f"{n}" for n in names]
        for target in targets:
            if target in PACKAGES:  # `from bridge.core import X`: X's module decides
                continue
            assert _allowed(target, MAY_IMPORT[part]), (
                f"{path.name}: {part} imports bridge.{target}"
            )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_other_layers_use_only_a_package_s_public_names(path: Path) -> None:
    part = _part(path)
    for module, names in _imports(path):
        package = module.split(".")[0]
        if package not in PACKAGES or package == part:
            continue
        public = importlib.import_module(f"bridge.{package}").__all__
        hidden = [n for n in names if n not in public]
        assert not hidden, f"{path.name} uses {hidden} of bridge.{package}, which are not public"


def _documented() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    documented: dict[str, list[str]] = {}
    for package, names in re.findall(
        r"^### `bridge\.(\w+)`.*?^Public: (.+?)\.$", text, re.M | re.S
    ):
        documented[package] = re.findall(r"`(\w+)`", names)
    return documented


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_what_docs_layout_md_lists(package: str) -> None:
    module = importlib.import_module(f"bridge.{package}")
    assert sorted(module.__all__) == sorted(_documented()[package])


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_there_and_typed(package: str) -> None:
    module = importlib.import_module(f"bridge.{package}")
    for name in module.__all__:
        assert getattr(module, name) is not None
    assert not hasattr(module, "not_a_public_name")
    # The names type checkers see (the TYPE_CHECKING imports) are the ones the package exports.
    source = ast.parse((BRIDGE / package / "__init__.py").read_text(encoding="utf-8"))
    typed = {
        a.asname or a.name
        for n in ast.walk(source)
        if isinstance(n, ast.ImportFrom)
        and (n.module or "").startswith("bridge.")
        and n.module != "bridge._exports"
        for a in n.names
    }
    assert typed == set(module.__all__)


DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")]
)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_link_and_point_to_what_exists(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    links = re.findall(r"\]\((?!https?:|#|mailto:)([^)#\s]+)", text)
    paths = re.findall(r"`((?:bridge|devices|mes_sim|tests|bench|deploy)/[\w./-]*\w)`", text)
    missing = [p for p in links if not (document.parent / p).exists()]
    missing += [p for p in paths if not (ROOT / p).exists() and "{" not in p]
    assert not missing, f"{document.name} names what does not exist: {missing}"


def test_a_public_name_loads_only_the_module_that_holds_it() -> None:
    # A fresh interpreter: reading the store from the package must not bring in the embedded
    # broker (amqtt), which the bridge imports only when the config embeds one.
    probe = (
        "import sys, bridge.adapters as adapters; adapters.Store; "
        "print(sorted(m for m in sys.modules if m.startswith(('bridge.adapters.', 'amqtt'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['bridge.adapters.store']"
