"""The shape of the house (STYLE.md), kept true by parsing imports with ast: relative imports
resolved, lazy ones (inside functions) counted, those under `if TYPE_CHECKING:` (type names
only) not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ca_server"
FRAMEWORKS = ("flask", "flask_wtf", "flask_limiter", "werkzeug", "click", "apscheduler", "gunicorn", "granian", "wtforms")
# The doors and what starts them: HTTP (web/), the command line (cli/), the server (server/), the
# scheduler, the app factory. Everything else is the domain, which imports none of them.
DOORS = ("web", "cli", "server")
DOOR_FILES = ("scheduler.py", "__init__.py", "__main__.py")
DOMAIN = [p for p in PACKAGE.rglob("*.py")
          if p.relative_to(PACKAGE).parts[0] not in DOORS
          and not (len(p.relative_to(PACKAGE).parts) == 1 and p.name in DOOR_FILES)]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved ("from ..ca import rollover" in
    web/pages.py is ca_server.ca.rollover), skipping what only `if TYPE_CHECKING:` imports."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = base + (f".{node.module}" if node.module else "")
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module
                full = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists() or (
                    PACKAGE.parent / full.replace(".", "/")).is_dir()
                names.add(full if is_module else target)
    return names


def imported_modules(path: Path) -> set[str]:
    """The top-level names imported (flask, sqlite_utils, ca_server ...)."""
    return {name.split(".")[0] for name in imports_of(path)}


def unit(module: str) -> str:
    """What a module belongs to at package level: its subpackage (ca, web, ...) or itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_domain_modules_do_not_import_frameworks(path):
    assert not imported_modules(path) & set(FRAMEWORKS)


def test_only_the_store_imports_sqlite_utils():
    users = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "sqlite_utils" in imported_modules(p)}
    assert users and all(u.startswith("store/") for u in users), users


def test_wsgi_exposes_the_only_module_level_app():
    source = (PACKAGE.parent / "wsgi.py").read_text()
    assert "app = create_app()" in source
    for path in PACKAGE.rglob("*.py"):
        assert "= create_app(" not in path.read_text() or path == PACKAGE / "server" / "__init__.py", path


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 450


def test_only_the_store_talks_to_a_database_driver():
    drivers = {"sqlite3", "sqlite_utils", "psycopg"}
    users = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if imported_modules(p) & drivers}
    assert users and all(u.startswith("store/") for u in users), users


def test_outside_the_store_code_asks_for_the_interface_not_a_backend():
    """Modules type their store with the Protocols of store/interfaces.py (CaStore); only the
    store's own package and `ca-server db copy` (which moves data between the two) name a backend."""
    backends = {"Store", "PostgresStore", "StoreBase", "PostgresBase"}
    users = set()
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] in ("store", "base", "postgres") \
                    and backends & {alias.name for alias in node.names}:
                users.add(str(path.relative_to(PACKAGE)))
    assert users == {"cli/db.py"}, users


def called_attributes(path: Path) -> set[str]:
    """Every name called as a function or method in a module (`x.y(...)` and `y(...)` give "y")."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def test_one_issuance_path_signs_and_stores_every_certificate():
    """Only issuance.py signs a leaf (a template from leaf_template_for) and stores it; every door
    (form, API and its fast path, approvals, ACME, CLI, serve --tls) calls issuance.issue."""
    signers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if {"leaf_template_for", "insert_certificate", "_sign_and_store"} & called_attributes(p)
               and not p.relative_to(PACKAGE).parts[0] == "store"}
    assert signers == {"issuance.py", "ca/authority.py"}, signers  # authority.py: leaf_template (defined there)
    doors = {"web/pages.py", "web/api.py", "web/hot_paths.py", "approvals.py", "acme/orders.py", "cli/__init__.py",
             "server/tls.py"}
    for door in doors:
        assert "issue" in called_attributes(PACKAGE / door), door
    check_only = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "check_request" in called_attributes(p)}
    assert check_only <= {"issuance.py", "inspection.py"}, check_only  # /inspect checks without issuing


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_domain_does_not_import_its_doors(path):
    """Data flows one way: a door calls the domain, never the reverse (relative imports included)."""
    doors = {f"ca_server.{d}" for d in (*DOORS, "scheduler")}
    assert not {m for m in imports_of(path) if any(m == d or m.startswith(d + ".") for d in doors)}


def test_no_cycles_between_packages():
    """No package (or top-level module) imports one that imports it back, however far round."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = unit(module_name(path))
        for target in imports_of(path):
            if target.startswith("ca_server.") and unit(target) != source:
                edges.setdefault(source, set()).add(unit(target))
    cycles = []
    for start in edges:
        stack = [(start, (start,))]
        while stack:
            node, trail = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join((*trail, start)))
                elif nxt not in trail:
                    stack.append((nxt, (*trail, nxt)))
    assert cycles == []
    assert len(edges) > 10  # the graph was read


def test_the_top_level_holds_few_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 17, top  # about 15: the shared vocabulary, the domain's paths, the factory
