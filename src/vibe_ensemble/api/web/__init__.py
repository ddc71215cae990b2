"""The dashboard for people: server-rendered pages, static script and styles, session login."""
