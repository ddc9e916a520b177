"""Data splits: where the samples live and how batches reach the device.

A split holds ``n`` samples of inputs (a tensor, a tuple or a dict of tensors,
``landscape_core.inputs``) and labels ``y`` ``(n, ...)``, and yields them in fixed
consecutive batches of ``batch_size`` on the problem's device (``Placement``):

* ``"device"``: the whole split is held on the device; a batch is a slice (no copy).
* ``"cpu"``: the split is held in host memory; one batch at a time is copied to the device
  (from pinned memory on CUDA, on a side stream, the next batch sent while the current one is
  used), so the device holds at most two batches of data.
* ``"lazy"``: nothing is held; a map-style ``Dataset`` is read a batch at a time (its samples
  collated by the ``DataLoader``'s own ``collate_fn``) and sent as for ``"cpu"``.
* ``"auto"``: ``"device"`` when the device is the CPU or the split takes at most a quarter of the
  free device memory, else ``"cpu"``. ``"lazy"`` is never chosen by itself.

Batches are always the same consecutive slices, so per-batch coefficients
(``Problem.weighted_batches``) stay valid; the order of a shuffling ``DataLoader`` is not used.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset
from torch.utils.data.dataloader import default_collate

from . import inputs as inp

MATERIALIZE_BATCH = 512  # samples per read when a Dataset is turned into tensors


class Placement(str, Enum):
    """Where a split's samples are kept (see the module docstring)."""

    AUTO = "auto"
    DEVICE = "device"
    CPU = "cpu"
    LAZY = "lazy"


class _Transfer:
    """Sends batches from host memory to ``device``: pinned memory and a side stream on CUDA,
    a plain ``.to`` elsewhere (the same code path, without the asynchrony)."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None):
        self.device = device
        self.dtype = dtype
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def send(self, batch: tuple) -> tuple:
        X, y = batch
        if self.stream is None:
            return inp.to(X, self.device, self.dtype), y.to(self.device)
        X, y = inp.apply(X, lambda t: t.pin_memory()), y.pin_memory()
        with torch.cuda.stream(self.stream):
            return inp.to(X, self.device, self.dtype, non_blocking=True), y.to(self.device, non_blocking=True)

    def receive(self, batch: tuple) -> tuple:
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            X, y = batch
            for _, t in inp.leaves(X):
                t.record_stream(current)
            y.record_stream(current)
        return batch


class Split:
    """One data split held as tensors: inputs ``X`` (tensor, tuple or dict; samples first), labels ``y``.

    ``device``: where batches are computed (default: where ``X`` is). When ``X`` is held elsewhere, or
    ``placement="cpu"`` is asked for (the same path on a CPU device), ``batches`` sends one batch at a time. ``batch_size``: samples per
    forward pass, at most ``n`` (a larger request is the whole split).
    """

    def __init__(self, name: str, X, y: torch.Tensor, batch_size: int, device=None, placement=None):
        self.name = name
        self.X = inp.as_inputs(X, f"{name} inputs")
        self.y = y
        self.n = inp.count(self.X, f"{name} inputs")
        storage = inp.leaves(self.X)[0][1].device
        self.device = torch.device(device) if device is not None else storage
        self.placement = Placement.DEVICE if storage == self.device and placement != Placement.CPU else Placement.CPU
        self.batch_size = min(int(batch_size), self.n)
        self.transfers = 0  # batches sent to the device so far (placement "cpu")
        self._fingerprint: str | None = None

    # -- reading ---------------------------------------------------------------
    def _read(self, start: int, stop: int) -> tuple:
        """Samples ``[start, stop)`` where they are stored."""
        return inp.apply(self.X, lambda t: t[start:stop]), self.y[start:stop]

    def _take(self, index: torch.Tensor) -> tuple:
        index = index.to(self.y.device)
        return inp.apply(self.X, lambda t: t[index]), self.y[index]

    def bounds(self) -> list[tuple[int, int]]:
        """``[(start, stop)]`` of the batches, in order."""
        return [(s, min(s + self.batch_size, self.n)) for s in range(0, self.n, self.batch_size)]

    def batches(self) -> Iterator[tuple]:
        """Yield ``(X_b, y_b, n_b / n)`` on the device: the batches with their share of the samples.

        The share of the samples is the exact coefficient of a plain mean over samples only;
        ``Problem.weighted_batches`` gives each loss's own coefficients.
        """
        bounds = self.bounds()
        if self.placement is Placement.DEVICE:
            for start, stop in bounds:
                X, y = self._read(start, stop)
                yield X, y, (stop - start) / self.n
            return
        transfer = _Transfer(self.device, None)
        pending = self._send(transfer, *bounds[0])
        for i, (start, stop) in enumerate(bounds):
            X, y = transfer.receive(pending)
            pending = self._send(transfer, *bounds[i + 1]) if i + 1 < len(bounds) else None
            yield X, y, (stop - start) / self.n
            del X, y

    def _send(self, transfer: _Transfer, start: int, stop: int) -> tuple:
        self.transfers += 1
        return transfer.send(self._read(start, stop))

    def labels(self) -> Iterator[torch.Tensor]:
        """The labels, a batch at a time where they are stored (one tensor for a held split)."""
        yield self.y

    def slice(self, start: int, stop: int) -> tuple:
        """Samples ``[start, stop)`` as ``(X, y)`` on the device."""
        return _Transfer(self.device, None).send(self._read(start, stop))

    def head(self, k: int) -> tuple:
        """The first ``min(k, n)`` samples ``(X, y)`` on the device."""
        k = min(int(k), self.n)
        return _Transfer(self.device, None).send(self._read(0, k))

    def take(self, index: torch.Tensor) -> tuple:
        """Samples ``index`` (int64 ``(m,)``) as ``(X, y)`` on the device."""
        return _Transfer(self.device, None).send(self._take(index))

    def subset(self, index: torch.Tensor, batch_size: int) -> Split:
        """A split of the samples ``index``, kept where this one keeps them."""
        X, y = self._take(index)
        return Split(self.name, X, y, batch_size, self.device, self.placement)

    def source(self):
        """What a ``Problem`` takes to rebuild this split: ``(X, y)`` where they are stored."""
        return self.X, self.y

    @property
    def fingerprint(self) -> str:
        """sha256 of the split's bytes (the inputs' form, names, shapes and bytes; the labels)."""
        if self._fingerprint is None:
            h = inp.Fingerprint()
            h.add(self.X, self.y)
            self._fingerprint = h.hexdigest()
        return self._fingerprint


class LazySplit(Split):
    """A split read from a map-style ``Dataset`` one batch at a time; nothing is held.

    ``collate``: how samples become a batch (the ``DataLoader``'s ``collate_fn``); floating
    inputs are cast to ``dtype``. ``X``/``y`` are not available; use ``batches``/``head``/``take``.
    """

    def __init__(self, name: str, dataset: Dataset, collate, batch_size: int, device, dtype: torch.dtype):
        self.name = name
        self.dataset = dataset
        self.collate = collate
        self.dtype = dtype
        self.n = len(dataset)
        if self.n == 0:
            raise ValueError(f"{name} is empty (0 samples); a loss needs at least one sample.")
        self.device = torch.device(device)
        self.placement = Placement.LAZY
        self.batch_size = min(int(batch_size), self.n)
        self.transfers = 0
        self._fingerprint = None

    @property
    def X(self):
        raise ValueError(
            f"the {self.name} split is read lazily from a Dataset and holds no tensors; "
            "use split.head(k), split.take(index) or split.batches()."
        )

    @property
    def y(self):
        return self.X

    def _items(self, indices) -> tuple:
        X, y = pair(self.collate([self.dataset[int(i)] for i in indices]), self.name)
        return inp.to(X, "cpu", self.dtype), y

    def _read(self, start: int, stop: int) -> tuple:
        return self._items(range(start, stop))

    def _take(self, index: torch.Tensor) -> tuple:
        return self._items(index.tolist())

    def labels(self) -> Iterator[torch.Tensor]:
        for start, stop in self.bounds():
            yield self._read(start, stop)[1]

    def subset(self, index: torch.Tensor, batch_size: int) -> Split:
        return LazySplit(
            self.name, Subset(self.dataset, index.tolist()), self.collate, batch_size, self.device, self.dtype
        )

    def source(self):
        return DataLoader(self.dataset, batch_size=self.batch_size, collate_fn=self.collate)

    @property
    def fingerprint(self) -> str:
        """sha256 over every batch's bytes, read once; equal to the held split's of the same samples."""
        if self._fingerprint is None:
            h = inp.Fingerprint()
            for start, stop in self.bounds():
                h.add(*self._read(start, stop))
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def pair(item, what: str) -> tuple:
    """``(inputs, labels)`` from one collated batch, or a ``ValueError`` naming what was found."""
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        got = f"a {type(item).__name__}" + (f" of {len(item)} items" if isinstance(item, (tuple, list)) else "")
        raise ValueError(
            f"{what}: each sample must be an (inputs, label) pair, inputs a tensor, a tuple or a dict of tensors; "
            f"got {got}."
        )
    X = inp.as_inputs(item[0], f"{what} inputs")
    y = item[1]
    if not isinstance(y, torch.Tensor):
        try:
            y = torch.as_tensor(y)
        except Exception:
            raise ValueError(f"{what}: labels must be numbers or a tensor; got {type(y).__name__}.") from None
    return X, y


def _loader_parts(data: Dataset | DataLoader) -> tuple[Dataset, object, int | None]:
    if isinstance(data, DataLoader):
        return data.dataset, data.collate_fn, data.batch_size
    return data, default_collate, None


def read_all(data, what: str) -> tuple:
    """``(X, y)`` held in memory from an ``(X, y)`` pair, a ``Dataset`` or a ``DataLoader``.

    A map-style dataset is read in order (a shuffling loader's order is not used; its
    ``collate_fn`` is). Refuses empty data and inputs and labels of different lengths.
    """
    if isinstance(data, (tuple, list)) and not isinstance(data, Dataset):
        if len(data) != 2:
            raise ValueError(
                f"{what} must be an (X, y) tuple of inputs and labels; got a {type(data).__name__} of {len(data)} items. "
                "Several model inputs go into one tuple or dict: ((a, b), y) or ({'input_ids': ..., ...}, y)."
            )
        X, y = pair(data, what)
    elif isinstance(data, (DataLoader, Dataset)):
        dataset, collate, _ = _loader_parts(data)
        if isinstance(dataset, IterableDataset):
            loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=MATERIALIZE_BATCH)
        else:
            loader = DataLoader(dataset, batch_size=MATERIALIZE_BATCH, shuffle=False, collate_fn=collate)
        xs, ys = [], []
        for item in loader:
            X_b, y_b = pair(item, what)
            xs.append(X_b)
            ys.append(y_b)
        if not xs:
            raise ValueError(f"{what} is empty (0 samples); a loss needs at least one sample.")
        try:
            X, y = inp.concat(xs), torch.cat(ys)
        except Exception as exc:
            raise ValueError(f"{what}: batches could not be joined ({exc}); pad every sample to one shape.") from exc
    else:
        raise ValueError(
            f"{what} must be an (X, y) pair (X a tensor, a tuple or a dict of tensors), a torch Dataset or a "
            f"DataLoader; got {type(data).__name__}."
        )
    n = inp.count(X, f"{what} inputs")
    if n == 0:
        raise ValueError(f"{what} is empty (0 samples); a loss needs at least one sample.")
    if y.dim() == 0 or n != y.shape[0]:
        raise ValueError(f"{what}: inputs have {n} samples but labels have {y.shape[0] if y.dim() else 0}.")
    return inp.apply(X, torch.Tensor.detach), y.detach()


def make_split(name: str, data, batch_size: int | None, device: torch.device, dtype: torch.dtype, placement) -> Split:
    """The split ``name`` of ``data`` kept as ``placement`` says (see the module docstring)."""
    allowed = [p.value for p in Placement]
    if placement not in allowed:
        raise ValueError(f"data_placement must be one of {allowed}; got {placement!r}.")
    placement = Placement(placement)
    if placement is Placement.LAZY:
        if not isinstance(data, (Dataset, DataLoader)) or isinstance(_loader_parts(data)[0], IterableDataset):
            raise ValueError(
                f"data_placement='lazy' reads a map-style Dataset (or a DataLoader over one) a batch at a time; "
                f"{name} is a {type(data).__name__}. Use 'cpu' to keep tensors in host memory instead."
            )
        dataset, collate, loader_batch = _loader_parts(data)
        split = LazySplit(name, dataset, collate, batch_size or loader_batch or 256, device, dtype)
        split.head(1)  # refuse a malformed sample now, not in the middle of a landscape
        return split
    X, y = read_all(data, name)
    X = inp.to(X, inp.leaves(X)[0][1].device, dtype)  # floating inputs in the model's dtype, where they are
    n = y.shape[0]
    bs = batch_size or min(n, 4096)
    if placement is Placement.AUTO:
        placement = Placement.DEVICE if _fits(X, y, device) else Placement.CPU
    if placement is Placement.DEVICE:
        return Split(name, inp.to(X, device), y.to(device), bs, device)
    return Split(name, inp.to(X, "cpu"), y.cpu(), bs, device, Placement.CPU)


def _fits(X, y, device: torch.device) -> bool:
    """Whether the split may live on ``device``: always on the CPU; a quarter of the free memory on CUDA."""
    if device.type != "cuda":
        return True
    size = sum(t.numel() * t.element_size() for _, t in inp.leaves(X)) + y.numel() * y.element_size()
    free, _ = torch.cuda.mem_get_info(device)
    return size <= free // 4
