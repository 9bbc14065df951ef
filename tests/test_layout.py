"""The walls of the house, checked on the source: which package may import which, where SQL and
HTTP clients live, and that library code never imports a command-line module.

These rules are what keep the layout described in CONTRIBUTING.md true as the code grows; each
test names the offending module and import, so a violation reads as a one-line fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datagen", "judges", "align")
RANK = {"datagen": 0, "judges": 1, "align": 2}
SQL_LIBRARIES = ("sqlite3", "sqlite_utils", "psycopg", "psycopg_pool")
HTTP_CLIENTS = ("httpx", "openai", "urllib.request", "http.client", "requests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path) -> list[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def owner(name: str) -> str:
    """The sub-package (or top-level module) that a dotted module name belongs to."""
    parts = name.split(".")
    return ".".join(parts[:2])


MODULES = source_modules()


def test_imports_flow_align_judges_datagen_never_back():
    bad = [f"{mod} imports {name}" for mod, path in MODULES.items() for name in imports_of(path)
           if name.split(".")[0] in RANK and RANK[name.split(".")[0]] > RANK[mod.split(".")[0]]]
    assert bad == []


def test_sub_packages_form_no_cycle():
    edges: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        for name in imports_of(path):
            if name.split(".")[0] in RANK and name in MODULES and owner(name) != owner(mod):
                edges.setdefault(owner(mod), set()).add(owner(name))

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if a in reach(b) and a < b)
    assert cycles == []


@pytest.mark.parametrize(("libraries", "home"), [
    (SQL_LIBRARIES, "datagen.store"),
    (HTTP_CLIENTS, "datagen.endpoint"),
])
def test_sql_and_model_http_live_in_one_package(libraries, home):
    bad = [f"{mod} imports {name}" for mod, path in MODULES.items()
           if not (mod == home or mod.startswith(home + "."))
           for name in imports_of(path) if name.split(".")[0] in {lib.split(".")[0] for lib in
                                                                 libraries}
           and any(name == lib or name.startswith(lib + ".") for lib in libraries)]
    assert bad == []


def test_library_modules_never_import_command_modules():
    """Library code lives outside CLI modules. The root group (``align.cli``) is exempt as an
    import target: the argv builder reads the click tree to check options against commands."""
    def is_cli(name: str) -> bool:
        return name != "align.cli" and name.rsplit(".", 1)[-1] == "cli"

    bad = [f"{mod} imports {name}" for mod, path in MODULES.items() if not is_cli(mod)
           for name in imports_of(path) if name in MODULES and is_cli(name)]
    assert bad == []


def test_every_module_says_why_it_exists():
    missing = [mod for mod, path in MODULES.items()
               if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))]
    assert missing == []
