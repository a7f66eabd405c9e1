"""Telling people: e-mail, expiry reminders, webhooks, calendar feeds, metrics."""
