"""Our placement against the key -> node vectors recorded from each real client library
(tests/fixtures/placement/, `make placement-vectors`): 0 mismatches, every set."""

from __future__ import annotations

import pytest

from invalidator.core.placement import node_name, placement_for
from invalidator.core.placement.servers import split_weight
from tests.placement_vectors import VectorSet, corpus_keys, load, vector_files

FILES = vector_files()


def test_vectors_are_recorded_for_pymemcache() -> None:
    assert any(p.name == "pymemcache.json.gz" for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.name.removesuffix(".json.gz") for p in FILES])
def test_placement_matches_the_client_library_on_every_vector(path: object) -> None:
    vectors: VectorSet = load(path)  # type: ignore[arg-type]
    keys = corpus_keys()
    checked = 0
    for case in vectors.cases:
        placement = placement_for(vectors.client, case.servers, vectors.behaviors)
        names = [node_name(split_weight(s)[0]) for s in case.servers]
        mismatches = [
            (key, names[want], placement.owners(key)[0])
            for key, want in zip(keys, case.owners, strict=True)
            if want >= 0 and placement.owners(key)[0] != names[want]
        ]
        assert not mismatches, (
            f"{vectors.id}/{case.name}: {len(mismatches)} mismatches, e.g. {mismatches[:3]}"
        )
        checked += sum(1 for w in case.owners if w >= 0)
    assert checked >= 100_000, f"{vectors.id}: only {checked} vectors"
