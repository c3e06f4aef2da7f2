"""Unit tests for course_lib.data (chapters 3 and 4): finding, checking and downloading data files.

No test touches the network or the real per-user cache: an autouse fixture points the cache at a
temporary folder and replaces :func:`course_lib.data.fetch` with one that fails; the download
tests replace it again with fakes.
"""

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from course_lib import data
from course_lib.data import (
    REGISTRY,
    DataChecksumError,
    DataFileNotFoundError,
    data_dirs,
    data_path,
    prime_tiktoken_cache,
    read_bytes,
    read_json,
    read_text,
)

# The checkout layout: <repo root>/tests/test_data.py and <repo root>/../shared/data.
SHARED = (Path(__file__).resolve().parent.parent.parent / "shared" / "data").resolve()
VERDICT = "the-verdict.txt"


def shared_bytes(name: str) -> bytes:
    assert SHARED.is_dir(), f"the course data folder {SHARED} is missing (see shared/data/README.md)"
    return (SHARED / name).read_bytes()


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No COURSE_DATA_DIR, a private user cache, no network, a fresh verification cache."""
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))

    def no_network(url, out, timeout=60.0):
        raise OSError(f"network disabled in tests ({url})")

    monkeypatch.setattr(data, "fetch", no_network)
    monkeypatch.setattr(data, "_verified", set())


@pytest.fixture
def data_dir(monkeypatch, tmp_path):
    """An empty folder that COURSE_DATA_DIR points at."""
    folder = tmp_path / "course-data"
    folder.mkdir()
    monkeypatch.setenv("COURSE_DATA_DIR", str(folder))
    return folder


def fake_fetch(payload: bytes, fail_after: int | None = None, calls: list | None = None):
    """A stand-in for data.fetch that writes ``payload`` (and raises after ``fail_after`` bytes)."""

    def fetch(url, out, timeout=60.0):
        if calls is not None:
            calls.append(url)
        if fail_after is not None:
            out.write(payload[:fail_after])
            out.flush()
            raise ConnectionResetError("connection lost halfway")
        out.write(payload)

    return fetch


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- the registry and the real files ------------------------------------------------------------


def test_registry_matches_shared_sha256sums():
    sums = {}
    for line in (SHARED / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    assert sums == {name: src.sha256 for name, src in REGISTRY.items()}
    for name, src in REGISTRY.items():
        assert (SHARED / name).stat().st_size == src.size, name
        assert src.url.startswith("https://"), name


def test_default_search_finds_the_shared_folder_and_verifies_every_file():
    assert data_dirs()[0].resolve() == SHARED
    assert data_dirs()[-1] == data.user_cache_dir()
    for name in REGISTRY:
        assert data_path(name).resolve() == (SHARED / name).resolve()


def test_readers():
    assert read_bytes(VERDICT) == shared_bytes(VERDICT)
    assert read_text(VERDICT) == shared_bytes(VERDICT).decode("utf-8")
    names = read_text("names.txt").split()  # 32,033 names: the last line has no final newline
    assert len(names) == 32_033 and names[0] == "emma" and names[-1] == "zzyzx"
    examples = read_json("instruction-data.json")
    assert len(examples) == 1_100 and set(examples[0]) == {"instruction", "input", "output"}


def test_course_data_dir_is_used(data_dir):
    (data_dir / VERDICT).write_bytes(shared_bytes(VERDICT))
    assert data_dirs() == [data_dir]
    assert data_path(VERDICT) == data_dir / VERDICT
    assert read_text(VERDICT).startswith("I HAD always thought Jack Gisburn")


# --- missing and corrupt files --------------------------------------------------------------------


def test_missing_file_error_says_what_where_and_how(data_dir):
    # COURSE_DATA_DIR is the only folder searched: the copy in shared/data is not used.
    with pytest.raises(DataFileNotFoundError) as info:
        data_path(VERDICT)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for needed in (VERDICT, str(data_dir), "COURSE_DATA_DIR", REGISTRY[VERDICT].url, "network disabled"):
        assert needed in message
    assert files_in(data_dir) == []


def test_missing_file_default_folders(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "no-such-checkout")
    cache = data.user_cache_dir()
    assert data_dirs() == [cache]
    with pytest.raises(DataFileNotFoundError) as info:
        data_path("SMSSpamCollection.tsv")
    message = str(info.value)
    assert str(cache / "SMSSpamCollection.tsv") in message  # where to put it
    assert "extract its member 'SMSSpamCollection'" in message  # the UCI file is a zip
    assert "COURSE_DATA_DIR" in message


def test_download_false_does_not_fetch(data_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(data, "fetch", fake_fetch(shared_bytes(VERDICT), calls=calls))
    with pytest.raises(DataFileNotFoundError, match="turned off"):
        data_path(VERDICT, download=False)
    assert calls == []


def test_corrupt_file_names_file_and_both_checksums(data_dir):
    good = shared_bytes(VERDICT)
    bad = good[:100] + b"X" + good[101:]
    (data_dir / VERDICT).write_bytes(bad)
    with pytest.raises(DataChecksumError) as info:
        data_path(VERDICT)
    message = str(info.value)
    assert VERDICT in message
    assert REGISTRY[VERDICT].sha256 in message
    assert hashlib.sha256(bad).hexdigest() in message


def test_verification_is_cached_per_path_mtime_and_size(data_dir, monkeypatch):
    path = data_dir / VERDICT
    path.write_bytes(shared_bytes(VERDICT))
    hashed = []
    real = data._sha256_file
    monkeypatch.setattr(data, "_sha256_file", lambda p: hashed.append(p) or real(p))
    for _ in range(5):
        data_path(VERDICT)
    assert len(hashed) == 1
    with open(path, "ab") as f:  # the file changes: it is checked again, and fails
        f.write(b"!")
    with pytest.raises(DataChecksumError):
        data_path(VERDICT)
    assert len(hashed) == 2


def test_unregistered_names(data_dir):
    (data_dir / "my-notes.txt").write_text("anything")
    assert read_text("my-notes.txt") == "anything"  # found, not checked: nothing to check against
    with pytest.raises(DataFileNotFoundError, match="not in course_lib.data.REGISTRY"):
        data_path("no-such-file.txt")


@pytest.mark.parametrize("name", ["", "../secret.txt", "/etc/passwd", "gpt2/../../x", "a\\b"])
def test_bad_names_are_rejected(name):
    with pytest.raises(ValueError, match="not a data file name"):
        data_path(name)


# --- downloading (with fake fetch functions: no network) ------------------------------------------


def test_download_writes_a_verified_file(data_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(data, "fetch", fake_fetch(shared_bytes(VERDICT), calls=calls))
    path = data_path(VERDICT)
    assert path == data_dir / VERDICT
    assert path.read_bytes() == shared_bytes(VERDICT)
    assert calls == [REGISTRY[VERDICT].url]
    assert files_in(data_dir) == [VERDICT]  # no temporary file left
    data_path(VERDICT)  # now found on disk: no second download
    assert len(calls) == 1


def test_download_goes_to_the_user_cache_by_default(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "no-such-checkout")
    monkeypatch.setattr(data, "fetch", fake_fetch(shared_bytes("gpt2/vocab.bpe")))
    path = data_path("gpt2/vocab.bpe")  # a name with a sub-folder
    cache = data.user_cache_dir()
    assert path == cache / "gpt2" / "vocab.bpe"
    assert files_in(cache) == ["gpt2/vocab.bpe"]


def test_download_failing_midway_leaves_nothing(data_dir, monkeypatch):
    monkeypatch.setattr(data, "fetch", fake_fetch(shared_bytes(VERDICT), fail_after=5000))
    with pytest.raises(DataFileNotFoundError) as info:
        data_path(VERDICT)
    assert "connection lost halfway" in str(info.value)
    assert files_in(data_dir) == []


def test_download_with_wrong_bytes_is_rejected_and_leaves_nothing(data_dir, monkeypatch):
    monkeypatch.setattr(data, "fetch", fake_fetch(b"<html>404: Not Found</html>"))
    with pytest.raises(DataChecksumError) as info:
        data_path(VERDICT)
    assert REGISTRY[VERDICT].sha256 in str(info.value)
    assert hashlib.sha256(b"<html>404: Not Found</html>").hexdigest() in str(info.value)
    assert files_in(data_dir) == []


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_download_extracts_the_sms_spam_collection_from_its_zip(data_dir, monkeypatch):
    tsv = shared_bytes("SMSSpamCollection.tsv")
    monkeypatch.setattr(data, "fetch", fake_fetch(zip_of({"readme": b"about", "SMSSpamCollection": tsv})))
    path = data_path("SMSSpamCollection.tsv")
    assert path.read_bytes() == tsv
    assert files_in(data_dir) == ["SMSSpamCollection.tsv"]  # neither the zip nor the readme


@pytest.mark.parametrize("payload", [zip_of({"readme": b"about"}), b"not a zip at all"])
def test_download_of_a_bad_zip_leaves_nothing(data_dir, monkeypatch, payload):
    monkeypatch.setattr(data, "fetch", fake_fetch(payload))
    with pytest.raises(DataChecksumError, match="SMSSpamCollection"):
        data_path("SMSSpamCollection.tsv")
    assert files_in(data_dir) == []


# --- tiktoken's cache -----------------------------------------------------------------------------

# tiktoken_ext/openai_public.py downloads GPT-2's files from these URLs and caches each under the
# sha1 of its URL.
TIKTOKEN_URLS = {
    "gpt2/encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "gpt2/vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
}


def check_tiktoken_cache(folder: Path):
    for name, url in TIKTOKEN_URLS.items():
        cached = folder / hashlib.sha1(url.encode()).hexdigest()
        assert cached.read_bytes() == shared_bytes(name)


def test_prime_tiktoken_cache_sets_the_variable_when_unset(monkeypatch):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    folder = prime_tiktoken_cache()
    assert folder == (data.user_cache_dir().parent / "tiktoken").resolve()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(folder)
    check_tiktoken_cache(folder)
    assert prime_tiktoken_cache() == folder  # a second call is harmless
    assert len(files_in(folder)) == 2


def test_prime_tiktoken_cache_uses_the_variable_or_the_argument(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "from-env"))
    assert prime_tiktoken_cache() == (tmp_path / "from-env").resolve()
    check_tiktoken_cache(tmp_path / "from-env")
    assert prime_tiktoken_cache(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str((tmp_path / "explicit").resolve())
    check_tiktoken_cache(tmp_path / "explicit")
