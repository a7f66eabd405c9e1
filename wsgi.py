"""WSGI entry point for any WSGI server: `gunicorn wsgi:app`. (`ca-server serve` also runs the
reminder scheduler; with another server, run `ca-server remind` from cron instead.)"""

from ca_server import create_app

app = create_app()
