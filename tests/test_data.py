"""Unit tests for course_lib.data (chapters 3 and 4): finding, checking and downloading data files.

The real files come through the product's own lookup (``$COURSE_DATA_DIR`` or the user cache,
downloading on first use), resolved once when this module is imported. After that, no test touches
the network or the real per-user cache: an autouse fixture points the cache at a temporary folder
and replaces :func:`course_lib.data.fetch` with one that fails. The download tests either replace
it with fakes, or serve the files from a real HTTP server on 127.0.0.1 and run the real ``fetch``.
"""

import functools
import hashlib
import http.server
import io
import os
import socket
import threading
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

VERDICT = "the-verdict.txt"
REAL_FETCH = data.fetch


@functools.cache
def real_bytes(name: str) -> bytes:
    """The verified bytes of a course file, found the way a learner's notebook finds them."""
    return _REAL_PATHS[name].read_bytes()


# Resolved before any fixture changes the environment: COURSE_DATA_DIR, else the user cache.
_REAL_PATHS = {name: data_path(name) for name in REGISTRY}


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


def test_registry_describes_every_real_file():
    for name, src in REGISTRY.items():
        content = real_bytes(name)
        assert len(content) == src.size, name
        assert hashlib.sha256(content).hexdigest() == src.sha256, name
        assert src.url.startswith("https://"), name


def test_default_search_is_the_user_cache_only(monkeypatch):
    assert data_dirs() == [data.user_cache_dir()]
    assert data.user_cache_dir() == Path(os.environ["XDG_CACHE_HOME"]) / "llm-from-scratch-course" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_dirs() == [Path.home() / ".cache" / "llm-from-scratch-course" / "data"]


def test_nothing_depends_on_where_the_checkout_lives():
    source = Path(data.__file__).read_text()
    assert "__file__" not in source and "parent.parent" not in source


def test_readers(data_dir):
    for name in (VERDICT, "names.txt", "instruction-data.json"):
        (data_dir / name).write_bytes(real_bytes(name))
    assert read_bytes(VERDICT) == real_bytes(VERDICT)
    assert read_text(VERDICT) == real_bytes(VERDICT).decode("utf-8")
    names = read_text("names.txt").split()  # 32,033 names: the last line has no final newline
    assert len(names) == 32_033 and names[0] == "emma" and names[-1] == "zzyzx"
    examples = read_json("instruction-data.json")
    assert len(examples) == 1_100 and set(examples[0]) == {"instruction", "input", "output"}


def test_course_data_dir_is_used(data_dir):
    (data_dir / VERDICT).write_bytes(real_bytes(VERDICT))
    assert data_dirs() == [data_dir]
    assert data_path(VERDICT) == data_dir / VERDICT
    assert read_text(VERDICT).startswith("I HAD always thought Jack Gisburn")


# --- missing and corrupt files --------------------------------------------------------------------


def test_missing_file_error_says_what_where_and_how(data_dir):
    # COURSE_DATA_DIR is the only folder searched: the user cache is not.
    cache = data.user_cache_dir()
    cache.mkdir(parents=True)
    (cache / VERDICT).write_bytes(real_bytes(VERDICT))
    with pytest.raises(DataFileNotFoundError) as info:
        data_path(VERDICT)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for needed in (VERDICT, str(data_dir), "COURSE_DATA_DIR", REGISTRY[VERDICT].url, "network disabled"):
        assert needed in message
    assert files_in(data_dir) == []


def test_missing_file_default_folders():
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
    monkeypatch.setattr(data, "fetch", fake_fetch(real_bytes(VERDICT), calls=calls))
    with pytest.raises(DataFileNotFoundError, match="turned off"):
        data_path(VERDICT, download=False)
    assert calls == []


def test_corrupt_file_names_file_and_both_checksums(data_dir):
    good = real_bytes(VERDICT)
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
    path.write_bytes(real_bytes(VERDICT))
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
    monkeypatch.setattr(data, "fetch", fake_fetch(real_bytes(VERDICT), calls=calls))
    path = data_path(VERDICT)
    assert path == data_dir / VERDICT
    assert path.read_bytes() == real_bytes(VERDICT)
    assert calls == [REGISTRY[VERDICT].url]
    assert files_in(data_dir) == [VERDICT]  # no temporary file left
    data_path(VERDICT)  # now found on disk: no second download
    assert len(calls) == 1


def test_download_goes_to_the_user_cache_by_default(monkeypatch):
    monkeypatch.setattr(data, "fetch", fake_fetch(real_bytes("gpt2/vocab.bpe")))
    path = data_path("gpt2/vocab.bpe")  # a name with a sub-folder
    cache = data.user_cache_dir()
    assert path == cache / "gpt2" / "vocab.bpe"
    assert files_in(cache) == ["gpt2/vocab.bpe"]


def test_download_failing_midway_leaves_nothing(data_dir, monkeypatch):
    monkeypatch.setattr(data, "fetch", fake_fetch(real_bytes(VERDICT), fail_after=5000))
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
    tsv = real_bytes("SMSSpamCollection.tsv")
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


# --- downloading for real: urllib against an HTTP server on 127.0.0.1 ------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder it is given; paths under /cut/ promise the whole file but send half of it."""

    def do_GET(self):
        if self.path.startswith("/cut/"):
            content = (Path(self.directory) / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content[: len(content) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-transfer
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a temporary folder; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def real_network(monkeypatch):
    monkeypatch.setattr(data, "fetch", REAL_FETCH)  # urllib, exactly as a learner's first run


def serve_as(monkeypatch, name: str, url: str) -> None:
    """Point the registry entry of ``name`` at ``url`` (checksum and size unchanged)."""
    monkeypatch.setitem(REGISTRY, name, REGISTRY[name]._replace(url=url))


def test_first_use_downloads_over_http_into_the_user_cache(server, real_network, monkeypatch):
    folder, base = server
    (folder / "input.txt").write_bytes(real_bytes(VERDICT))
    serve_as(monkeypatch, VERDICT, f"{base}/input.txt")
    path = data_path(VERDICT)
    assert path == data.user_cache_dir() / VERDICT
    assert path.read_bytes() == real_bytes(VERDICT)
    assert files_in(data.user_cache_dir()) == [VERDICT]
    (folder / "input.txt").unlink()  # the server loses it: the cached copy is used from now on
    assert read_text(VERDICT) == real_bytes(VERDICT).decode()


def test_http_download_of_a_zip_member(server, real_network, monkeypatch, data_dir):
    folder, base = server
    tsv = real_bytes("SMSSpamCollection.tsv")
    (folder / "sms.zip").write_bytes(zip_of({"readme": b"about", "SMSSpamCollection": tsv}))
    serve_as(monkeypatch, "SMSSpamCollection.tsv", f"{base}/sms.zip")
    assert data_path("SMSSpamCollection.tsv").read_bytes() == tsv
    assert files_in(data_dir) == ["SMSSpamCollection.tsv"]


def test_http_download_with_a_different_file_fails_its_checksum(server, real_network, monkeypatch):
    folder, base = server
    changed = real_bytes(VERDICT).replace(b"Gisburn", b"Gisborn")  # "upstream changed the file"
    (folder / "input.txt").write_bytes(changed)
    serve_as(monkeypatch, VERDICT, f"{base}/input.txt")
    with pytest.raises(DataChecksumError) as info:
        data_path(VERDICT)
    assert hashlib.sha256(changed).hexdigest() in str(info.value) and REGISTRY[VERDICT].sha256 in str(info.value)
    assert files_in(data.user_cache_dir()) == []  # nothing saved, not even a temporary file


def test_http_transfer_cut_off_midway_leaves_nothing(server, real_network, monkeypatch):
    folder, base = server
    (folder / "input.txt").write_bytes(real_bytes(VERDICT))
    serve_as(monkeypatch, VERDICT, f"{base}/cut/input.txt")
    with pytest.raises(DataFileNotFoundError) as info:
        data_path(VERDICT)
    assert "IncompleteRead" in str(info.value) and f"{base}/cut/input.txt" in str(info.value)
    assert files_in(data.user_cache_dir()) == []
    serve_as(monkeypatch, VERDICT, f"{base}/input.txt")  # the next try gets the whole file
    assert data_path(VERDICT).read_bytes() == real_bytes(VERDICT)


def test_http_404_is_a_clear_not_found_error(server, real_network, monkeypatch):
    _, base = server
    serve_as(monkeypatch, VERDICT, f"{base}/moved-away.txt")
    with pytest.raises(DataFileNotFoundError, match="HTTP Error 404"):
        data_path(VERDICT)
    assert not data.user_cache_dir().exists() or files_in(data.user_cache_dir()) == []


def test_without_network_the_error_names_file_folders_and_remedy(real_network, monkeypatch):
    with socket.socket() as s:  # a port on 127.0.0.1 that nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tinyshakespeare.txt"
    serve_as(monkeypatch, "tinyshakespeare.txt", url)
    with pytest.raises(DataFileNotFoundError) as info:
        data_path("tinyshakespeare.txt")
    message = str(info.value)
    for needed in ("'tinyshakespeare.txt' was not found", str(data.user_cache_dir()), url,
                   "Connection refused", "COURSE_DATA_DIR", "save it as"):
        assert needed in message, needed


def test_command_line_fetches_everything(server, real_network, monkeypatch, capsys):
    folder, base = server
    for name in REGISTRY:
        (folder / name.replace("/", "_")).write_bytes(real_bytes(name))
        serve_as(monkeypatch, name, f"{base}/{name.replace('/', '_')}")
    zipped = zip_of({"SMSSpamCollection": real_bytes("SMSSpamCollection.tsv")})
    (folder / "sms.zip").write_bytes(zipped)
    serve_as(monkeypatch, "SMSSpamCollection.tsv", f"{base}/sms.zip")
    assert data.main([]) == 0
    assert sorted(files_in(data.user_cache_dir())) == sorted(REGISTRY)
    assert data.main(["no-such-file.txt"]) == 1
    assert "MISSING  no-such-file.txt" in capsys.readouterr().out


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
        assert cached.read_bytes() == real_bytes(name)


@pytest.fixture
def gpt2_files(data_dir):
    for name in TIKTOKEN_URLS:
        (data_dir / name).parent.mkdir(exist_ok=True)
        (data_dir / name).write_bytes(real_bytes(name))


def test_prime_tiktoken_cache_sets_the_variable_when_unset(monkeypatch, gpt2_files):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    folder = prime_tiktoken_cache()
    assert folder == (data.user_cache_dir().parent / "tiktoken").resolve()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(folder)
    check_tiktoken_cache(folder)
    assert prime_tiktoken_cache() == folder  # a second call is harmless
    assert len(files_in(folder)) == 2


def test_prime_tiktoken_cache_uses_the_variable_or_the_argument(monkeypatch, tmp_path, gpt2_files):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "from-env"))
    assert prime_tiktoken_cache() == (tmp_path / "from-env").resolve()
    check_tiktoken_cache(tmp_path / "from-env")
    assert prime_tiktoken_cache(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str((tmp_path / "explicit").resolve())
    check_tiktoken_cache(tmp_path / "explicit")
