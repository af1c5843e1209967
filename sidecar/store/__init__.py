"""Our own state (never WordPress's): models, engine, migrations and repository functions."""
