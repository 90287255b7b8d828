"""The one-file store of exported towers (photoseek.encoders.array_file): arrays come back exactly,
mapped or read, a damaged file is refused rather than read wrong, and a safetensors file maps to
the arrays its own library reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from photoseek.encoders import array_file


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "0.in_proj.weight": rng.standard_normal((7, 13), dtype=np.float32),
        "transposed": rng.standard_normal((5, 3), dtype=np.float32).T,  # not contiguous: written as its values
        "scalar": np.float32(2.5) * np.ones((), np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "ids": np.arange(11, dtype=np.int64),
        "half": rng.standard_normal(9).astype(np.float16),
    }


def _export(folder, arrays) -> None:
    (folder / "meta.json").write_text(json.dumps({"arrays": array_file.write(folder, arrays)}))


def test_arrays_come_back_exactly_mapped_or_read(tmp_path):
    arrays = _arrays()
    released = []
    index = array_file.write(tmp_path, arrays, release=lambda a: released.append(a.shape))
    assert released == [a.shape for a in arrays.values()]
    assert all(offset % array_file.ALIGN == 0 for _, _, offset in index.values())
    (tmp_path / "meta.json").write_text(json.dumps({"heads": 8, "arrays": index}))

    meta, stored = array_file.load(tmp_path)
    assert meta["heads"] == 8 and stored.names == set(arrays)
    mapped, cow = stored.mapped(), stored.mapped(copy_on_write=True)
    for name, original in arrays.items():
        assert stored.shape(name) == original.shape
        for got in (mapped[name], cow[name], stored.read(name)):
            assert got.dtype == original.dtype and got.shape == original.shape
            assert np.array_equal(got, original)
    assert not mapped["ids"].flags.writeable  # read-only pages of the file
    cow["ids"][0] = 99  # copy-on-write: this process's copy only, the file is untouched
    assert stored.read("ids")[0] == 0 and stored.mapped()["ids"][0] == 0


def test_an_export_cut_short_is_refused_not_read_wrong(tmp_path):
    _export(tmp_path, _arrays())
    data = tmp_path / array_file.FILE
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(ValueError, match="shorter than its index"):
        array_file.load(tmp_path)


def test_an_export_without_arrays_needs_no_file(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"format": 3}))
    meta, stored = array_file.load(tmp_path)
    assert meta == {"format": 3} and stored.names == frozenset() and stored.mapped() == {}


def test_a_safetensors_file_maps_to_what_its_library_reads(tmp_path):
    from safetensors.numpy import load_file, save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in _arrays().items()}
    path = tmp_path / "model.safetensors"
    save_file(arrays, str(path), metadata={"format": "np"})
    expected, mapped = load_file(str(path)), array_file.map_safetensors(path)
    assert mapped.keys() == expected.keys()
    for name, want in expected.items():
        assert mapped[name].dtype == want.dtype and np.array_equal(mapped[name], want)
    path.write_bytes(path.read_bytes()[:-16])  # the last tensor's bytes cut off
    with pytest.raises(ValueError, match="damaged"):
        array_file.map_safetensors(path)
