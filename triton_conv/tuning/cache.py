"""Tuned configs that persist: one JSON file per GPU and Triton version, shared by processes.

The file lives in ``$TRITON_CONV_CACHE_DIR`` (default ``~/.cache/triton-conv``) and is named
after the device and the Triton version, since a winner on one GPU or compiler need not win on
another. Writers hold an exclusive ``flock`` on a lock file beside it, merge their entries into
what is on disk at that moment, and replace the file atomically (temporary file in the same
folder, then ``os.replace``), so concurrent tuners keep each other's entries and a writer killed
mid-write leaves the previous file intact. A file that does not parse, has another schema, or
names another device or Triton version is ignored with one warning and rewritten on the next save.

Tuned configs may also ship inside the package (``shipped/<device>.json``, same format) and are
used when the device name matches; none ship yet, as no GPU measurement has been made.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import triton

from .configs import KernelConfig

# 2: the plane kernel's tiles became images x channels per program (were images x planes).
SCHEMA = 2
CACHE_DIR_ENV = "TRITON_CONV_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/triton-conv"
SHIPPED_DIR = Path(__file__).parent / "shipped"


@dataclass(frozen=True)
class TunedEntry:
    """A winning config, its time in milliseconds, and how it was searched (``first_use``/``exhaustive``)."""

    config: KernelConfig
    ms: float
    mode: str

    def to_json(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "ms": self.ms, "mode": self.mode}

    @staticmethod
    def from_json(data: Any) -> TunedEntry:
        """Raises ``TypeError``/``KeyError``/``ValueError`` for anything but what ``to_json`` writes."""
        fields = data["config"]
        if not isinstance(fields, dict) or not all(type(v) is int and v > 0 for v in fields.values()):
            raise ValueError(f"config fields must be positive ints, got {fields!r}")
        return TunedEntry(KernelConfig(**fields), float(data["ms"]), str(data["mode"]))


class CacheFormatError(ValueError):
    """A cache file that is not ours to read: bad JSON, another schema, device or Triton version."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _slug(name: str) -> str:
    """A device name as a file name: ``NVIDIA H100 80GB HBM3`` -> ``NVIDIA_H100_80GB_HBM3``."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_") or "unknown"


def parse_cache(text: str, device: str, triton_version: str | None) -> dict[str, TunedEntry]:
    """The entries of a cache file's ``text``; ``triton_version`` None accepts any version."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise CacheFormatError(f"not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise CacheFormatError(f"not a schema-{SCHEMA} tuning cache")
    if data.get("device") != device:
        raise CacheFormatError(f"written for device {data.get('device')!r}, not {device!r}")
    if triton_version is not None and data.get("triton") != triton_version:
        raise CacheFormatError(f"written for Triton {data.get('triton')!r}, not {triton_version!r}")
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise CacheFormatError("no 'entries' object")
    try:
        return {str(key): TunedEntry.from_json(value) for key, value in entries.items()}
    except (TypeError, KeyError, ValueError) as error:
        raise CacheFormatError(f"malformed entry ({error!r})") from None


def shipped_entries(device: str) -> dict[str, TunedEntry]:
    """The configs shipped in the package for ``device`` (any Triton version); empty when none ship."""
    path = SHIPPED_DIR / f"{_slug(device)}.json"
    if not path.is_file():
        return {}
    return parse_cache(path.read_text(), device, None)


class ConfigCache:
    """The tuned entries of one device: the shipped ones, then the on-disk ones, in memory."""

    def __init__(self, device: str, triton_version: str = triton.__version__, folder: Path | None = None) -> None:
        self.device = device
        self.triton_version = triton_version
        self.path = (folder or cache_dir()) / f"{_slug(device)}-triton{triton_version}.json"
        self._entries: dict[str, TunedEntry] | None = None
        self._warned = False
        # Threads of one process share the entries; the flock below orders processes (and threads,
        # which open the lock file separately), this orders the in-memory reads and writes.
        self._lock = threading.RLock()

    def _read_disk(self, warn: bool) -> dict[str, TunedEntry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as error:
            reason = repr(error)
        else:
            try:
                return parse_cache(text, self.device, self.triton_version)
            except CacheFormatError as error:
                reason = str(error)
        if warn and not self._warned:
            self._warned = True
            warnings.warn(
                f"ignoring the tuning cache {self.path}: {reason}; it will be rewritten on the next save",
                stacklevel=3,
            )
        return {}

    def entries(self) -> dict[str, TunedEntry]:
        """Every entry, read from the package and the disk once, then kept in memory."""
        with self._lock:
            if self._entries is None:
                self._entries = {**shipped_entries(self.device), **self._read_disk(warn=True)}
            return self._entries

    def get(self, key: str) -> TunedEntry | None:
        with self._lock:
            return self.entries().get(key)

    def put(self, key: str, entry: TunedEntry) -> None:
        """Remember ``entry`` in memory and merge it into the file on disk."""
        with self._lock:
            self.entries()[key] = entry
            self.save({key: entry})

    def save(self, new: dict[str, TunedEntry]) -> None:
        """Merge ``new`` into the file under the lock and replace it atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            merged = {**self._read_disk(warn=False), **new}
            document = {
                "schema": SCHEMA,
                "device": self.device,
                "triton": self.triton_version,
                "entries": {key: merged[key].to_json() for key in sorted(merged)},
            }
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "w") as out:
                    json.dump(document, out, indent=1)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                os.unlink(temporary)
                raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A separate lock file: the cache file itself is replaced, so a lock on it would not hold.
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


_caches: dict[tuple[str, Path], ConfigCache] = {}
_caches_lock = threading.Lock()


def cache_for(device: str) -> ConfigCache:
    """The process-wide cache of ``device`` in the current cache folder (re-read if the folder changes)."""
    folder = cache_dir()
    with _caches_lock:
        cache = _caches.get((device, folder))
        if cache is None:
            cache = _caches[(device, folder)] = ConfigCache(device, folder=folder)
        return cache
