"""Human review: a local web app (queue, focus view, keyboard decisions) whose accepted images
become the next dataset version. `decisions` holds the data access, `app` the web edge."""

from likeness.review.app import create_app

__all__ = ["create_app"]
