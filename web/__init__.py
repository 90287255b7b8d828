"""The web service: a FastAPI app with a Jinja2 page and a JSON API over ``photoseek.search``."""
