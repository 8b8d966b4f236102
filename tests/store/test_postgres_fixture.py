"""The throwaway PostgreSQL fixture works from a private TMPDIR (as `mktemp -d` makes it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.postgres import _root_parent


def test_a_private_tmpdir_sends_the_cluster_to_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)  # mkdir's mode is masked by the umask; set it exactly
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    # initdb runs as `postgres` when the tests run as root: it cannot pass through a 0700 folder owned by root.
    assert _root_parent(as_other_user=True) == "/tmp"
    # Run as the same user, the private folder is fine.
    assert _root_parent(as_other_user=False) is None


def test_a_traversable_tmpdir_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_folder = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        open_folder.chmod(0o755)
        monkeypatch.setattr(tempfile, "tempdir", str(open_folder))
        assert _root_parent(as_other_user=True) is None
    finally:
        open_folder.rmdir()
