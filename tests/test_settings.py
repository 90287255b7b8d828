"""Settings come from code, then PHOTOSEEK_* variables (any case), then a .env file in the
working folder, then the defaults."""

from __future__ import annotations

import pytest
from photoseek.settings import Settings, SettingsError


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
    with pytest.raises(SettingsError) as caught:
        Settings()
    assert caught.value.problems == [("precision", "fp8", "should be one of auto, bf16, fp32")]
    assert caught.value.kind == "bad_setting" and caught.value.exit_code == 2


def test_every_bad_value_is_named_at_once_and_good_text_is_read_as_its_type(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in {"BATCH_SIZE": "0", "OCR": "maybe", "OCR_SECONDS": "ten", "DECODE_WORKERS": "1.5"}.items():
        monkeypatch.setenv(f"PHOTOSEEK_{name}", value)
    with pytest.raises(SettingsError) as caught:
        Settings()
    assert {name: what for name, _, what in caught.value.problems} == {
        "batch_size": "should be 1 or more", "ocr": "should be true or false (1/0, yes/no, on/off)",
        "ocr_seconds": "should be a number", "decode_workers": "should be a whole number"}
    for name, value in {"BATCH_SIZE": " 8", "OCR": "Yes", "OCR_SECONDS": "2.5", "DECODE_WORKERS": "0"}.items():
        monkeypatch.setenv(f"PHOTOSEEK_{name}", value)
    s = Settings(index_dir=str(tmp_path))
    assert (s.batch_size, s.ocr, s.ocr_seconds, s.decode_workers, s.index_dir) == (8, True, 2.5, 0, tmp_path)
    assert Settings(decode_workers=None).decode_workers is None  # optional: unset means the default rule


def test_a_copy_with_changes_is_checked_and_leaves_the_original(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = Settings(index_dir=tmp_path)
    monkeypatch.setenv("PHOTOSEEK_PORT", "9001")  # read by the constructor only, not by a copy
    changed = base.replace(ocr=True, port="8080")
    assert (changed.ocr, changed.port, changed.index_dir) == (True, 8080, tmp_path) and base.ocr is False
    with pytest.raises(SettingsError):
        base.replace(port=70000)
    with pytest.raises(TypeError):
        base.replace(no_such_setting=1)
    with pytest.raises(TypeError):
        Settings(no_such_setting=1)  # a typo in code is a bug, not a silent default


def test_the_token_stays_out_of_the_settings_repr(tmp_path):
    assert "s3cret" not in repr(Settings(_env_file=None, index_dir=tmp_path, token="s3cret"))
