"""Shared pytest setup for the project's tests."""
from __future__ import annotations

import pytest


# --- golden files (tests/golden/<case>/, see tests/test_render_golden.py)
# After an intended change to the renderers (or to payload/hlfw, whose hash is part of every
# release hash), rewrite the golden files and review them like code:
#     .venv/bin/python -m pytest tests/test_render_golden.py --update-golden
#     git diff tests/golden
def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/<case>/ from the current renderer instead of comparing")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


# --- the lab (tests/lab_fixtures.py): `lab`, `lab_factory`, the netfilter skip, and the
# session guard that fails the run if this machine's own firewall changed.
from lab_fixtures import (  # noqa: E402,F401
    lab,
    lab_factory,
    pytest_collection_modifyitems,
    pytest_sessionfinish,
    pytest_sessionstart,
    root_namespace_guard,
)
