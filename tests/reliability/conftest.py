"""Fixtures of the reliability suite: the service's trained model and app builder, shared with tests/api."""

from tests.api.conftest import make_service, sample_leads, service, trained_dir

__all__ = ["make_service", "sample_leads", "service", "trained_dir"]
