"""The shape of the house (STYLE.md), kept true by parsing imports with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ca_server"
FRAMEWORKS = ("flask", "flask_wtf", "flask_limiter", "werkzeug", "click", "apscheduler", "gunicorn", "granian", "wtforms")
DOMAIN = [p for p in PACKAGE.rglob("*.py")
          if p.relative_to(PACKAGE).parts[0] not in ("web",)
          and p.name not in ("cli.py", "cli_acme.py", "cli_admin.py", "cli_db.py", "cli_root.py", "cli_support.py", "scheduler.py", "server.py",
                             "__init__.py", "__main__.py")
          or p.relative_to(PACKAGE).parts[0] in ("pki", "store")]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


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
        assert "= create_app(" not in path.read_text() or path.name == "server.py", path


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 450


def test_only_the_store_talks_to_a_database_driver():
    drivers = {"sqlite3", "sqlite_utils", "psycopg"}
    users = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if imported_modules(p) & drivers}
    assert users and all(u.startswith("store/") for u in users), users


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
    assert signers == {"issuance.py", "instance.py"}, signers  # instance.py: Authority.leaf_template (defined there)
    doors = {"web/pages.py", "web/api.py", "web/hot_paths.py", "approvals.py", "acme/orders.py", "cli.py",
             "server_tls.py"}
    for door in doors:
        assert "issue" in called_attributes(PACKAGE / door), door
    check_only = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "check_request" in called_attributes(p)}
    assert check_only <= {"issuance.py", "inspection.py"}, check_only  # /inspect checks without issuing
