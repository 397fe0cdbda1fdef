"""``map(..., with_keys=True)`` and ``key=`` without a journal: every outcome says which item it
belongs to, in any order, with or without a journal, over more items than one journal batch."""

from __future__ import annotations

import pytest

import parapipe as pp

from . import _stages as S

ITEMS = list(range(300))  # more than the journal adds per batch (256)
KEYS = [f"item-{i}" for i in ITEMS]


@pytest.fixture(scope="module")
def engine():
    with pp.Engine(S.fail_on_three, start_method="fork") as running:
        yield running


def _expected(keys):
    return {k: (i if i != 3 else "error") for k, i in zip(keys, ITEMS, strict=True)}


def _seen(pairs):
    return {k: ("error" if isinstance(v, pp.ItemError) else v) for k, v in pairs}


@pytest.mark.parametrize("journaled", [False, True])
@pytest.mark.parametrize("ordered", [False, True])
def test_with_keys_pairs_every_outcome_with_its_key(engine, tmp_path, journaled, ordered):
    journal = tmp_path / "run.db" if journaled else None
    pairs = list(engine.map(iter(ITEMS), key=iter(KEYS), with_keys=True, ordered=ordered,
                            return_exceptions=True, journal=journal))  # fmt: skip
    assert len(pairs) == len(ITEMS)
    assert _seen(pairs) == _expected(KEYS)
    error = dict(pairs)["item-3"]
    assert (error.key, error.index) == ("item-3", 3)
    if ordered:
        assert [k for k, _ in pairs] == KEYS


def test_with_keys_and_no_key_pairs_by_position(engine):
    pairs = list(engine.map(ITEMS, with_keys=True, ordered=False, return_exceptions=True))
    assert _seen(pairs) == _expected(ITEMS)


def test_a_key_function_without_a_journal_names_the_failed_item(engine):
    with pytest.raises(pp.ItemError) as caught:
        list(engine.map(ITEMS, key=lambda i: f"n{i}"))
    assert caught.value.key == "n3"
    assert "key 'n3'" in str(caught.value)


def test_key_without_with_keys_keeps_bare_results(engine):
    assert list(engine.map([1, 2], key=["a", "b"])) == [1, 2]
