"""pytest-alembic's four tests of the migration history, on both dialects."""

from __future__ import annotations

import pytest
import pytest_alembic
from pytest_alembic.tests import (  # noqa: F401  (collected as tests here)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from migsupport.api import alembic_config as project_alembic_config


@pytest.fixture
def alembic_config() -> pytest_alembic.Config:
    return pytest_alembic.Config(alembic_config=project_alembic_config())


@pytest.fixture
def alembic_engine(engine):
    return engine
