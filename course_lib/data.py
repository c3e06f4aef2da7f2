"""The course's data files: defined in chapter 3 (data), extended in chapter 4 (GPT-2's tokenizer files).

There is ONE way to get a data file in this course::

    from course_lib.data import data_path, read_text
    path = data_path("tinyshakespeare.txt")   # a pathlib.Path to a verified local copy
    text = read_text("tinyshakespeare.txt")    # the same file, decoded as UTF-8

Where :func:`data_path` looks, in this order:

1. ``$COURSE_DATA_DIR`` -- if this environment variable is set, it is the ONLY folder searched
   (and a missing file is downloaded into it). Use it for a copy you made yourself, a class
   server's read-only folder, or an offline machine.
2. Otherwise the per-user cache folder ``$XDG_CACHE_HOME/llm-from-scratch-course/data``
   (``~/.cache/llm-from-scratch-course/data`` when ``XDG_CACHE_HOME`` is not set). A missing file
   is downloaded into it on first use.

Every file the course uses is listed in :data:`REGISTRY` with its canonical public URL, its
size and its SHA-256. A file found on disk is checked against that SHA-256 (the result is
remembered per path, modification time and size, so calling :func:`data_path` in a loop is cheap);
a file that does not match raises :class:`DataChecksumError`. A file that is nowhere on disk is
downloaded, checked, and only then moved into place (write to a temporary file in the same folder,
then an atomic rename), so a failed or corrupt download never leaves a half-written file behind.
Without a network, :class:`DataFileNotFoundError` (a :class:`FileNotFoundError`) says which file
is missing, where it was looked for, and how to provide it.

:func:`prime_tiktoken_cache` copies GPT-2's ``encoder.json`` and ``vocab.bpe`` where ``tiktoken``
looks for them, so that ``tiktoken.get_encoding("gpt2")`` works offline.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NamedTuple

__all__ = [
    "ENV_VAR",
    "REGISTRY",
    "DataChecksumError",
    "DataFileNotFoundError",
    "Source",
    "data_dirs",
    "data_path",
    "fetch",
    "prime_tiktoken_cache",
    "read_bytes",
    "read_json",
    "read_text",
    "user_cache_dir",
]

#: The environment variable that, when set, names the one folder to take data files from.
ENV_VAR = "COURSE_DATA_DIR"


class Source(NamedTuple):
    """Where a data file comes from and what it must be.

    ``member`` is set when the URL is a zip archive: the file is that member of the archive.
    """

    url: str
    sha256: str
    size: int
    member: str | None = None


_GH = "https://raw.githubusercontent.com"
_GPT2 = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"

#: name -> (url, sha256, size[, zip member]): the public original of each file and its checksum.
REGISTRY: dict[str, Source] = {
    "tinyshakespeare.txt": Source(
        f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        1_115_394,
    ),
    "names.txt": Source(
        f"{_GH}/karpathy/makemore/master/names.txt",
        "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
        228_145,
    ),
    "the-verdict.txt": Source(
        f"{_GH}/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        20_479,
    ),
    # The UCI repository only serves a zip; the course's file is its member "SMSSpamCollection".
    "SMSSpamCollection.tsv": Source(
        "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
        "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
        477_907,
        member="SMSSpamCollection",
    ),
    "instruction-data.json": Source(
        f"{_GH}/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
        203_524,
    ),
    # The same URLs (and so the same checksums) as tiktoken's "gpt2" encoding.
    "gpt2/encoder.json": Source(
        f"{_GPT2}/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        1_042_301,
    ),
    "gpt2/vocab.bpe": Source(
        f"{_GPT2}/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        456_318,
    ),
}


class DataFileNotFoundError(FileNotFoundError):
    """A course data file is not on disk and could not be downloaded."""


class DataChecksumError(ValueError):
    """A course data file (on disk or just downloaded) does not have the expected SHA-256."""


# ---------------------------------------------------------------------------------------------
# Where to look
# ---------------------------------------------------------------------------------------------


def user_cache_dir() -> Path:
    """The per-user cache folder for course data: ``$XDG_CACHE_HOME/llm-from-scratch-course/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm-from-scratch-course" / "data"


def data_dirs() -> list[Path]:
    """The folders :func:`data_path` searches, in order. The last one receives downloads."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser()]
    return [user_cache_dir()]


def _check_name(name: str) -> None:
    """Names are relative POSIX paths inside the data folder, like ``"gpt2/vocab.bpe"``."""
    parts = PurePosixPath(name).parts
    if not name or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
        raise ValueError(f"not a data file name: {name!r} (expected e.g. 'tinyshakespeare.txt')")


# ---------------------------------------------------------------------------------------------
# Checking files
# ---------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# (path, mtime in ns, size, expected sha256) of files already found to be correct.
_verified: set[tuple[str, int, int, str]] = set()


def _verify(name: str, path: Path, source: Source) -> None:
    """Raise DataChecksumError unless the file at ``path`` has the registered SHA-256."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, source.sha256)
    if key in _verified:
        return
    actual = _sha256_file(path)
    if actual != source.sha256:
        raise DataChecksumError(
            f"data file {name!r} at {path} is corrupt or a different version:\n"
            f"  expected sha256 {source.sha256} ({source.size:,} bytes)\n"
            f"  actual   sha256 {actual} ({st.st_size:,} bytes)\n"
            f"Delete it (it is downloaded again when needed) or replace it with the file from "
            f"{source.url}"
        )
    _verified.add(key)


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------


def fetch(url: str, out: BinaryIO, timeout: float = 60.0) -> None:
    """Download ``url`` and write its bytes to the open binary file ``out``.

    This is the only function that touches the network (the tests replace it).
    """
    request = urllib.request.Request(url, headers={"User-Agent": "llm-from-scratch-course"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        expected = response.headers.get("Content-Length")
        received = 0
        for block in iter(lambda: response.read(1 << 16), b""):
            out.write(block)
            received += len(block)
    # http.client ends a chunked read quietly when the server hangs up early: count the bytes.
    if expected is not None and expected.isdigit() and received != int(expected):
        raise http.client.IncompleteRead(b"", int(expected) - received)


def _download(name: str, source: Source, dest: Path) -> None:
    """Download ``source`` to ``dest``: temp file in the same folder, check, atomic rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temps: list[str] = []

    def new_temp() -> tuple[int, str]:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        temps.append(tmp)
        return fd, tmp

    try:
        fd, tmp = new_temp()
        with os.fdopen(fd, "wb") as out:
            fetch(source.url, out)
        if source.member is not None:  # the download is a zip: take the member out of it
            fd, extracted = new_temp()
            with os.fdopen(fd, "wb") as out:
                try:
                    with zipfile.ZipFile(tmp) as archive, archive.open(source.member) as member:
                        shutil.copyfileobj(member, out)
                except (zipfile.BadZipFile, KeyError) as err:
                    raise DataChecksumError(
                        f"the download of {source.url} for {name!r} is not a zip archive "
                        f"containing {source.member!r}: {err}"
                    ) from err
            tmp = extracted
        actual = _sha256_file(Path(tmp))
        if actual != source.sha256:
            raise DataChecksumError(
                f"the download of {name!r} from {source.url} has the wrong checksum:\n"
                f"  expected sha256 {source.sha256} ({source.size:,} bytes)\n"
                f"  actual   sha256 {actual} ({os.path.getsize(tmp):,} bytes)\n"
                f"The file was not saved. The upstream file may have changed."
            )
        os.chmod(tmp, 0o644)  # mkstemp makes files private; data files are for everyone to read
        os.replace(tmp, dest)  # atomic: dest is either absent or complete
        temps.remove(tmp)
    finally:
        for leftover in temps:
            try:
                os.unlink(leftover)
            except OSError:
                pass


def _not_found_message(name: str, dirs: list[Path], reason: str) -> str:
    source = REGISTRY.get(name)
    lines = [f"course data file {name!r} was not found. Searched, in order:"]
    lines += [f"  - {d}" for d in dirs]
    lines.append(reason)
    lines.append("To provide it, either")
    if source is not None:
        get = f"download {source.url}"
        if source.member is not None:
            get += f" (a zip archive) and extract its member {source.member!r}"
        lines.append(f"  - {get} and save it as {dirs[-1] / name}, or")
    lines.append(f"  - set the environment variable {ENV_VAR} to a folder that contains {name}.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The public API
# ---------------------------------------------------------------------------------------------


def data_path(name: str, *, download: bool = True) -> Path:
    """Return the path of the course data file ``name`` (e.g. ``"gpt2/vocab.bpe"``).

    Searches :func:`data_dirs` in order; checks the SHA-256 of registered files; downloads a
    registered file that is missing (unless ``download=False``). Raises
    :class:`DataFileNotFoundError` or :class:`DataChecksumError` with an explanation.
    """
    _check_name(name)
    source = REGISTRY.get(name)
    dirs = data_dirs()
    for folder in dirs:
        path = folder / name
        if path.is_file():
            if source is not None:
                _verify(name, path, source)
            return path

    if source is None:
        reason = f"{name!r} is not in course_lib.data.REGISTRY, so it cannot be downloaded."
        raise DataFileNotFoundError(_not_found_message(name, dirs, reason))
    if not download:
        raise DataFileNotFoundError(_not_found_message(name, dirs, "Downloading was turned off."))
    dest = dirs[-1] / name
    try:
        _download(name, source, dest)
    except (OSError, http.client.HTTPException) as err:  # no network, HTTP error, cut-off transfer
        reason = f"Downloading it from {source.url} failed: {type(err).__name__}: {err}"
        raise DataFileNotFoundError(_not_found_message(name, dirs, reason)) from err
    _verify(name, dest, source)
    return dest


def read_bytes(name: str) -> bytes:
    """The bytes of the course data file ``name``."""
    return data_path(name).read_bytes()


def read_text(name: str, encoding: str = "utf-8") -> str:
    """The text of the course data file ``name``, decoded exactly (line endings are kept as is)."""
    return read_bytes(name).decode(encoding)


def read_json(name: str) -> Any:
    """The course data file ``name`` parsed as JSON."""
    return json.loads(read_bytes(name))


def prime_tiktoken_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Make ``tiktoken.get_encoding("gpt2")`` work offline; return the cache folder used.

    tiktoken looks for each file it would download in ``$TIKTOKEN_CACHE_DIR``, under the sha1 hex
    digest of its URL, and accepts it if its sha256 is right. This copies the course's
    ``gpt2/encoder.json`` and ``gpt2/vocab.bpe`` there under those names.

    The folder is ``cache_dir`` if given (and ``TIKTOKEN_CACHE_DIR`` is set to it), else
    ``$TIKTOKEN_CACHE_DIR`` if set, else ``<user cache>/llm-from-scratch-course/tiktoken``
    (and ``TIKTOKEN_CACHE_DIR`` is set to it for this process).
    """
    if cache_dir is None:
        env = os.environ.get("TIKTOKEN_CACHE_DIR")
        if env == "":
            raise ValueError("TIKTOKEN_CACHE_DIR is set to '', which turns tiktoken's cache off")
        cache_dir = env or user_cache_dir().parent / "tiktoken"
    folder = Path(cache_dir).expanduser().resolve()
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    folder.mkdir(parents=True, exist_ok=True)

    for name in ("gpt2/encoder.json", "gpt2/vocab.bpe"):
        source = REGISTRY[name]
        target = folder / hashlib.sha1(source.url.encode()).hexdigest()
        if target.is_file() and _sha256_file(target) == source.sha256:
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out, open(data_path(name), "rb") as src:
                shutil.copyfileobj(src, out)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib.data``: fetch (or verify) every course data file now, e.g. before going offline."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_lib.data", description=main.__doc__)
    parser.add_argument("names", nargs="*", help="files to get (default: every file in the registry)")
    args = parser.parse_args(argv)
    failed = 0
    for name in args.names or REGISTRY:
        try:
            print(f"ok       {name}: {data_path(name)}")
        except (DataFileNotFoundError, DataChecksumError, ValueError) as err:
            failed += 1
            print(f"MISSING  {name}\n{err}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
