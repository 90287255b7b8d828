"""Settings come from code, then PHOTOSEEK_* variables (any case), then a .env file in the
working folder, then the defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from photoseek.settings import Settings


def test_a_variable_beats_the_env_file_and_code_beats_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PHOTOSEEK_PORT=9000\nPHOTOSEEK_BATCH_SIZE=8\nOTHER=1\n")
    assert (Settings().port, Settings().batch_size) == (9000, 8)
    monkeypatch.setenv("PHOTOSEEK_PORT", "9001")
    assert (Settings().port, Settings().batch_size) == (9001, 8)
    assert Settings(port=1).port == 1
    assert Settings(_env_file=None).batch_size == 32  # without the file: the default


def test_names_match_in_any_case_and_unknown_ones_are_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("photoseek_batch_size", "7")
    monkeypatch.setenv("PHOTOSEEK_NO_SUCH_THING", "x")
    assert Settings().batch_size == 7


def test_a_bad_value_names_its_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHOTOSEEK_PRECISION", "fp8")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert caught.value.errors()[0]["loc"] == ("precision",)
