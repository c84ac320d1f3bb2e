"""Fixtures of the unit tests that need one (the in-process runtime's harness)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import Harness


@pytest.fixture
def harness() -> Iterator[Harness]:
    """The real supervisor, pipeline and loop over in-memory memcached nodes and source."""
    with Harness() as h:
        yield h
