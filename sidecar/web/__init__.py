"""Web layer: thin blueprints, templates, translations."""
