"""Zarr v3 activation stores: a resumable, atomic writer and checked readers.

One store holds the captured states of one (model, init, task, length), laid out as
in docs/CONTRACTS.md:

=========  =====================================  ======================================
array      shape                                  dims
=========  =====================================  ======================================
last       [K_all, n_samples, hidden]             n_states, n_samples, hidden
labels     [n_samples] int64                      n_samples
n_tokens   [n_samples] int64                      n_samples
tokens     [K_all, n_prompts, max_len, hidden]    n_states, n_prompts, n_tokens, hidden
lengths    [n_prompts] int64                      n_prompts
_done      [n_windows] bool                       n_windows (write markers, all true)
=========  =====================================  ======================================

Sample ``i`` of a store is record ``sample_start + i`` of the prompt file (file order;
nothing is permuted). ``token_prompt_ids`` (attr) lists the prompt-file indices whose
full token states are in ``tokens``, in order.

How a store is written (``StoreWriter``)
----------------------------------------
* The samples are cut into *windows* of ``batch_size * window_batches`` consecutive
  samples; a window is the unit of work, of writing and of resumption. Chunks never
  straddle windows, so each chunk is written by exactly one window.
* Everything is written under ``<name>.zarr.partial``, created by :meth:`StoreWriter.open`
  (or, when the input digest is deferred, at the first write: see ``content_sha256``
  there; a run killed before it leaves nothing). After a window's data is on
  disk, its marker ``_done[w]`` is set. Zarr's local store writes every file through
  a temporary name and a rename, so a chunk or a marker is either whole or absent.
* A rerun opens the partial store, checks that its attrs and the writer fingerprint
  (below) match, skips finished windows and continues; a mismatching or unreadable
  partial store is deleted with a log line and restarted. Chunking (batch size,
  ``window_batches``, compression) need not match, as for a complete store: a rerun with
  another batch size (e.g. a smaller one after running out of memory) resumes the partial
  store and keeps its chunk layout (logged at INFO). Its windows then differ from the
  stored ones: a window of the rerun counts as written if every sample of it lies in a
  stored window marked done, and a stored window's marker is set once the rerun has
  written all of its samples (a window of the rerun that straddles a finished stored
  window recomputes those samples too). Each sample's values are those of the run that
  wrote it last; runs with different batch sizes agree to floating-point rounding, not
  necessarily bit for bit (other batch shapes, other kernels).
* One writer at a time: :meth:`StoreWriter.open` takes an exclusive, non-blocking
  ``flock`` on ``<name>.zarr.lock`` (next to the store; it holds the writer's PID) and
  keeps it until :meth:`StoreWriter.finalize` or :meth:`StoreWriter.close`, which delete
  the file. A second process opening a writer on the same store gets a
  :class:`StoreError` naming the PID that holds it; the kernel drops the lock when its
  process dies, so a killed job's rerun resumes at once (a killed job leaves the lock file
  behind; it is reused). Shards are separate stores with their own locks. A second writer
  of the *same* process takes the lock over (a rerun after an error); the first may then
  no longer write. Where the file system has no ``flock`` the writer warns and runs unlocked.
* ``finalize`` writes ``complete: true`` into the attrs last, then renames
  ``.partial`` to the final name. A SIGKILL at any point therefore never leaves a
  final-named store. A rerun when the complete final store exists is a no-op.

What the writer fingerprint covers (attr ``writer``)
-----------------------------------------------------
A partial store is resumed, and a complete one reused, only if all of these match:
``spec`` (shapes, sample range, token prompt ids, requested dtype; not the chunking:
``batch_size``, ``window_batches`` and ``compress`` may differ, the stored layout is kept);
``content_sha256``, the sha256 of the model *input*: for every sample and token prompt of
the store, in prompt-file order, its index, its length and its token ids; ``meta_sha256``
(labels, n_tokens, lengths); the caller's ``attrs`` (model id and revision, init scheme,
params and seed, compute dtype and device, the prompt file's sha256, the config digest);
``reprflow_version``; and ``chunk_checksum``. ``content_sha256`` deliberately covers the
input only. The *output* is protected per chunk (next section): a store-wide digest of
the activations would need a full reread (terabytes at paper scale) to verify, and could
only say that something somewhere changed. The model weights are identified by id and
revision, not hashed (tens of GB per model): pin ``revision`` for hub models; a local
model folder whose weights change in place is not detected.

Integrity
---------
Every chunk of every array (``last``, ``tokens``, ``labels``, ``n_tokens``, ``lengths``,
``_done``) ends with its crc32c (zarr v3's ``crc32c`` codec, after any compression), which
zarr verifies on every read. :func:`open_store` returns a :class:`StoreGroup` whose arrays
turn a failed read into one :class:`StoreError` naming the store, the array, the chunk
(index and file) and how to rebuild the store; it also refuses a complete store that lacks
a chunk file it must hold (such a chunk would read as zeros). crc32c catches any change to
a chunk's bytes: bit rot, a truncated or partly copied file, a file overwritten with other
(even plausible) values; a wrong-size chunk is reported by its size. It does not catch a
chunk file replaced by another *whole* valid chunk file, checksum included (two files
swapped), or deliberate tampering. Cost: about 1.1-1.2x the CPU time of an uncompressed
write and 1.2-1.4x of a read (benchmarks/results/store_codec.md); on the GPU path the
writes run on the host writer thread.

Stores written before checksums are read, with a :class:`~reprflow.errors.StoreWarning`
(once per store and process) and a log warning; their damaged chunks still raise the
:class:`StoreError` naming the chunk when zarr cannot decode them (e.g. a wrong size), but
same-size damage goes unnoticed. The writer never reuses such a store (its fingerprint
lacks ``chunk_checksum``): rerunning the extraction rewrites it with checksums.

Chunking
--------
``last`` is chunked ``[1, window, hidden]``: a probe reads one state for all samples,
and a window writes whole chunks. ``tokens`` is chunked ``[1, 1, min(max_len, 1024),
hidden]``: a token metric reads all states of one prompt, a window writes whole
prompts.

Compression is off by default. Float16/float32 activations are mostly mantissa noise:
Blosc zstd-1 with byte shuffle saved only 6-9% of the bytes on activation-like data
while writing 1.2-2.4x slower (benchmarks/store_codec.py, results in
benchmarks/results/store_codec.md). ``compress=True`` turns it on for disk-bound sites.

Precision
---------
Zarr has no bfloat16. ``store_dtype`` is ``"float32"``, ``"float16"`` or ``"auto"``.
Every window is checked *before* conversion: non-finite values always raise
``StoreError``; a window written as float16 must have max |x| < 65504 or it raises
``StoreError`` naming the window and the fix (``extraction.store_dtype: float32``). ``"auto"``
decides once, before the first window is written (:func:`choose_store_dtype`, the one
place of the policy; the store sink of the extraction, :class:`reprflow.sinks.ZarrStoreSink`,
applies it to the peak of its first batch and calls ``StoreWriter.create_arrays``, so that
token states can be converted to float16 on the GPU; a writer used directly applies it to
the peak of the first window written): float16 if ``max|x| * 4 < 65504`` (headroom 4 for
later, longer or rarer prompts), else float32; the decision and the observed maximum
are recorded in the attr ``dtype_check``. The attr ``store_dtype`` holds the on-disk
dtype; the attr ``dtype`` is the *compute* dtype of the forward passes (e.g. bfloat16).

Shards
------
A writer can take a sample range ``[sample_start, sample_stop)`` so that one job per
shard writes ``<name>_shard{i}of{k}.zarr`` (``shard_path``, ``shard_range``).
``open_sharded`` presents the shards as one logical store without copying: arrays
are concatenated lazily along n_samples / n_prompts on read.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shutil
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from reprflow import __version__
from reprflow.errors import StoreError, StoreWarning

logger = logging.getLogger(__name__)

FLOAT16_MAX = 65504.0
"""Largest finite float16; a value at or above it in magnitude is refused."""
AUTO_HEADROOM = 4.0
"""``store_dtype="auto"`` picks float16 only if max |x| of the first window times this is < 65504."""
TOKEN_CHUNK_POSITIONS = 1024
"""Chunk length of ``tokens`` along positions."""
STORE_DTYPES = ("float16", "float32", "auto")
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"

CALLER_ATTRS = (
    "model",
    "model_id",
    "revision",
    "family",
    "init",
    "task",
    "length",
    "tokenizer",
    "prompt_file",
    "prompt_sha256",
    "state_names",
    "views",
    "dtype",
)
"""Group attrs the caller of ``StoreWriter`` must provide (see docs/CONTRACTS.md); ``dtype``
is the compute dtype of the forward passes."""
WRITER_ATTRS = (
    "store_dtype",
    "dtype_check",
    "token_prompt_ids",
    "reprflow_version",
    "shard",
    "writer",
    "timing",
    "complete",
)
"""Group attrs ``StoreWriter`` writes itself (``timing`` through ``finalize``); a caller may not pass them."""
CONTRACT_ATTRS = (*CALLER_ATTRS, "reprflow_version", "token_prompt_ids", "complete")
"""Every group attr docs/CONTRACTS.md requires of a complete store (``open_store`` checks them);
the writer also records ``store_dtype``, ``dtype_check``, ``shard``, ``writer`` and ``timing``."""

DIMS = {
    "last": ("n_states", "n_samples", "hidden"),
    "labels": ("n_samples",),
    "n_tokens": ("n_samples",),
    "tokens": ("n_states", "n_prompts", "n_tokens", "hidden"),
    "lengths": ("n_prompts",),
}

_CHUNKING_FIELDS = ("batch_size", "window_batches", "compress")

# Every chunk of `last` and `tokens` is written whole by one window, so zarr's scan of each
# chunk for the fill value (to skip writing it) is pure cost: skipping it makes writes 3-4x
# faster (benchmarks/store_codec.py). Padding chunks of `tokens` are then stored as zeros.
_WRITE_CONFIG = {"write_empty_chunks": True}

# Temporary files left by zarr's atomic writes when a process is killed mid-write.
_ZARR_TMP = re.compile(r"\.[0-9a-f]{32}\.partial$")


def _json_normal(obj: Any) -> Any:
    """``obj`` as it reads back from JSON attrs (tuples become lists, ...)."""
    return json.loads(json.dumps(obj))


CHUNK_CHECKSUM = "crc32c"
"""Every chunk of every array carries zarr v3's ``crc32c`` codec (4 bytes appended to the chunk,
verified by zarr on every read); recorded in the writer fingerprint."""


def _checksum_codecs() -> list[Crc32cCodec]:
    """The codec that appends and verifies each chunk's crc32c (the last bytes-to-bytes codec)."""
    return [Crc32cCodec()]


def _compressors(compress: bool) -> list[BloscCodec | Crc32cCodec]:
    """Bytes-to-bytes codecs of ``last`` and ``tokens``: optional Blosc, then the checksum (last,
    so that it covers the bytes on disk)."""
    blosc = [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")] if compress else []
    return [*blosc, *_checksum_codecs()]


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name a store is written under: ``<path>.partial``."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a store's writer, next to the store: ``<path>.lock`` (``kvpr_n300.zarr.lock``)."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


def _is_file_at(fd: int, file: Path) -> bool:
    """True if the open file ``fd`` is (still) the file named ``file`` (not deleted or replaced)."""
    try:
        st, at = os.fstat(fd), os.stat(file)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (at.st_dev, at.st_ino)


class _WriterLock:
    """An exclusive ``flock`` on a store's lock file, which holds the writer's PID.

    The lock belongs to the open file, so the kernel drops it when the process dies (a
    killed job's rerun is not blocked); :meth:`release` deletes the file, then unlocks.
    """

    def __init__(self, file: Path, fd: int) -> None:
        self.file = file
        self.fd: int | None = fd

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if _is_file_at(fd, self.file):  # deleted while still held: a waiter that opened it retries
                self.file.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)

    def __del__(self) -> None:  # a writer dropped without close(): unlock (the file stays)
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass


_HELD: dict[str, tuple[int, weakref.ref]] = {}
"""Lock file -> (PID, writer) of the locks this process holds, for a takeover within the process."""
_HELD_GUARD = threading.Lock()


def _holder_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def _lock_store(writer: StoreWriter) -> _WriterLock | None:
    """Lock ``writer``'s store for it (see "How a store is written"); None where locks are unsupported.

    Raises :class:`StoreError` if another process holds the lock. A lock held by another
    writer of this process is taken over: that writer was abandoned (e.g. after an error) or
    is a mistake, and it may no longer write.
    """
    file = lock_path(writer.path)
    key = os.path.abspath(file)
    with _HELD_GUARD:
        pid, ref = _HELD.get(key, (None, None))
        old = ref() if ref is not None and pid == os.getpid() else None
        if old is not None and old is not writer and old._lock is not None:
            lock, old._lock, old._superseded = old._lock, None, True
            _HELD[key] = (os.getpid(), weakref.ref(writer))
            logger.info("%s: taking the store over from an earlier writer of this process", writer.path)
            return lock
        for _ in range(100):  # retried only if the holder deleted the file between our open and our lock
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                logger.warning(
                    "%s: cannot create the lock file %s (%s); writing without a lock", writer.path, file, exc
                )
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_pid(fd)
                os.close(fd)
                raise StoreError(
                    f"{writer.path} is being written by another process (PID {holder}); wait for it or stop it"
                ) from None
            except OSError as exc:  # e.g. a network file system without flock (ENOLCK, ENOSYS)
                os.close(fd)
                logger.warning(
                    "%s: cannot lock %s (%s); writing without a lock, so a second writer would go unnoticed",
                    writer.path,
                    file,
                    exc,
                )
                return None
            if _is_file_at(fd, file):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                _HELD[key] = (os.getpid(), weakref.ref(writer))
                return _WriterLock(file, fd)
            os.close(fd)
        raise StoreError(f"{writer.path}: could not lock {file} (it keeps being replaced); retry")


def shard_range(n_samples: int, index: int, count: int) -> tuple[int, int]:
    """Sample range ``[start, stop)`` of shard ``index`` of ``count`` (near-equal, contiguous).

    Parameters
    ----------
    n_samples : int
        Number of samples (prompts) of the whole prompt set.
    index : int
        Shard index, ``0 <= index < count``.
    count : int
        Number of shards, ``1 <= count <= n_samples``.
    """
    if not 1 <= count <= max(n_samples, 1) or not 0 <= index < count:
        raise StoreError(
            f"shard {index} of {count} for {n_samples} samples: need 1 <= count <= n_samples and 0 <= index < count"
        )
    bounds = np.linspace(0, n_samples, count + 1).round().astype(int)
    return int(bounds[index]), int(bounds[index + 1])


def shard_path(path: str | os.PathLike, index: int, count: int) -> Path:
    """``a/b/kvpr_n2048.zarr`` -> ``a/b/kvpr_n2048_shard{index}of{count}.zarr``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_shard{index}of{count}{path.suffix}")


@dataclass(frozen=True)
class StoreSpec:
    """Shapes and chunking of one store (the whole prompt set or one shard).

    Attributes
    ----------
    n_states : int
        K_all = L + 2 captured states.
    hidden : int
        Width of the residual stream.
    n_samples_total : int
        Samples in the whole prompt set (all shards).
    sample_start, sample_stop : int
        This store's samples are prompt-file records ``[sample_start, sample_stop)``.
    batch_size : int
        Prompts per forward pass.
    window_batches : int
        Batches per window (the unit of writing and resumption).
    token_prompt_ids : tuple of int
        Prompt-file indices whose token states this store holds, ascending, all in
        ``[sample_start, sample_stop)``.
    max_len : int
        Length of the ``tokens`` position axis; the same for all shards of a prompt set.
    store_dtype : {"float16", "float32", "auto"}
        Requested on-disk dtype of ``last`` and ``tokens``.
    compress : bool
        Blosc zstd-1 + byte shuffle if true; no compression (the default) otherwise.
    """

    n_states: int
    hidden: int
    n_samples_total: int
    sample_start: int
    sample_stop: int
    batch_size: int
    window_batches: int
    token_prompt_ids: tuple[int, ...]
    max_len: int
    store_dtype: str = "auto"
    compress: bool = False

    def __post_init__(self) -> None:
        if self.store_dtype not in STORE_DTYPES:
            raise StoreError(f"store_dtype {self.store_dtype!r}: expected one of {STORE_DTYPES}")
        if not 0 <= self.sample_start < self.sample_stop <= self.n_samples_total:
            raise StoreError(
                f"sample range [{self.sample_start}, {self.sample_stop}) is empty or outside "
                f"[0, {self.n_samples_total})"
            )
        if self.batch_size < 1 or self.window_batches < 1 or self.n_states < 1 or self.hidden < 1:
            raise StoreError(f"invalid store spec {self}: sizes must be >= 1")
        ids = list(self.token_prompt_ids)
        if ids != sorted(set(ids)) or any(not self.sample_start <= i < self.sample_stop for i in ids):
            raise StoreError(
                f"token_prompt_ids {ids} must be ascending, unique and inside [{self.sample_start}, {self.sample_stop})"
            )

    @property
    def n_samples(self) -> int:
        """Samples in this store."""
        return self.sample_stop - self.sample_start

    @property
    def window(self) -> int:
        """Samples per window."""
        return self.batch_size * self.window_batches

    @property
    def n_windows(self) -> int:
        return -(-self.n_samples // self.window)

    def window_range(self, w: int) -> tuple[int, int]:
        """Prompt-file sample range ``[start, stop)`` of window ``w``."""
        start = self.sample_start + w * self.window
        return start, min(start + self.window, self.sample_stop)

    def window_of(self, i: int) -> int:
        """Window that holds prompt-file sample ``i``."""
        return (i - self.sample_start) // self.window

    def window_token_ids(self, w: int) -> list[int]:
        """Token prompts (prompt-file indices) that fall in window ``w``."""
        start, stop = self.window_range(w)
        return [i for i in self.token_prompt_ids if start <= i < stop]


def abs_peak(x: np.ndarray) -> float:
    """max |x|, NaN if ``x`` holds a NaN (inf if an inf), without float16 arithmetic.

    numpy emulates float16 arithmetic element by element, so for float16 input the peak is
    read from the magnitude bits instead: clearing the sign bit leaves an unsigned integer
    that is monotonic in |x| (inf = 0x7C00, NaN above it), which numpy reduces at integer speed.
    """
    if x.dtype == np.float16:
        bits = (x.view(np.uint16) & np.uint16(0x7FFF)).max()
        return float(np.array(bits, dtype=np.uint16).view(np.float16))
    # max/min propagate NaN, so one pass each detects non-finite values too.
    return float(max(x.max(), -x.min()))


def check_range(x: np.ndarray, *, dtype: str, what: str, path: Path) -> float:
    """Refuse non-finite values, and values float16 cannot hold when ``dtype`` is float16.

    Parameters
    ----------
    x : ndarray
        Activations, any shape, float32 (not yet converted).
    dtype : {"float16", "float32"}
        The dtype ``x`` is about to be stored as.
    what : str
        Names the data in the error (e.g. ``"window 3 (samples 48..64) of 'last'"``).
    path : Path
        The store, named in the error.

    Returns
    -------
    float
        max |x| (0.0 for empty ``x``).
    """
    if x.size == 0:
        return 0.0
    peak = abs_peak(x)
    check_peak(peak, dtype=dtype, what=what, path=path)
    return peak


def check_peak(peak: float, *, dtype: str, what: str, path: Path) -> None:
    """:func:`check_range` for a peak computed elsewhere (e.g. on the GPU before conversion)."""
    if not math.isfinite(peak):
        raise StoreError(
            f"{path}: {what} holds non-finite values (NaN or inf); the forward pass diverged. "
            "Check the init's scale (config inits[].params) and extraction.compute_dtype (float16 compute "
            "overflows GPT-Neo/NeoX; use bfloat16 or float32)."
        )
    if dtype == "float16" and peak >= FLOAT16_MAX:
        raise StoreError(
            f"{path}: {what} has max |x| = {peak:.6g}, which overflows float16 (limit "
            f"{FLOAT16_MAX:g}); set `extraction.store_dtype: float32` in the config and rerun"
        )


def writer_fingerprint(
    spec: StoreSpec,
    attrs: Mapping[str, Any],
    *,
    labels: np.ndarray,
    n_tokens: np.ndarray,
    lengths: np.ndarray,
    content_sha256: str,
) -> dict:
    """The attr ``writer``: what must match for a store to be resumed or reused (see the module docstring)."""
    meta = hashlib.sha256()
    for arr in (labels, n_tokens, lengths):
        meta.update(np.asarray(arr, dtype=np.int64).tobytes())
    return _json_normal(
        {
            "spec": asdict(spec),
            "content_sha256": content_sha256,
            "meta_sha256": meta.hexdigest(),  # labels, n_tokens, lengths
            "reprflow_version": __version__,  # never resume across code versions
            "chunk_checksum": CHUNK_CHECKSUM,  # a store without checksums is rewritten, not reused
            "attrs": dict(attrs),
        }
    )


def fingerprint_mismatch(found: Any, expected: Mapping[str, Any], *, ignore: Sequence[str] = ()) -> str | None:
    """None if the stored fingerprint ``found`` equals ``expected``, else why not (one line).

    ``ignore`` names spec fields that may differ (chunking, for a complete store).
    """
    if found == expected:
        return None
    if not isinstance(found, dict):
        return "no writer fingerprint"
    diffs = []
    for part in ("spec", "attrs"):
        a, b = found.get(part, {}), expected[part]
        diffs += [
            f"{part}.{k}: {a.get(k)!r} != {b.get(k)!r}"
            for k in b
            if a.get(k) != b[k] and not (part == "spec" and k in ignore)
        ]
    if found.get("content_sha256") != expected["content_sha256"]:
        diffs.append("content_sha256 (prompt token ids) differs")
    if found.get("meta_sha256") != expected["meta_sha256"]:
        diffs.append("labels, n_tokens or lengths differ")
    if found.get("reprflow_version") != __version__:
        diffs.append(f"written by reprflow {found.get('reprflow_version')}, this is {__version__}")
    if found.get("chunk_checksum") != CHUNK_CHECKSUM:
        diffs.append(f"chunks without {CHUNK_CHECKSUM} checksums (written by an older reprflow)")
    if not diffs and ignore:
        return None
    return "; ".join(diffs) or "fingerprint differs"


def choose_store_dtype(requested: str, peak: float) -> str:
    """The on-disk dtype of a store: the dtype policy, in one place.

    Parameters
    ----------
    requested : {"auto", "float16", "float32"}
        ``extraction.store_dtype``.
    peak : float
        max |x| of the first states to be written (the first batch, or window).

    Returns
    -------
    str
        ``requested`` unless it is ``"auto"``; then float16 if ``peak * AUTO_HEADROOM <
        FLOAT16_MAX`` (headroom for later, longer or rarer prompts), else float32. Every
        later write is still checked against the chosen dtype (:func:`check_peak`).
    """
    if requested not in STORE_DTYPES:
        raise StoreError(f"store_dtype {requested!r}: expected one of {STORE_DTYPES}")
    if requested != "auto":
        return requested
    return "float16" if peak * AUTO_HEADROOM < FLOAT16_MAX else "float32"


def refuse_foreign_target(path: Path) -> None:
    """Raise :class:`StoreError` if ``path`` holds something other than a Zarr store.

    :meth:`StoreWriter.finalize` replaces whatever is at the store's path, so a file or a
    folder of other data given as the output (``-o results``) is refused before any work.
    An empty folder or a folder with a ``zarr.json`` (a store, even a damaged one) is fine.
    """
    if not (path.exists() or path.is_symlink()) or (path / "zarr.json").is_file():
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    what = "a folder that is not a Zarr store" if path.is_dir() else "a file, not a Zarr store"
    raise StoreError(
        f"{path}: exists and is {what}; writing the store there would delete it. Give a new "
        "path for the store (e.g. ending in .zarr) or move that one away"
    )


def create_partial_store(
    partial: Path,
    spec: StoreSpec,
    *,
    attrs: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    labels: np.ndarray,
    n_tokens: np.ndarray,
    lengths: np.ndarray,
) -> zarr.Group:
    """A fresh partial store: group attrs (``complete: false``), ``labels``, ``n_tokens``, ``lengths``, ``_done``.

    ``last`` and ``tokens`` come later, once the on-disk dtype is known (:func:`create_data_arrays`).
    """
    group_attrs = {
        **attrs,
        "token_prompt_ids": list(spec.token_prompt_ids),
        "reprflow_version": __version__,
        "shard": {
            "sample_start": spec.sample_start,
            "sample_stop": spec.sample_stop,
            "n_samples_total": spec.n_samples_total,
        },
        "writer": dict(fingerprint),
        "complete": False,
    }
    group = zarr.open_group(partial, mode="w", attributes=group_attrs)
    for name, data in (("labels", labels), ("n_tokens", n_tokens), ("lengths", lengths)):
        arr = group.create_array(
            name,
            shape=data.shape,
            dtype="int64",
            chunks=(max(data.shape[0], 1),),
            dimension_names=DIMS[name],
            fill_value=0,
            compressors=_checksum_codecs(),
        )
        # Written even if all zeros: a complete store has every chunk file (open_store checks).
        arr.with_config(_WRITE_CONFIG)[:] = data
    group.create_array(
        "_done",
        shape=(spec.n_windows,),
        dtype="bool",
        chunks=(1,),
        fill_value=False,
        compressors=_checksum_codecs(),
        dimension_names=("n_windows",),
    )
    return group


def create_data_arrays(group: zarr.Group, spec: StoreSpec, dtype: str) -> None:
    """Create ``tokens`` and then ``last`` in ``dtype`` (chunking in the module docstring).

    ``tokens`` first: ``last`` present means both exist (a kill in between is redone).
    """
    compressors = _compressors(spec.compress)
    group.create_array(
        "tokens",
        shape=(spec.n_states, len(spec.token_prompt_ids), spec.max_len, spec.hidden),
        dtype=dtype,
        chunks=(1, 1, max(1, min(spec.max_len, TOKEN_CHUNK_POSITIONS)), spec.hidden),
        compressors=compressors,
        fill_value=0,
        dimension_names=DIMS["tokens"],
        overwrite=True,
    )
    group.create_array(
        "last",
        shape=(spec.n_states, spec.n_samples, spec.hidden),
        dtype=dtype,
        chunks=(1, spec.window, spec.hidden),
        compressors=compressors,
        fill_value=0,
        dimension_names=DIMS["last"],
        overwrite=True,
    )


class StoreWriter:
    """Resumable, atomic writer of one activation store.

    Use: ``writer = StoreWriter(path, spec, ...)``; ``if writer.open(): return`` (already
    complete); for each ``w in writer.pending_windows()``: ``writer.write_window(w, ...)``;
    then ``writer.finalize(extra_attrs)``. :meth:`open` locks the store against other
    processes until :meth:`finalize` (or :meth:`close`, to give up without finishing).

    Windows (``pending_windows``, ``write_window``) are always those of ``spec``. A resumed
    partial store written with other chunking (another batch size) keeps its own chunk
    layout and markers; the writer maps this run's windows onto them (module docstring).

    Parameters
    ----------
    path : path-like
        Final store path, e.g. ``results/activations/pythia/pretrained/kvpr_n2048.zarr``.
    spec : StoreSpec
        Shapes, chunking and requested dtype.
    attrs : mapping
        Group attrs; must hold every key of ``CALLER_ATTRS``. Values must be JSON-able.
        Extra keys (e.g. ``compute``) are stored and are part of the resume check.
    labels : ndarray of shape (n_samples,)
        Gold positions of this store's samples.
    n_tokens : ndarray of shape (n_samples,)
        Token counts of this store's samples.
    lengths : ndarray of shape (n_prompts,)
        Token counts of the token prompts (``spec.token_prompt_ids``).
    content_sha256 : str or callable
        Digest of the model input (index, length and token ids of every sample and token
        prompt; see "What the writer fingerprint covers" above); a store written from other
        content is neither resumed nor reused. A zero-argument callable returning it defers
        it (the extraction tokenises its prompts while the GPU computes): it is called
        when first needed, i.e. by :meth:`open` if a final or partial store exists, else
        when the partial store is created -- which is then deferred to the first
        :meth:`create_arrays` or write (:meth:`open` of a fresh store lists every window
        pending and creates nothing, so a run killed before its first write leaves no
        partial store, and one killed later leaves a partial store with the full
        fingerprint, resumed as usual).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        spec: StoreSpec,
        *,
        attrs: Mapping[str, Any],
        labels: np.ndarray,
        n_tokens: np.ndarray,
        lengths: np.ndarray,
        content_sha256: str | Callable[[], str],
    ) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.spec = spec
        missing = [k for k in CALLER_ATTRS if k not in attrs]
        if missing:
            raise StoreError(f"{self.path}: store attrs missing {missing}; the caller must pass them")
        reserved = [k for k in WRITER_ATTRS if k in attrs]
        if reserved:
            raise StoreError(f"{self.path}: store attrs {reserved} are written by the store itself; do not pass them")
        self.attrs = _json_normal(dict(attrs))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_tokens = np.asarray(n_tokens, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        for name, arr, n in (
            ("labels", self.labels, spec.n_samples),
            ("n_tokens", self.n_tokens, spec.n_samples),
            ("lengths", self.lengths, len(spec.token_prompt_ids)),
        ):
            if arr.shape != (n,):
                raise StoreError(f"{self.path}: {name} has shape {arr.shape}, expected ({n},)")
        if self.lengths.size and self.lengths.max() > spec.max_len:
            raise StoreError(f"{self.path}: token prompt length {self.lengths.max()} > max_len {spec.max_len}")
        self._content_sha256 = content_sha256
        self._fingerprint: dict | None = None
        self._create_deferred = False  # open() found no store and the digest is deferred
        self.group: zarr.Group | None = None
        self._tokens_written: set[int] = set()  # token prompts written by this writer object
        self.resumed_windows = 0
        """Windows a previous run had written, found by :meth:`open` (0 for a fresh store)."""
        self.restart_reason: str | None = None
        """Why :meth:`open` deleted a partial store it could not resume (None if it did not)."""
        self.layout = spec
        """The spec the store on disk is laid out by (chunks of ``last``, ``_done`` markers,
        codecs): ``spec``, or a resumed partial store's own chunking."""
        self._written: np.ndarray | None = None  # layout != spec windows: samples on disk (relative)
        self._stored_done: np.ndarray | None = None  # layout != spec windows: markers of `layout`
        self._lock: _WriterLock | None = None
        self._superseded = False  # another writer of this process took the store (and its lock) over

    @property
    def fingerprint(self) -> dict:
        """The attr ``writer`` this writer writes and compares (resolves a deferred digest)."""
        if self._fingerprint is None:
            digest = self._content_sha256
            self._fingerprint = writer_fingerprint(
                self.spec,
                self.attrs,
                labels=self.labels,
                n_tokens=self.n_tokens,
                lengths=self.lengths,
                content_sha256=digest() if callable(digest) else digest,
            )
        return self._fingerprint

    # ------------------------------------------------------------------ opening
    def _matches(self, group: zarr.Group | StoreGroup, *, ignore: Sequence[str] = ()) -> str | None:
        """None if ``group`` was written by an identical writer, else the reason (:func:`fingerprint_mismatch`)."""
        return fingerprint_mismatch(group.attrs.get("writer"), self.fingerprint, ignore=ignore)

    def open(self) -> bool:
        """Open or create the partial store.

        Returns
        -------
        bool
            True if the final store already exists, is complete and was written by an
            identical writer: nothing to do. False otherwise (then write windows).

        Raises
        ------
        StoreError
            If another process is writing this store (it holds ``<path>.lock``).
        """
        refuse_foreign_target(self.path)
        if self._lock is None:
            self._lock = _lock_store(self)
        self._superseded = False
        try:
            complete = self._open()
        except BaseException:
            self.close()
            raise
        if complete:
            self.close()
        return complete

    def close(self) -> None:
        """Unlock the store (and delete its lock file) without finishing it; a partial store stays resumable.

        :meth:`finalize` does this itself. Idempotent.
        """
        lock, self._lock = self._lock, None
        if lock is None:
            return
        key = os.path.abspath(lock.file)
        with _HELD_GUARD:
            if key in _HELD and _HELD[key][1]() is self:
                del _HELD[key]
        lock.release()

    def _open(self) -> bool:
        self.layout, self._written, self._stored_done = self.spec, None, None
        if self.path.exists():
            reason = self._final_reason()
            if reason is None:
                logger.info("%s: complete store exists; nothing to do", self.path)
                return True
            logger.warning("%s: existing store is not reusable (%s); rewriting it", self.path, reason)
        if self.partial.exists():
            try:
                group = zarr.open_group(self.partial, mode="r+")
                reason = self._matches(group, ignore=_CHUNKING_FIELDS)  # chunking: the stored one is kept
                if reason is None:
                    layout, done = self._stored_layout(group)
            except (OSError, ValueError, KeyError, TypeError, zarr.errors.BaseZarrError) as exc:
                reason = f"unreadable ({type(exc).__name__}: {exc})"
            if reason is None:
                logger.info(
                    "%s: resuming, %d of %d windows already written",
                    self.partial,
                    int(np.count_nonzero(done)),
                    layout.n_windows,
                )
                self._keep_layout(layout, done)
                self.group = group
                self.resumed_windows = int(np.count_nonzero(done))
                return False
            logger.warning("%s: partial store does not match this run (%s); deleting it", self.partial, reason)
            self.restart_reason = reason
            shutil.rmtree(self.partial)
        if callable(self._content_sha256) and self._fingerprint is None:  # fresh store, digest not needed yet
            self._create_deferred = True
            return False
        self.group = self._create()
        return False

    def _stored_layout(self, group: zarr.Group) -> tuple[StoreSpec, np.ndarray]:
        """The spec a matching partial store was laid out by (its own chunking) and its ``_done`` markers."""
        stored = group.attrs["writer"]["spec"]
        layout = replace(self.spec, **{k: stored[k] for k in _CHUNKING_FIELDS})
        done = np.asarray(group["_done"][:], dtype=bool)
        if done.shape != (layout.n_windows,):
            raise ValueError(f"_done has shape {done.shape}, its spec has {layout.n_windows} windows")
        if "last" in group and group["last"].chunks[1] != layout.window:
            raise ValueError(f"'last' has chunks {group['last'].chunks}, its spec windows of {layout.window}")
        return layout, done

    def _keep_layout(self, layout: StoreSpec, done: np.ndarray) -> None:
        """Resume a partial store laid out by ``layout`` (its chunking may differ from ``spec``'s)."""
        self.layout = layout
        if layout == self.spec:
            return
        spec = self.spec
        old = ", ".join(f"{k}={getattr(layout, k)}" for k in _CHUNKING_FIELDS)
        new = ", ".join(f"{k}={getattr(spec, k)}" for k in _CHUNKING_FIELDS)
        logger.info(
            "%s: the partial store was written with %s (windows of %d samples), this run has %s (windows of "
            "%d): resuming it, keeping the stored chunk layout",
            self.partial,
            old,
            layout.window,
            new,
            spec.window,
        )
        if layout.window != spec.window:
            self._stored_done = done.copy()
            self._written = np.repeat(done, layout.window)[: spec.n_samples].copy()

    def _final_reason(self) -> str | None:
        """None if the final store is complete and holds what this writer would write.

        Chunking (batch size, window, compression) may differ: it changes no value.
        """
        try:
            group = open_store(self.path)
        except StoreError as exc:
            return str(exc)
        return self._matches(group, ignore=_CHUNKING_FIELDS)

    def _create(self) -> zarr.Group:
        return create_partial_store(
            self.partial,
            self.spec,
            attrs=self.attrs,
            fingerprint=self.fingerprint,
            labels=self.labels,
            n_tokens=self.n_tokens,
            lengths=self.lengths,
        )

    # ------------------------------------------------------------------ writing
    def pending_windows(self) -> list[int]:
        """Indices of windows (of ``spec``) not yet written, ascending.

        If the stored layout has other windows, a window is written when every sample of it
        lies in a stored window marked done.
        """
        spec = self.spec
        if self.group is None and self._create_deferred:
            return list(range(spec.n_windows))
        done = np.asarray(self._group()["_done"][:], dtype=bool)
        if self.layout.window == spec.window:
            return [int(w) for w in np.flatnonzero(~done)]
        on_disk = np.repeat(done, self.layout.window)[: spec.n_samples]
        return [w for w in range(spec.n_windows) if not on_disk[w * spec.window : (w + 1) * spec.window].all()]

    def _mark_written(self, w: int) -> None:
        """Set the marker(s) of window ``w`` of ``spec``, whose data is on disk."""
        done = self._group()["_done"]
        if self._written is None:  # the stored windows are this run's
            done[w] = True
            return
        spec, size = self.spec, self.layout.window
        start, stop = (i - spec.sample_start for i in spec.window_range(w))
        self._written[start:stop] = True
        for v in range(start // size, (stop - 1) // size + 1):  # stored windows now whole on disk
            if not self._stored_done[v] and self._written[v * size : (v + 1) * size].all():
                done[v] = True
                self._stored_done[v] = True

    def _group(self) -> zarr.Group:
        if self._superseded:
            raise StoreError(
                f"{self.path}: another StoreWriter of this process has opened this store since; "
                "this one may no longer write it"
            )
        if self.group is None and self._create_deferred:  # the first write of a fresh store
            self.group = self._create()
            self._create_deferred = False
        if self.group is None:
            raise StoreError(f"{self.path}: StoreWriter.open() must be called first")
        return self.group

    def decided_dtype(self) -> str | None:
        """The on-disk dtype once :meth:`create_arrays` has run (or a resumed store has one), else None."""
        if self.group is None and self._create_deferred:
            return None
        group = self._group()
        return str(group["last"].dtype) if "last" in group else None

    def create_arrays(self, dtype: str, *, observed_max_abs: float, window: int) -> None:
        """Create ``tokens`` and ``last`` in the on-disk ``dtype`` and record how it was chosen.

        Called once per store, before the first window is written; the caller chose
        ``dtype`` with :func:`choose_store_dtype` from ``observed_max_abs``, the max |x|
        seen in window ``window`` (recorded in the attr ``dtype_check``).
        """
        group = self._group()
        if "last" in group:
            raise StoreError(f"{self.partial}: the on-disk dtype is already fixed ({group['last'].dtype})")
        spec = self.spec
        if dtype not in ("float16", "float32") or spec.store_dtype not in ("auto", dtype):
            raise StoreError(f"{self.path}: dtype {dtype!r} for a store requested as {spec.store_dtype!r}")
        peak = observed_max_abs
        group.attrs.update(
            {
                "store_dtype": dtype,
                "dtype_check": {
                    "mode": spec.store_dtype,
                    "observed_max_abs": peak,
                    "decided_on_window": window,
                    "headroom": AUTO_HEADROOM,
                    "float16_max": FLOAT16_MAX,
                },
            }
        )
        logger.info(
            "%s: storing %s (store_dtype=%s, max |x| = %.4g in window %d)",
            self.path,
            dtype,
            spec.store_dtype,
            peak,
            window,
        )
        create_data_arrays(group, self.layout, dtype)

    def _fix_dtype(self, peak: float, w: int) -> str:
        """Choose (:func:`choose_store_dtype`) and create the on-disk dtype from the first window written."""
        dtype = choose_store_dtype(self.spec.store_dtype, peak)
        self.create_arrays(dtype, observed_max_abs=peak, window=w)
        return dtype

    def _check_dtype(self, decided: str | None) -> str:
        """dtype to check values against: the ``decided`` one, or the configured one (auto: float32)."""
        dtype = decided or self.spec.store_dtype
        return "float32" if dtype == "auto" else dtype

    def _token_slot(self, pid: int, states: np.ndarray) -> int:
        """Position of token prompt ``pid`` in ``tokens``; checks the states' shape."""
        spec = self.spec
        if pid not in spec.token_prompt_ids:
            raise StoreError(f"{self.path}: prompt {pid} is not a token prompt of this store")
        slot = spec.token_prompt_ids.index(pid)
        expect = (spec.n_states, int(self.lengths[slot]), spec.hidden)
        if states.shape != expect:
            raise StoreError(f"{self.path}: tokens of prompt {pid} have shape {states.shape}, expected {expect}")
        return slot

    def write_tokens(self, pid: int, states: np.ndarray, *, peak: float | None = None) -> None:
        """Check, convert and write the full token states of token prompt ``pid``.

        Token states are written as they come, before the marker of their window is set
        (so at most one prompt's states wait in host memory per call); a window counts
        as written only once :meth:`write_window` has set its marker, so a kill between
        the two rewrites them on resume.

        Parameters
        ----------
        pid : int
            Prompt-file index, one of ``spec.token_prompt_ids``.
        states : ndarray of shape (n_states, n_tokens, hidden)
            Unpadded (``n_tokens`` = that prompt's length); float32, or already in the
            store's dtype.
        peak : float, optional
            max |x| of the states as computed on the device before any conversion (NaN
            if any NaN); when given, the host-side scan is skipped and ``peak`` is
            checked instead.
        """
        slot = self._token_slot(pid, states)
        dtype = self.decided_dtype()
        what = f"'tokens' (prompt {pid})"
        if peak is None:
            peak = check_range(states, dtype=self._check_dtype(dtype), what=what, path=self.path)
        else:
            check_peak(peak, dtype=self._check_dtype(dtype), what=what, path=self.path)
        if dtype is None:
            dtype = self._fix_dtype(peak, self.spec.window_of(pid))
        tok_arr = self._group()["tokens"].with_config(_WRITE_CONFIG)
        # Positions past the prompt's length keep the fill value 0 (never written, or
        # written as 0 by an earlier attempt at this same prompt).
        tok_arr[:, slot, : states.shape[1], :] = states.astype(dtype, copy=False)
        self._tokens_written.add(pid)

    def write_window(self, w: int, last: np.ndarray, tokens: Mapping[int, np.ndarray] | None = None) -> None:
        """Check, convert and write window ``w``, then set its marker.

        Parameters
        ----------
        w : int
            Window index.
        last : ndarray of shape (n_states, n_window, hidden)
            Last-token states of the window's samples, in prompt-file order, float32.
        tokens : mapping of int to ndarray of shape (n_states, n_tokens, hidden), optional
            Full token states of the window's token prompts (``spec.window_token_ids(w)``)
            not already written by :meth:`write_tokens`, keyed by prompt-file index,
            unpadded (``n_tokens`` = that prompt's length).
        """
        spec = self.spec
        tokens = dict(tokens or {})
        start, stop = spec.window_range(w)
        if last.shape != (spec.n_states, stop - start, spec.hidden):
            raise StoreError(
                f"{self.path}: window {w}: last has shape {last.shape}, expected "
                f"{(spec.n_states, stop - start, spec.hidden)}"
            )
        expect_ids = spec.window_token_ids(w)
        stray = sorted(set(tokens) - set(expect_ids))
        if stray:
            raise StoreError(f"{self.path}: window {w}: token prompts {stray} do not belong to it ({expect_ids})")
        for pid, states in tokens.items():
            self._token_slot(pid, states)
        where = f"window {w} (samples {start}..{stop})"
        dtype = self.decided_dtype()
        check_dtype = self._check_dtype(dtype)
        peak = check_range(last, dtype=check_dtype, what=f"{where} of 'last'", path=self.path)
        token_peaks = {}
        for pid, states in tokens.items():
            what = f"{where} of 'tokens' (prompt {pid})"
            token_peaks[pid] = check_range(states, dtype=check_dtype, what=what, path=self.path)
        if dtype is None:
            dtype = self._fix_dtype(max([peak, *token_peaks.values()]), w)
        for pid, states in tokens.items():
            self.write_tokens(pid, states, peak=token_peaks[pid])
        missing = sorted(set(expect_ids) - self._tokens_written)
        if missing:
            raise StoreError(f"{self.path}: window {w}: token states of prompts {missing} were not written")
        group = self._group()
        # The runtime config is not persisted with the array: reapply it on every open.
        last_arr = group["last"].with_config(_WRITE_CONFIG)
        last_arr[:, start - spec.sample_start : stop - spec.sample_start, :] = last.astype(dtype, copy=False)
        self._mark_written(w)

    def finalize(self, extra_attrs: Mapping[str, Any] | None = None) -> Path:
        """Set ``complete: true`` (last write) and rename the partial store to its final name.

        Parameters
        ----------
        extra_attrs : mapping, optional
            Attrs to add before completion (e.g. ``timing``).

        Returns
        -------
        Path
            The final store path.
        """
        group = self._group()
        pending = self.pending_windows()
        if pending:
            raise StoreError(f"{self.partial}: windows {pending} not written; cannot finalize")
        for root, _dirs, files in os.walk(self.partial):
            for name in files:
                if _ZARR_TMP.search(name):
                    os.unlink(os.path.join(root, name))  # leftover of a write killed mid-way
        if extra_attrs:
            group.attrs.update(_json_normal(dict(extra_attrs)))
        group.attrs.update({"complete": True})
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.partial, self.path)
        self.group = None
        self.close()
        logger.info("%s: store complete", self.path)
        return self.path


# ---------------------------------------------------------------------- reading
def looks_like_store(path: str | os.PathLike) -> bool:
    """True if ``path`` is, by its looks, a store (a directory with ``zarr.json``, or a name ending in ``.zarr``).

    Only such a path gets the advice to delete and rebuild it (:func:`rebuild_hint`); a prompt
    file, a model folder or an empty folder given as a store gets :func:`not_a_store` instead.
    """
    path = Path(path)
    return path.name.endswith(".zarr") or (path / "zarr.json").is_file()


def not_a_store(path: str | os.PathLike) -> str:
    """The error message for a path given as a store that is none."""
    return f"{path} is not a reprflow store (a directory written by `reprflow extract` or the workflow)"


def rebuild_hint(path: str | os.PathLike) -> str:
    """How to rebuild a damaged store at ``path`` (the tail of every corruption error).

    For a store only (:func:`looks_like_store`): callers check that first.
    """
    return (
        f"rebuild it: delete it (`rm -r {path}`) and rerun the snakemake (or dvc repro) command "
        f"that needs it, which re-extracts a missing store; or append `--forcerun {path}` to your "
        "snakemake command"
    )


def _has_checksum(arr: zarr.Array) -> bool:
    return any(isinstance(c, Crc32cCodec) for c in arr.compressors)


def _encoded_chunk_size(arr: zarr.Array) -> int | None:
    """Bytes of one chunk file when the size is fixed (no compression), else None."""
    if arr.filters or any(not isinstance(c, Crc32cCodec) for c in arr.compressors):
        return None
    return math.prod(arr.chunks) * arr.dtype.itemsize + 4 * len(arr.compressors)


def _chunk_ranges(arr: zarr.Array, key: Any) -> list[Sequence[int]]:
    """Per axis, the chunk indices a selection ``key`` touches (all of them where unsure)."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (arr.ndim - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (arr.ndim - len(key))
    out: list[Sequence[int]] = []
    for k, n, c in zip(key, arr.shape, arr.chunks):
        every = range(-(-n // c))
        try:
            if isinstance(k, slice):
                idx = np.arange(n)[k]
            else:
                idx = np.atleast_1d(np.asarray(k, dtype=np.int64))
                idx = np.where(idx < 0, idx + n, idx)
            out.append(sorted({int(i) // c for i in idx}) if idx.ndim == 1 else every)
        except (TypeError, ValueError):
            out.append(every)
    return out


def _chunk_problem(arr: zarr.Array, coords: tuple[int, ...], file: Path) -> str | None:
    """What is wrong with one chunk file, or None if it decodes (a missing file reads as fill)."""
    if not file.is_file():
        return None
    size, expect = file.stat().st_size, _encoded_chunk_size(arr)
    if expect is not None and size != expect:
        return f"the file has {size} bytes, expected {expect} (truncated, or overwritten with other data)"
    if arr.compressors and isinstance(arr.compressors[-1], Crc32cCodec):
        data = file.read_bytes()
        stored = bytes(data[-4:])
        computed = np.uint32(google_crc32c.value(data[:-4])).tobytes()
        if stored != computed:
            return (
                f"its crc32c checksum does not match its bytes (stored {stored.hex()}, computed "
                f"{computed.hex()}): the data on disk is not what the writer wrote"
            )
    try:
        arr.get_block_selection(coords)
    except Exception as exc:  # any decoding failure of this one chunk is the answer
        return f"it cannot be decoded ({type(exc).__name__}: {exc})"
    return None


class StoreArray:
    """One array of a complete store: zarr reads, with errors that name the damaged chunk.

    Reads (``a[...]``, ``a.oindex[...]``, ``np.asarray(a)``) go to the zarr array, which
    verifies each chunk's crc32c. If a read fails, the chunks it touched are checked one
    by one and the first damaged one raises :class:`StoreError` naming the store, the
    array, the chunk (index and file) and how to rebuild the store. Every other attribute
    (``shape``, ``dtype``, ``chunks``, ``metadata``, ...) is the zarr array's.
    """

    def __init__(self, array: zarr.Array, *, store: Path, name: str) -> None:
        self.array = array
        self.store = Path(store)
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr == "array":  # copy/pickle probe before __init__ ran
            raise AttributeError(attr)
        return getattr(self.array, attr)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> Any:
        return self._read(key, self.array.__getitem__)

    @property
    def oindex(self) -> "_OIndex":
        """Orthogonal indexing, as ``zarr.Array.oindex``."""
        return _OIndex(self)

    def chunk_file(self, coords: Sequence[int]) -> Path:
        """The file that holds chunk ``coords`` (e.g. ``<store>/last/c/3/1/0``)."""
        return self.store / self.name / self.array.metadata.encode_chunk_key(tuple(coords))

    def _read(self, key: Any, read: Any) -> Any:
        try:
            return read(key)
        except (IndexError, MemoryError):
            raise
        except Exception as exc:
            try:
                ranges = _chunk_ranges(self.array, key)
            except Exception:
                raise exc from None
            for coords in itertools.product(*ranges):
                problem = _chunk_problem(self.array, coords, self.chunk_file(coords))
                if problem is not None:
                    raise StoreError(self.damage(coords, problem)) from exc
            raise

    def damage(self, coords: Sequence[int], problem: str) -> str:
        """The error message for damaged chunk ``coords``."""
        file = self.chunk_file(coords)
        return (
            f"{self.store}: array '{self.name}', chunk {tuple(int(c) for c in coords)} "
            f"(file {file.relative_to(self.store)}) is damaged: {problem}. Its values cannot be "
            f"trusted; {rebuild_hint(self.store)}"
        )


class _OIndex:
    def __init__(self, owner: StoreArray) -> None:
        self.owner = owner

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.owner._read(key, self.owner.array.oindex.__getitem__)


class StoreGroup:
    """A complete store as :func:`open_store` returns it: the zarr group, arrays as :class:`StoreArray`.

    ``g["last"]`` is a :class:`StoreArray`; ``g.attrs``, ``name in g`` and every other
    attribute are the zarr group's (``g.group``).
    """

    def __init__(self, group: zarr.Group, path: Path) -> None:
        self.group = group
        self.path = Path(path)
        self._arrays: dict[str, StoreArray] = {}

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr == "group":
            raise AttributeError(attr)
        return getattr(self.group, attr)

    @property
    def attrs(self) -> Any:
        return self.group.attrs

    def __contains__(self, name: str) -> bool:
        return name in self.group

    def __getitem__(self, name: str) -> StoreArray:
        if name not in self._arrays:
            self._arrays[name] = StoreArray(self.group[name], store=self.path, name=name)
        return self._arrays[name]


_WARNED_UNCHECKED: set[str] = set()


def _existing_chunks(path: Path, name: str) -> set[str]:
    """Chunk keys (``c/0/3/0``) that have a file under ``<path>/<name>``."""
    root = path / name
    found = set()
    for base, _dirs, files in os.walk(root / "c"):
        rel = Path(base).relative_to(root)
        found.update(str(rel / f) for f in files if not _ZARR_TMP.search(f))
    return {k.replace(os.sep, "/") for k in found}


def _expected_chunks(group: StoreGroup) -> dict[str, list[tuple[int, ...]]]:
    """Per array, the chunks a complete store must hold as files.

    Every chunk of ``last``, ``labels``, ``n_tokens`` and ``lengths``; of ``tokens``, those
    that hold positions below each prompt's length (chunks wholly in the padding are never
    written and read as zeros).
    """
    out = {}
    for name in ("last", "labels", "n_tokens", "lengths"):
        arr = group[name]
        out[name] = list(itertools.product(*(range(-(-n // c)) for n, c in zip(arr.shape, arr.chunks))))
    tokens = group["tokens"]
    k, _, _, h = tokens.shape
    cpos, chid = tokens.chunks[2], tokens.chunks[3]
    out["tokens"] = [
        (s, p, c, j)
        for p, n in enumerate(np.asarray(group["lengths"][:], dtype=np.int64))
        for s in range(k)
        for c in range(-(-int(n) // cpos))
        for j in range(-(-h // chid))
    ]
    return out


def _check_chunks(group: StoreGroup, path: Path) -> None:
    """Checksums present (else warn once) and no chunk file missing (else StoreError)."""
    unchecked = [name for name in DIMS if not _has_checksum(group[name].array)]
    if unchecked:
        if str(path) not in _WARNED_UNCHECKED:
            _WARNED_UNCHECKED.add(str(path))
            msg = (
                f"{path}: arrays {unchecked} carry no chunk checksums (written by an older reprflow), "
                "so a damaged chunk could be read without an error. Reading it anyway; to get checksums, "
                f"{rebuild_hint(path)}"
            )
            logger.warning("%s", msg)
            warnings.warn(msg, StoreWarning, stacklevel=3)
        return
    for name, coords in _expected_chunks(group).items():
        arr = group[name]
        have = _existing_chunks(path, name)
        missing = [c for c in coords if arr.array.metadata.encode_chunk_key(c) not in have]
        if missing:
            shown = ", ".join(str(arr.chunk_file(c).relative_to(path)) for c in missing[:3])
            raise StoreError(
                f"{path}: array '{name}' lacks {len(missing)} of its {len(coords)} chunk files "
                f"({shown}{', ...' if len(missing) > 3 else ''}); they would read as zeros. "
                f"The store is damaged; {rebuild_hint(path)}"
            )


def open_store(path: str | os.PathLike) -> StoreGroup:
    """Open a complete activation store read-only, checking the contract and its chunk files.

    Parameters
    ----------
    path : path-like
        Store path (``.../{task}_n{length}.zarr``).

    Returns
    -------
    StoreGroup
        With arrays (:class:`StoreArray`) ``last`` [n_states, n_samples, hidden],
        ``labels`` [n_samples], ``n_tokens`` [n_samples], ``tokens`` [n_states, n_prompts,
        n_tokens, hidden], ``lengths`` [n_prompts]. Every read verifies the crc32c of each
        chunk it decodes; a damaged chunk raises :class:`StoreError` naming the store, the
        array and the chunk.

    Raises
    ------
    StoreError
        If the store is missing, not complete, its attrs/shapes break the contract, or a
        chunk file that a complete store must hold is missing.

    Warns
    -----
    StoreWarning
        Once per store and process, if it was written without chunk checksums (an older
        reprflow): it is read, but damage cannot be detected.
    """
    path = Path(path)
    if not path.exists():
        hint = " (a killed run left a .partial store; rerun to resume)" if partial_path(path).exists() else ""
        raise StoreError(f"{path}: store not found{hint}; run the extraction for it")
    if not looks_like_store(path):  # a prompt file, a model folder, an empty folder: never "delete it"
        raise StoreError(not_a_store(path))
    try:
        group = StoreGroup(zarr.open_group(path, mode="r"), path)
    except (OSError, ValueError, KeyError, TypeError, zarr.errors.BaseZarrError) as exc:
        raise StoreError(f"{path}: not a readable Zarr group ({exc}); {rebuild_hint(path)}") from exc
    attrs = group.attrs
    if not path.name.endswith(".zarr") and not {"complete", "writer", "reprflow_version"} & set(attrs):
        raise StoreError(not_a_store(path))  # a Zarr group, but not one reprflow wrote
    if "complete" not in attrs:
        raise StoreError(f"{path}: attr 'complete' missing (killed run?); delete it or rerun")
    if attrs["complete"] is not True:
        raise StoreError(f"{path}: attr 'complete' is {attrs['complete']!r} (killed run?); delete it or rerun")
    missing = [k for k in CONTRACT_ATTRS if k not in attrs]
    if missing:
        raise StoreError(f"{path}: attrs {missing} missing; the store predates the contract, delete it and rerun")
    for name, dims in DIMS.items():
        if name not in group:
            raise StoreError(f"{path}: array '{name}' missing; delete it and rerun")
        found = tuple(group[name].metadata.dimension_names or ())
        if found != dims:
            raise StoreError(f"{path}: array '{name}' has dims {found}, expected {dims}")
    k = len(attrs["state_names"])
    n = group["labels"].shape[0]
    p = len(attrs["token_prompt_ids"])
    last, tokens = group["last"].shape, group["tokens"].shape
    problems = []
    if last[:2] != (k, n):
        problems.append(f"last {last} vs K={k} states, {n} labels")
    if group["n_tokens"].shape != (n,):
        problems.append(f"n_tokens {group['n_tokens'].shape} vs {n} labels")
    if tokens[:2] != (k, p) or tokens[3] != last[2]:
        problems.append(f"tokens {tokens} vs K={k}, {p} token prompts, hidden {last[2]}")
    if group["lengths"].shape != (p,):
        problems.append(f"lengths {group['lengths'].shape} vs {p} token prompts")
    if problems:
        raise StoreError(f"{path}: inconsistent shapes: {'; '.join(problems)}; delete it and rerun")
    _check_chunks(group, path)
    return group


class ConcatArray:
    """Read-only lazy concatenation of array-likes along one axis (no data copied until read).

    Supports ``shape``, ``dtype``, ``ndim``, ``len`` and orthogonal indexing with ints,
    slices (positive step), 1-D integer arrays and ``...``; reading returns an ndarray.

    Parameters
    ----------
    parts : sequence of zarr.Array or ndarray
        Equal shapes except along ``axis``.
    axis : int
        The concatenation axis.
    """

    def __init__(self, parts: Sequence[Any], *, axis: int) -> None:
        self.parts = list(parts)
        self.axis = axis
        shapes = [tuple(p.shape) for p in self.parts]
        rest = {s[:axis] + s[axis + 1 :] for s in shapes}
        if len(rest) != 1:
            raise StoreError(f"cannot concatenate shapes {shapes} along axis {axis}")
        sizes = [s[axis] for s in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        shape = list(shapes[0])
        shape[axis] = int(self.offsets[-1])
        self.shape = tuple(shape)
        self.dtype = np.result_type(*[p.dtype for p in self.parts])
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for shape {self.shape}")
        n = self.shape[self.axis]
        sel = key[self.axis]
        if isinstance(sel, slice):
            idx = np.arange(n)[sel]
        else:
            idx = np.asarray(sel, dtype=np.int64)
            if idx.ndim > 1:
                raise IndexError("only 1-D index arrays are supported")
            if ((idx < -n) | (idx >= n)).any():
                raise IndexError(f"index out of range for axis {self.axis} of size {n}")
            idx = np.where(idx < 0, idx + n, idx)
        scalar = idx.ndim == 0
        idx = np.atleast_1d(idx)
        out_axis = self.axis - sum(isinstance(k, (int, np.integer)) for k in key[: self.axis])
        owner = np.searchsorted(self.offsets, idx, side="right") - 1
        shape = [
            idx.size if axis == self.axis else _selected_length(k, d)
            for axis, (k, d) in enumerate(zip(key, self.shape))
            if axis == self.axis or not isinstance(k, (int, np.integer))
        ]
        out = np.zeros(shape, dtype=self.dtype)
        for s in np.unique(owner):  # each part's rows straight into their places in ``out``
            rows = np.flatnonzero(owner == s)
            local = key[: self.axis] + (idx[rows] - self.offsets[s],) + key[self.axis + 1 :]
            part = self.parts[s]  # (no name keeps a piece alive while the next one is read)
            out[(slice(None),) * out_axis + (rows,)] = (
                part.oindex[local] if hasattr(part, "oindex") else _np_oindex(part, local)
            )
        return np.take(out, 0, axis=out_axis) if scalar else out


def _selected_length(key: Any, size: int) -> int:
    """Length that ``key`` (a slice or a 1-D index array) selects from an axis of ``size``."""
    return len(range(*key.indices(size))) if isinstance(key, slice) else len(np.atleast_1d(key))


def _np_oindex(arr: np.ndarray, key: tuple) -> np.ndarray:
    """Orthogonal indexing of an ndarray (each axis indexed independently)."""
    out = arr
    axis = 0
    for k in key:
        if isinstance(k, (int, np.integer)):
            out = np.take(out, k, axis=axis)
        else:
            out = out[(slice(None),) * axis + (k,)]
            axis += 1
    return out


class ShardedStore:
    """Shard stores of one prompt set presented as one logical store (lazy, read-only).

    ``store["last"]`` and ``store["tokens"]`` are ``ConcatArray`` views over the shards
    (concatenated along n_samples / n_prompts); ``labels``, ``n_tokens`` and ``lengths``
    are small and concatenated eagerly. ``attrs`` are those of the first shard with
    ``token_prompt_ids`` merged, ``shard`` covering the whole set, ``store_dtype`` the
    common on-disk dtype, and ``shards`` listing the shard paths.
    """

    def __init__(self, groups: Sequence[StoreGroup], paths: Sequence[Path]) -> None:
        self.groups = list(groups)
        self.paths = list(paths)
        first = dict(self.groups[0].attrs)
        arrays = {
            "last": ConcatArray([g["last"] for g in self.groups], axis=1),
            "tokens": ConcatArray([g["tokens"] for g in self.groups], axis=1),
        }
        for name in ("labels", "n_tokens", "lengths"):
            arrays[name] = np.concatenate([g[name][:] for g in self.groups])
        self.arrays = arrays
        first.update(
            {
                "token_prompt_ids": [i for g in self.groups for i in g.attrs["token_prompt_ids"]],
                "shard": {
                    "sample_start": 0,
                    "sample_stop": _shard_of(self.groups[0])["n_samples_total"],
                    "n_samples_total": _shard_of(self.groups[0])["n_samples_total"],
                },
                "store_dtype": str(arrays["last"].dtype),
                "shards": [str(p) for p in self.paths],
            }
        )
        first.pop("writer", None)
        first.pop("timing", None)
        first.pop("dtype_check", None)
        self.attrs = first

    def __getitem__(self, name: str) -> Any:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays


def _shard_of(group: StoreGroup) -> dict[str, int]:
    """The ``shard`` attr; a store without one holds the whole prompt set."""
    if "shard" in group.attrs:
        return dict(group.attrs["shard"])
    n = group["labels"].shape[0]
    return {"sample_start": 0, "sample_stop": n, "n_samples_total": n}


_SHARD_SPECIFIC = {"writer", "timing", "store_dtype", "dtype_check", "token_prompt_ids", "shard"}


def open_sharded(paths: Sequence[str | os.PathLike]) -> ShardedStore:
    """Open the shard stores of one prompt set as one logical store.

    Parameters
    ----------
    paths : sequence of path-like
        Complete shard stores (any order); together they must cover samples
        ``[0, n_samples_total)`` exactly once. A single unsharded store is accepted.

    Returns
    -------
    ShardedStore
        Lazy view with ``last`` [n_states, n_samples, hidden], ``tokens``
        [n_states, n_prompts, n_tokens, hidden], ``labels``, ``n_tokens``, ``lengths``.

    Raises
    ------
    StoreError
        If a shard is incomplete, shards disagree on their attrs (model, prompts, ...),
        or they leave a gap or overlap.
    """
    if not paths:
        raise StoreError("open_sharded: no shard paths given")
    opened = [(Path(p), open_store(p)) for p in paths]
    opened.sort(key=lambda pg: _shard_of(pg[1])["sample_start"])
    ref_path, ref = opened[0]
    ref_common = {k: v for k, v in ref.attrs.items() if k not in _SHARD_SPECIFIC}
    expect_start = 0
    total = _shard_of(ref)["n_samples_total"]
    for p, g in opened:
        common = {k: v for k, v in g.attrs.items() if k not in _SHARD_SPECIFIC}
        if common != ref_common:
            diff = sorted(k for k in set(common) | set(ref_common) if common.get(k) != ref_common.get(k))
            raise StoreError(f"{p}: attrs {diff} differ from shard {ref_path}; shards of different runs")
        sh = _shard_of(g)
        if sh["n_samples_total"] != total or sh["sample_start"] != expect_start:
            raise StoreError(
                f"{p}: covers samples [{sh['sample_start']}, {sh['sample_stop']}) of {sh['n_samples_total']}, "
                f"expected to start at {expect_start} of {total}; a shard is missing or duplicated"
            )
        if g["tokens"].shape[2] != ref["tokens"].shape[2]:
            raise StoreError(f"{p}: tokens max_len {g['tokens'].shape[2]} != {ref['tokens'].shape[2]} of {ref_path}")
        expect_start = sh["sample_stop"]
    if expect_start != total:
        raise StoreError(
            f"shards {[str(p) for p, _ in opened]} cover samples [0, {expect_start}) of {total}; a shard is missing"
        )
    return ShardedStore([g for _, g in opened], [p for p, _ in opened])


def store_provenance(store_path: str | os.PathLike | Sequence[str | os.PathLike], attrs: Mapping[str, Any]) -> dict:
    """Where a metric file's numbers come from: the store(s), prompt hash, versions and cell.

    Metric stages put this dict under ``"provenance"`` in their JSON outputs.
    """
    paths = str(store_path) if isinstance(store_path, (str, os.PathLike)) else [str(p) for p in store_path]
    if isinstance(paths, list) and len(paths) == 1:
        paths = paths[0]
    return {
        "store": paths,
        "prompt_sha256": attrs["prompt_sha256"],
        "reprflow_version": __version__,
        "store_reprflow_version": attrs.get("reprflow_version"),
        "model": attrs.get("model"),
        "init": attrs.get("init"),
        "task": attrs.get("task"),
        "length": attrs.get("length"),
    }


def open_activations(store_path: str | os.PathLike | Sequence[str | os.PathLike]) -> Any:
    """One complete store (a path) or the shards of one prompt set (a list of paths), read as one.

    Returns a :class:`StoreGroup` (:func:`open_store`) or a :class:`ShardedStore` (:func:`open_sharded`);
    both offer ``attrs`` and the contract's arrays by name.
    """
    if isinstance(store_path, (str, os.PathLike)):
        return open_store(store_path)
    paths = list(store_path)
    return open_store(paths[0]) if len(paths) == 1 else open_sharded(paths)
