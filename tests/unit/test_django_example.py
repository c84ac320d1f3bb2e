"""examples/django.yaml names the keys Django's own cache writes: its templates rendered for a
row equal Django's ``make_key`` (KEY_PREFIX:VERSION:key) of the app's key."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.cache.backends.memcached import PyLibMCCache, PyMemcacheCache

from invalidator.config import load_config
from invalidator.config.build import compile_rules

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django.yaml"


def test_django_example_templates_are_djangos_keys() -> None:
    """Each example template gives the key both Django memcached backends store."""
    if not settings.configured:
        settings.configure()
    rules = compile_rules(load_config(EXAMPLE)).rules
    row = {"id": 7, "slug": "hello-world"}
    rendered = [t.render(row) for rule in rules for t in rule.templates]
    app_keys = ["user:7", "post:7", "post_by_slug:hello-world"]
    params = {"KEY_PREFIX": "myapp"}  # VERSION: Django's default, 1
    for backend in (PyMemcacheCache, PyLibMCCache):
        cache = backend(["127.0.0.1:11211"], params)
        assert rendered == [cache.make_key(key) for key in app_keys]
