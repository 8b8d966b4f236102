"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def one_math_thread() -> Iterator[None]:
    """Run the suite's numeric code on one OpenMP/BLAS thread.

    On a busy 2-core runner, OpenMP pools spinning against other work made single model fits 10-100x slower
    (seen: a 1 s fit taking 158 s); the service pins its workers the same way.
    """
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Return the repository root."""
    return REPO


@pytest.fixture(scope="session")
def maven_dir() -> Path:
    """Return the real Maven CRM folder, or skip when it is not beside the project."""
    folder = SHARED_DATA / "maven-crm"
    if not (folder / "sales_pipeline.csv").exists():
        pytest.skip(f"real Maven CRM data not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def x_education_csv() -> Path:
    """Return the real X Education Leads.csv, or skip when it is not beside the project."""
    path = SHARED_DATA / "x-education-leads" / "Leads.csv"
    if not path.exists():
        pytest.skip(f"real X Education data not found at {path}")
    return path
