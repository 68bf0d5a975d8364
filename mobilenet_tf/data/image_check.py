"""Check every file of a folder dataset by decoding it, before training starts.

A folder dataset decodes its files inside ``tf.data``; one truncated JPEG, a text
file named ``.jpg`` or a zero-byte file there stops training partway through with
a TensorFlow error that names no file. ``check_files`` decodes every file up
front, the way training will (``tf.io.decode_image(..., channels=3,
expand_animations=False)``, or PIL for label PNGs), in a thread pool with a
progress bar on large folders, and returns the readable files and a
``CheckReport`` of the others with their reason. Verdicts are cached per file,
keyed by (absolute path, size, mtime), in JSON files under
``$MOBILENET_TF_IMAGE_CHECK_CACHE`` (default ``$XDG_CACHE_HOME`` or
``~/.cache``, then ``mobilenet_tf/image_check/``), one per folder, so a rerun
decodes only new or changed files.

Recipes skip what the check rejects and list it in the run directory
(``write_skipped``: ``skipped_files.txt``, one ``path<TAB>reason`` line per file,
and a one-line summary), or with ``--strict-data`` stop before training
(``raise_if_strict``: a ``ValueError`` naming the first bad file).

Example::

    good, report = check_files(paths)
    report.raise_if_strict(strict)           # ValueError with --strict-data
    ...                                       # (recipe) open the run directory
    print(write_skipped(report, run.root))   # "image check: 3 of 120 files unreadable, skipped; ..."
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time

CACHE_ENV = "MOBILENET_TF_IMAGE_CHECK_CACHE"
CACHE_VERSION = 1
SKIPPED_FILE = "skipped_files.txt"
PROGRESS_MIN_FILES = 1000  # a progress bar when at least this many files need decoding
SAVE_EVERY_SECONDS = 60  # a long check saves its verdicts as it goes (an interrupted one keeps them)


# ---------------------------------------------------------------- readers


def _read_bytes(path):
    """The file's bytes; ``_Unreadable`` when it is empty."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise _Unreadable("empty file (0 bytes)")
    return data


def _decode_tf(path):
    import tensorflow as tf

    data = _read_bytes(path)
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as error:  # InvalidArgument, Unimplemented, DataLoss, ... on bad files
        raise _Unreadable(_tf_message(error)) from None


def _decode_pil(path):
    from PIL import Image

    data = _read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
        raise _Unreadable(f"{type(error).__name__}: {error}") from None


# "tf": what tf.data pipelines decode images with; "pil": what reads LR-ASPP label PNGs.
READERS = {"tf": _decode_tf, "pil": _decode_pil}


class _Unreadable(Exception):
    """A file that does not decode; its message is the reason."""


def _tf_message(error):
    """A TensorFlow error's message without its ``{{function_node ...}}`` prefix and
    ``[Op:...]`` suffix: "jpeg::Uncompress failed. Invalid JPEG data or crop window."."""
    message = re.sub(r"^\{\{[^}]*\}\}\s*", "", error.message)
    return re.sub(r"\s*\[Op:\w+\]\s*$", "", message).strip()


def decode(path, reader="tf"):
    """Decode ``path`` with ``reader``; the reason it is unreadable, or None when it decodes."""
    try:
        READERS[reader](path)
    except _Unreadable as error:
        return str(error)
    except OSError as error:
        return f"cannot read: {error.strerror or error}"
    return None


# ---------------------------------------------------------------- report


@dataclasses.dataclass
class CheckReport:
    """What a folder check found.

    Attributes:
        files: the set of checked paths (every file the dataset lists).
        unreadable: [(path, reason)] files that do not decode, in listing order.
        unpaired: [(path, reason)] files left out for another reason (an LR-ASPP
            image without its label PNG, a label without its image).
        decoded: files decoded by this check (the others' verdicts came from the cache).
    """

    files: set = dataclasses.field(default_factory=set, repr=False)
    unreadable: list = dataclasses.field(default_factory=list)
    unpaired: list = dataclasses.field(default_factory=list)
    decoded: int = 0

    @property
    def checked(self):
        """How many files were checked."""
        return len(self.files)

    @property
    def skipped(self):
        """Every left-out file as (path, reason): unreadable ones first."""
        return self.unreadable + self.unpaired

    def merge(self, other):
        """This report and ``other`` (None is ignored), files counted once."""
        if other is None or other is self:
            return self
        seen = {path for path, _ in self.skipped}
        return CheckReport(
            files=self.files | other.files,
            unreadable=self.unreadable + [entry for entry in other.unreadable if entry[0] not in seen],
            unpaired=self.unpaired + [entry for entry in other.unpaired if entry[0] not in seen],
            decoded=self.decoded + other.decoded)

    def raise_if_strict(self, strict):
        """With ``strict`` (``--strict-data``): ``ValueError`` naming the first skipped file."""
        if strict and self.skipped:
            path, reason = self.skipped[0]
            more = len(self.skipped) - 1
            raise ValueError(
                f"--strict-data: {path}: {reason.rstrip('.')}"
                + (f"; {more} more file{'s' * (more != 1)} would be skipped" if more else "")
                + ". Fix or remove the file, or run without --strict-data to skip such files and list them in "
                  f"the run directory's {SKIPPED_FILE}.")

    def summary(self, listing=None):
        """One line: "image check: 3 of 120 files unreadable, skipped; listed in RUN/skipped_files.txt"."""
        if not self.skipped:
            return f"image check: {self.checked} file{'s' * (self.checked != 1)}, all readable"
        parts = []
        if self.unreadable or not self.unpaired:
            parts.append(f"{len(self.unreadable)} of {self.checked} files unreadable")
        for reason in sorted({_kind(reason) for _, reason in self.unpaired}):
            count = sum(1 for _, r in self.unpaired if _kind(r) == reason)
            parts.append(f"{count} {reason if count == 1 else _plural(reason)}")
        return (f"image check: {', '.join(parts)}, skipped"
                + (f"; listed in {listing}" if listing else ""))


def _kind(reason):
    """The counted kind of an unpaired entry: "image without a label" from
    "image without a label: no ... in ..."."""
    return reason.split(":", 1)[0]


def _plural(kind):
    first, _, rest = kind.partition(" ")
    return f"{first}s {rest}"


def merged(reports):
    """One report of several (Nones ignored; files counted once), None when all are None."""
    result = None
    for report in reports:
        if report is not None:
            result = report if result is None else result.merge(report)
    return result


def write_skipped(report, run_dir):
    """Write ``run_dir/skipped_files.txt`` (``path<TAB>reason`` per skipped file; a
    stale one is removed when nothing was skipped) and return the summary line."""
    path = os.path.join(run_dir, SKIPPED_FILE)
    if report is None:
        return None
    if not report.skipped:
        if os.path.exists(path):
            os.remove(path)
        return report.summary()
    with open(path, "w") as f:
        for file, reason in report.skipped:
            f.write(f"{file}\t{reason}\n")
    return report.summary(path)


# ---------------------------------------------------------------- check


def default_cache_dir():
    """``$MOBILENET_TF_IMAGE_CHECK_CACHE``, else ``$XDG_CACHE_HOME`` (or ~/.cache)/mobilenet_tf/image_check."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mobilenet_tf", "image_check")


def check_files(paths, reader="tf", cache_dir=None, workers=None, progress=None):
    """Decode every file in ``paths`` (in parallel); the readable ones and a report.

    Args:
        paths: file paths, in the dataset's order.
        reader: "tf" (``tf.io.decode_image(..., channels=3, expand_animations=False)``,
            what the pipelines decode with) or "pil" (PIL's full load, for label PNGs).
        cache_dir: where verdicts are cached (default ``default_cache_dir()``);
            False: no cache.
        workers: decoding threads (default: 2 per CPU, at most 32).
        progress: show a progress bar on stderr (tqdm when installed); default:
            when at least ``PROGRESS_MIN_FILES`` files need decoding.

    Returns:
        (good paths in order, ``CheckReport``).
    """
    if reader not in READERS:
        raise ValueError(f"`reader` must be one of {sorted(READERS)}; got {reader!r}.")
    paths = list(paths)
    cache = _Cache(default_cache_dir() if cache_dir is None else cache_dir, reader)
    verdicts, todo = {}, []
    for path in paths:
        key = os.path.abspath(path)
        stat = _stat(key)
        if stat is None:
            verdicts[path] = "cannot read: the file disappeared or is not accessible"
            continue
        found = cache.get(key, stat)
        if found is _MISSING:
            todo.append((path, key, stat))
        else:
            verdicts[path] = found
    if todo:
        workers = workers or min(32, 2 * (os.cpu_count() or 1))
        show = len(todo) >= PROGRESS_MIN_FILES if progress is None else progress
        bar = _Progress(len(todo), f"image check ({len(paths)} files)") if show else None
        saved = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(decode, key, reader): (path, key, stat) for path, key, stat in todo}
            for future in concurrent.futures.as_completed(futures):
                path, key, stat = futures[future]
                verdicts[path] = future.result()
                cache.put(key, stat, verdicts[path])
                if bar:
                    bar.update()
                if time.monotonic() - saved > SAVE_EVERY_SECONDS:
                    cache.save()
                    saved = time.monotonic()
        if bar:
            bar.close()
        cache.save()
    good = [path for path in paths if verdicts[path] is None]
    bad = [(path, verdicts[path]) for path in paths if verdicts[path] is not None]
    return good, CheckReport(files=set(paths), unreadable=bad, decoded=len(todo))


def _stat(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


_MISSING = object()


class _Cache:
    """Verdicts of one reader, one JSON file per folder: ``{"version", "reader",
    "folder", "files": {name: [size, mtime_ns, reason or null]}}``. Unreadable or
    unwritable cache files are ignored (the check then decodes again)."""

    def __init__(self, root, reader):
        self.root, self.reader = root, reader
        self.folders, self.dirty = {}, set()

    def _file(self, folder):
        digest = hashlib.sha1(f"{self.reader}:{folder}".encode()).hexdigest()[:20]
        return os.path.join(self.root, f"{digest}.json")

    def _folder(self, folder):
        if folder not in self.folders:
            entries = {}
            if self.root:
                try:
                    with open(self._file(folder)) as f:
                        stored = json.load(f)
                    if (stored.get("version") == self._version() and stored.get("reader") == self.reader
                            and stored.get("folder") == folder):
                        entries = stored["files"]
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    entries = {}
            self.folders[folder] = entries
        return self.folders[folder]

    def _version(self):
        if self.reader == "tf":
            import tensorflow as tf
            return f"{CACHE_VERSION}/tf-{tf.__version__}"
        import PIL
        return f"{CACHE_VERSION}/pillow-{PIL.__version__}"

    def get(self, path, stat):
        folder, name = os.path.split(path)
        entry = self._folder(folder).get(name)
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == stat:
            return entry[2]
        return _MISSING

    def put(self, path, stat, verdict):
        if verdict is not None and verdict.startswith("cannot read"):
            return  # permissions or I/O: may change without a new size or mtime
        folder, name = os.path.split(path)
        self._folder(folder)[name] = [*stat, verdict]
        self.dirty.add(folder)

    def save(self):
        if not self.root:
            return
        try:
            os.makedirs(self.root, exist_ok=True)
            for folder in self.dirty:
                stored = {"version": self._version(), "reader": self.reader, "folder": folder,
                          "files": self.folders[folder]}
                handle, temp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
                try:
                    with os.fdopen(handle, "w") as f:
                        json.dump(stored, f)
                    os.replace(temp, self._file(folder))  # atomic: a concurrent reader sees old or new
                finally:
                    if os.path.exists(temp):
                        os.remove(temp)
        except OSError as error:
            print(f"image check: cannot write the cache in {self.root} ({error.strerror or error}); the next run "
                  f"decodes again (set {CACHE_ENV} to a writable folder)", file=sys.stderr)
        self.dirty.clear()


class _Progress:
    """tqdm on stderr when installed, else a line every 10%."""

    def __init__(self, total, description):
        self.total, self.description, self.done, self.next_report = total, description, 0, 0.1
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=description, unit="file", file=sys.stderr, mininterval=1.0)
        except ImportError:
            self.bar = None

    def update(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        elif self.done >= self.next_report * self.total or self.done == self.total:
            print(f"{self.description}: {self.done}/{self.total} decoded", file=sys.stderr, flush=True)
            self.next_report = self.done / self.total + 0.1

    def close(self):
        if self.bar is not None:
            self.bar.close()
