"""ca-server: a private certificate authority server."""

from __future__ import annotations

import secrets as _secrets
from pathlib import Path

from flask import Flask

from .ca.authority import default_instance_path, ensure_secret_key
from .config import Config
from .services import Services, open_services

__all__ = ["create_app", "Services"]


def create_app(config: Config | None = None, *, instance_path: str | Path | None = None) -> Flask:
    """The application factory (`flask --app ca_server`, wsgi.py, `ca-server serve`).

    `config` overrides instance/config.toml (tests); the instance folder is `instance_path`,
    else $CA_SERVER_INSTANCE, else ./instance."""
    from .web import register

    instance = Path(instance_path) if instance_path is not None else default_instance_path()
    services = open_services(instance, config)
    app = Flask(__name__, instance_path=str(instance.resolve()), template_folder="web/templates",
                static_folder="web/static")
    secure = services.config.server.base_url.startswith("https://")
    app.config.update(
        SECRET_KEY=ensure_secret_key(services.paths) if instance.exists() else _secrets.token_bytes(32),
        MAX_CONTENT_LENGTH=services.config.server.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_NAME="ca_server_session",
        PREFERRED_URL_SCHEME="https" if secure else "http",
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in web/auth.py, only for cookie-authenticated posts
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        JSON_SORT_KEYS=False,
    )
    app.extensions["ca_server"] = services
    register(app)
    from .cli import register_flask_commands

    register_flask_commands(app)
    return app
