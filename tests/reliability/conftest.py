"""Fixtures of the reliability suite: the service's trained model, shared with tests/api."""

from tests.api.conftest import sample_leads, trained_dir

__all__ = ["sample_leads", "trained_dir"]
