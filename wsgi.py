"""WSGI entry point for any WSGI server: `granian --interface wsgi wsgi:app` or `gunicorn wsgi:app`. (`ca-server serve` also runs the
reminder scheduler; with another server, run `ca-server remind` from cron instead.)"""

from ca_server import create_app

app = create_app()
