"""Shared fixtures: a real instance (keys, SQLite file) in a temp dir per test, the Flask app
over it, and clients signed in as an admin token, a scoped token, or a web user."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ca_server import accounts, create_app
from ca_server.ca.authority import InstancePaths, init_instance
from ca_server.cli import main
from ca_server.config import Secrets, load_config, with_overrides
from ca_server.services import open_services
from ca_server.store import PostgresStore

from .pg_server import PgServer

PASSPHRASE = "test passphrase, long enough"
ROOT_PASSPHRASE = "the root's own passphrase, kept offline"
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


# Test modules whose tests run on both backends (the store through every domain function, the
# API and pages over it); CA_SERVER_TEST_BACKENDS=sqlite,postgresql runs every test on both.
BOTH_BACKENDS = {"test_store_backends", "test_api", "test_revocation", "test_reminders", "test_access", "test_acme",
                 "test_issued_certificates", "test_webhooks", "test_expiry_feeds", "test_pages", "test_rollover", "test_scep", "test_scep_clients", "test_backups",
                 "test_est", "test_issuance_log", "test_sessions"}


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    forced = os.environ.get("CA_SERVER_TEST_BACKENDS")
    if metafunc.definition.get_closest_marker("sqlite_only"):
        backends = ["sqlite"]
    elif metafunc.definition.get_closest_marker("postgresql_only"):
        backends = ["postgresql"]
    elif forced:
        backends = forced.split(",")
    elif (metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_BACKENDS
          and not metafunc.definition.get_closest_marker("sqlite_only")):
        backends = ["sqlite", "postgresql"]
    else:
        backends = ["sqlite"]
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session, with a migrated template database."""
    server = PgServer()
    template = server.new_database()
    store = PostgresStore(template)
    store.migrate()
    store.close()
    server.template = template.split("?")[0].rsplit("/", 1)[1]
    yield server
    server.destroy()


def use_postgresql(instance: Path, url: str) -> None:
    """Point the instance's config at a PostgreSQL database."""
    config = instance / "config.toml"
    text = config.read_text()
    head, sep, tail = text.partition("[database]")
    config.write_text(head + sep + tail.replace('url = ""', f'url = "{url}"', 1))


@pytest.fixture(scope="session")
def _template_instance(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template") / "instance"
    init_instance(InstancePaths(root), Secrets(key_passphrase=PASSPHRASE), dt.datetime.now(dt.UTC))
    store = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE)).store
    store.migrate()
    store.close()  # the last connection closing folds the WAL back in: the copy is one consistent file
    return root


@pytest.fixture
def instance(_template_instance, tmp_path, monkeypatch, backend, request) -> Path:
    """A fresh copy of one initialised CA (key generation once per session); on PostgreSQL with
    a fresh database of its own."""
    root = tmp_path / "instance"
    shutil.copytree(_template_instance, root, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    if backend == "postgresql":
        pg = request.getfixturevalue("pg_server")
        use_postgresql(root, pg.new_database(template=pg.template))
        (root / "ca.sqlite3").unlink()
    monkeypatch.setenv("CA_SERVER_INSTANCE", str(root))
    monkeypatch.setenv("CA_SERVER_KEY_PASSPHRASE", PASSPHRASE)
    return root


@pytest.fixture
def make_app(instance):
    def factory(**sections):
        config = load_config(instance / "config.toml")
        if sections:
            config = with_overrides(config, **sections)
        app = create_app(config, instance_path=instance)
        app.config["TESTING"] = True
        return app

    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def svc(app):
    return app.extensions["ca_server"]


class ApiClient:
    """Flask's test client with an Authorization header on every request."""

    def __init__(self, client, token: str | None) -> None:
        self.client = client
        self.token = token

    def _headers(self, headers):
        headers = dict(headers or {})
        if self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return headers

    def get(self, url, headers=None, **kw):
        return self.client.get(url, headers=self._headers(headers), **kw)

    def post(self, url, headers=None, **kw):
        return self.client.post(url, headers=self._headers(headers), **kw)


def new_token(svc, name="admin-token", *, admin=True, domains=(), allow_ip=None) -> str:
    return accounts.create_token(svc.store, name, is_admin=admin, domains=tuple(domains), allow_ip=allow_ip,
                                 now=dt.datetime.now(dt.UTC))


@pytest.fixture
def api(app, svc) -> ApiClient:
    """An admin token's client."""
    return ApiClient(app.test_client(), new_token(svc))


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def app_with_config(make_app, instance: Path, text: str):
    """An app of `instance` with `text` added to its config.toml (tables the example leaves out)."""
    config = instance / "config.toml"
    config.write_text(config.read_text() + text)
    return make_app()


def session_issue(client, name: str):
    """A certificate request through the JSON API with a browser's session (and its CSRF token)."""
    from .factories import make_csr, pem

    token = csrf_token(client.get("/certificates/new").get_data(as_text=True))
    return client.post("/api/v1/certificates", json={"csr": pem(make_csr([name]))}, headers={"X-CSRFToken": token})


def sign_in(client, name: str, password: str):
    page = client.get("/login")
    return client.post("/login", data={"username": name, "password": password,
                                       "csrf_token": csrf_token(page.get_data(as_text=True))})


@pytest.fixture
def web(app, svc):
    """A browser-like test client signed in as an admin user."""
    accounts.add_user(svc.store, "alice", "alice-password", is_admin=True, domains=(), allow_ip=True, email=None,
                      now=dt.datetime.now(dt.UTC))
    client = app.test_client()
    response = sign_in(client, "alice", "alice-password")
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


@pytest.fixture
def offline(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(instance, root folder) made by `ca-server init --offline-root` (issue 20)."""
    instance, root_dir = tmp_path / "instance", tmp_path / "usb" / "ca-root"
    monkeypatch.setenv("CA_SERVER_INSTANCE", str(instance))
    monkeypatch.setenv("CA_SERVER_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("CA_SERVER_ROOT_PASSPHRASE", ROOT_PASSPHRASE)
    made = CliRunner().invoke(main, ["init", "--offline-root", str(root_dir)])
    assert made.exit_code == 0, made.output
    assert f"The root key is only in {root_dir}" in made.output
    monkeypatch.delenv("CA_SERVER_ROOT_PASSPHRASE")  # the server never has it
    return instance, root_dir
