"""The web UI and JSON API that `wanwitness collect` serves (default 127.0.0.1:8765).

`app` builds the FastAPI application, `data` reads the store for it, `auth` holds the
password, sessions, CSRF and login back-off, `server` runs it in the collector.
"""
