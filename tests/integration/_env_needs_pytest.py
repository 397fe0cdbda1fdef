"""A stage module that imports a library the test environments lack (pytest)."""

import pytest  # noqa: F401


def passthrough(item: object) -> object:
    return item
