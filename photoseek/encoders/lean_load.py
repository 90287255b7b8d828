"""Loading an open_clip model's weights one tower at a time, straight into the run-time precision.

open_clip's own loader builds the model with random float32 weights, reads the whole checkpoint
into memory (another float32 copy), copies one into the other, and photoseek then converted the
result to bf16: a ViT-B-32 peaked at about twice its float32 size (1.2 GB) above torch and
open_clip, and the allocator kept much of it. Here instead (:func:`skeleton`, :func:`load_into`):

* the model is built on torch's ``meta`` device: no memory, no random initialisation;
* the checkpoint is read tensor by tensor, never whole: a ``torch.save`` zip file memory-mapped
  (each tensor's pages handed back to the kernel once it is converted, :func:`_release`), a
  ``.safetensors`` file read with ``pread`` one tensor at a time;
* each tensor is converted to the run-time dtype as it is read and assigned to the model, so
  the weights exist once, in bf16 (or fp32), plus one float32 tensor in flight;
* only the keys asked for are loaded (``keys``): the indexer loads the image tower, the text
  tower stays on ``meta`` until a text is encoded.

Invariants: a tensor that :func:`load_into` assigned holds exactly the checkpoint's values cast to
``dtype`` (what ``model.to(dtype)`` after ``load_state_dict`` gave); keys it was not asked for are
left as they were. Anything this loader does not understand (a pickled non-zip file, ``.npz``,
a third-party layout that open_clip converts, missing or mis-shaped keys) raises
:class:`NotLean`, and the caller loads the model open_clip's way instead.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Collection, Iterator

import torch

from photoseek.encoders import array_file, pages


class NotLean(Exception):
    """This checkpoint or model is not one the lean loader handles: load it open_clip's way."""


def skeleton(open_clip, name: str, **kwargs) -> torch.nn.Module:
    """``open_clip.create_model(name, pretrained=None, **kwargs)`` with every tensor on ``meta``:
    the architecture without memory. Non-persistent buffers (the text tower's causal mask) are
    rebuilt on the CPU, as open_clip builds them."""
    try:
        with torch.device("meta"):
            model = open_clip.create_model(name, pretrained=None, device="meta", precision="fp32", **kwargs)
    except Exception as exc:  # a tower whose construction needs real tensors (some timm / Hugging Face ones)
        raise NotLean(f"cannot be built without memory: {exc}") from None
    for module_name, module in model.named_modules():
        for buffer_name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is None or buffer.device.type != "meta":
                continue
            if buffer_name == "attn_mask" and buffer.ndim == 2 and buffer.shape[0] == buffer.shape[1]:
                mask = torch.full(tuple(buffer.shape), float("-inf")).triu_(1)  # open_clip's build_causal_mask
                module.register_buffer(buffer_name, mask, persistent=False)
            elif f"{module_name}.{buffer_name}".lstrip(".") not in model.state_dict():
                raise NotLean(f"non-persistent buffer {module_name}.{buffer_name} cannot be rebuilt")
    return model


def load_into(model: torch.nn.Module, checkpoint: str, *, dtype: torch.dtype, keys: Collection[str] | None = None,
              as_stored: bool = False) -> list[str]:
    """Assign ``checkpoint``'s tensors named in ``keys`` (None: all) to ``model``, cast to ``dtype``;
    ``as_stored``: float32 instead, memory-mapped where the file allows (read once, then
    :func:`unload` ed). Returns the keys loaded. Raises :class:`NotLean` if the checkpoint does not
    hold exactly the model's keys and shapes."""
    expected = model.state_dict()
    chosen = set(expected) if keys is None else set(keys)
    wanted = [k for k in expected if k in chosen]
    loaded: list[str] = []
    with _open_checkpoint(checkpoint) as tensors:
        keys = set(tensors.keys())
        if keys != set(expected):
            missing, unexpected = sorted(set(expected) - keys)[:3], sorted(keys - set(expected))[:3]
            raise NotLean(f"keys differ from the model's (missing {missing}, unexpected {unexpected})")
        for key in wanted:
            source = tensors.mapped(key) if as_stored else tensors.get(key)
            target = expected[key]
            if tuple(source.shape) != tuple(target.shape):
                raise NotLean(f"{key}: shape {tuple(source.shape)} in the file, {tuple(target.shape)} in the model")
            if as_stored:
                value = source.float()
            elif not source.is_floating_point():
                value = source.clone()
            else:
                value = source.to(dtype)  # a new tensor: the float32 one is released just below
                tensors.release(key, source)
            _assign(model, key, value)
            loaded.append(key)
    return loaded


def unload(model: torch.nn.Module, keys: Collection[str]) -> None:
    """Put the tensors named in ``keys`` back on ``meta``: their memory is freed."""
    chosen = set(keys)
    for key, value in list(model.state_dict().items()):
        if key in chosen:
            _assign(model, key, torch.empty_like(value, device="meta"))


def _assign(model: torch.nn.Module, key: str, value: torch.Tensor) -> None:
    module_name, _, attr = key.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if attr in module._parameters:
        module._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)
    elif attr in module._buffers:
        module._buffers[attr] = value
    else:  # pragma: no cover - state_dict() named it
        raise NotLean(f"{key} is neither a parameter nor a buffer")


# -- reading checkpoints tensor by tensor ----------------------------------------------------------


class _Tensors:
    def keys(self) -> Iterator[str]: ...
    def get(self, key: str) -> torch.Tensor: ...
    def mapped(self, key: str) -> torch.Tensor:
        """The tensor without reading it now, where the file allows (pages read when touched)."""
        return self.get(key)
    def release(self, key: str, tensor: torch.Tensor) -> None: ...
    def __enter__(self): return self
    def __exit__(self, *exc) -> None: ...


def _open_checkpoint(path: str) -> _Tensors:
    if path.endswith(".safetensors"):
        return _Safetensors(path)
    if not zipfile.is_zipfile(path):
        raise NotLean("not a torch.save zip file or .safetensors")
    return _MappedZip(path)


def _strip(state: object) -> dict:
    """open_clip's load_state_dict: a 'state_dict' entry, and DataParallel's 'module.' prefix."""
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NotLean("not a state dict of tensors")
    if next(iter(state)).startswith("module"):
        state = {k[7:]: v for k, v in state.items()}
    return state


class _MappedZip(_Tensors):
    """A torch.save file, memory-mapped: a tensor's pages are read when it is converted and handed
    back right after (:func:`_release`), so the file never sits in memory whole."""

    def __init__(self, path: str):
        try:
            self.state = _strip(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
        except NotLean:
            raise
        except Exception as exc:  # a pickle the weights-only loader refuses, a damaged file: open_clip says why
            raise NotLean(str(exc)) from None

    def keys(self):
        return self.state.keys()

    def get(self, key):
        return self.state[key]

    def release(self, key, tensor):
        _release(tensor)
        self.state[key] = None

    def __exit__(self, *exc):
        self.state = {}


class _Safetensors(_Tensors):
    """A .safetensors file read with ``pread``, one tensor at a time (no mapping at all)."""

    DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
              "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool, "F64": torch.float64}

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        try:
            header, self.base = array_file.safetensors_header(self.fd)
        except (struct.error, ValueError, OSError) as exc:
            os.close(self.fd)
            raise NotLean(f"unreadable safetensors header: {exc}") from None
        self.header = header
        if next(iter(header), "").startswith("module."):
            self.header = {k[7:]: v for k, v in header.items()}

    def keys(self):
        return self.header.keys()

    def get(self, key):
        entry = self.header[key]
        dtype = self.DTYPES.get(entry["dtype"])
        if dtype is None:
            raise NotLean(f"{key}: dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        buffer = bytearray(end - start)
        view, done = memoryview(buffer), 0
        while done < len(buffer):
            n = os.preadv(self.fd, [view[done:]], self.base + start + done)
            if n <= 0:
                raise NotLean(f"{key}: file ends early")
            done += n
        if not buffer:
            return torch.empty(entry["shape"], dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(entry["shape"])

    def mapped(self, key):
        import numpy as np

        entry = self.header[key]
        np_dtype = {"F32": np.float32, "F16": np.float16}.get(entry["dtype"])
        start, end = entry["data_offsets"]
        if np_dtype is None or end == start:
            return self.get(key)
        # Copy-on-write mapping: private to this process, never written, read only where touched.
        array = np.memmap(self.path, dtype=np_dtype, mode="c", offset=self.base + start, shape=tuple(entry["shape"]))
        return torch.from_numpy(array)

    def release(self, key, tensor):
        pass  # its buffer goes with the tensor

    def __exit__(self, *exc):
        os.close(self.fd)


def _release(tensor: torch.Tensor) -> None:
    """Tell the kernel this memory-mapped tensor's whole pages will not be read again: they leave
    the process's resident set at once, instead of when the whole file is unmapped
    (:mod:`photoseek.encoders.pages`; clean file pages, read back from the file if touched again)."""
    if tensor.numel():
        start = tensor.data_ptr()
        pages.drop(start, start + tensor.numel() * tensor.element_size())
