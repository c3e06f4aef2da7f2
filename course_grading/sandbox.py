"""Run a student's kernel inside a bubblewrap (``bwrap``) sandbox.

Each submission gets a fresh scratch folder on the grading machine. The kernel sees:

- the scratch folder, read-write, as its working directory and home (it holds the kernel's
  connection file and sockets, and whatever the student's code writes);
- the Python installation and the course's environment, read-only;
- ``course_lib`` read-only, as a filtered copy in which the reference modules of the assignment
  being graded are stubs (the exercise asks the student to write them; see ``hidden_modules``);
- the course's data folder read-only, when there is one;
- a private ``/tmp``, ``/proc`` and ``/dev``; nothing else of the machine's file system: not the
  course directory, ``solutions/``, ``submitted/``, ``autograded/``, the gradebook or the grader's
  home;
- no network (a new, empty network namespace), no other processes (a new pid namespace), no
  capabilities, and an environment built from a short allow-list.

Limits (``prlimit``): address space, file size, open files, CPU seconds and processes; a private
``/tmp`` of bounded size; the grader bounds what the kernel writes into its scratch folder in all
(see ``SandboxedExecute.sandbox_disk_mb``). Linux does not enforce the process limit on root, so
when the grader runs as root, the student's code runs as a user id of its own (``setpriv``, from
util-linux): ``SANDBOX_UID_BASE`` plus the grading process's id, unique among running graders,
with no capabilities and ``no_new_privs``; bwrap then makes every namespace but the user namespace,
as root, and the scratch folder is handed to that user. bwrap is started with ``--die-with-parent`` and ``--unshare-pid``: when
the grader kills the kernel (end of the run, a timeout, or the grader itself dying), the sandbox's
pid namespace goes with it, and so does every process the student's code started, including those
that left the kernel's session. The kernel talks to the grader over Unix sockets in the scratch
folder (ZeroMQ's ``ipc`` transport), since it has no network.

If ``bwrap`` is missing or cannot create namespaces, :func:`check_sandbox` raises
:class:`SandboxUnavailable` with the reason; grading then refuses to start, unless the instructor
set ``COURSE_GRADING_NO_SANDBOX=1`` (logged on every submission).
"""

from __future__ import annotations

import ast
import atexit
import compileall
import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from jupyter_client.manager import AsyncKernelManager
from traitlets import Dict as TDict, List as TList, Unicode

__all__ = ["SandboxUnavailable", "SandboxedKernelManager", "check_sandbox", "no_sandbox_requested", "sandbox_command"]

log = logging.getLogger(__name__)

NO_SANDBOX_ENV = "COURSE_GRADING_NO_SANDBOX"

# Environment variables that pass into the sandbox (everything else is dropped: the grader's own
# environment may hold tokens or paths the student should not see).
ENV_ALLOW = ("LANG", "LC_ALL", "LC_CTYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "COURSE_DATA_DIR", "XDG_CACHE_HOME", "NBGRADER_EXECUTION", "PYTHONHASHSEED", "TZ")

# Files of /etc that programs commonly need (the dynamic loader, user and time-zone lookups).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf", "localtime",
             "hosts", "ssl", "ca-certificates", "alternatives", "mime.types")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing, or this machine does not let it create namespaces."""


def no_sandbox_requested() -> bool:
    return os.environ.get(NO_SANDBOX_ENV, "") not in ("", "0")


@functools.cache
def check_sandbox() -> str:
    """Return the path of ``bwrap`` after checking that it can start a sandbox; else raise."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap (the `bwrap` command) is not installed; on Debian/Ubuntu: apt-get install bubblewrap")
    probe = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
                            "--dev", "/dev", "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise SandboxUnavailable(
            f"bwrap cannot create a sandbox on this machine ({probe.stderr.strip() or probe.returncode}); "
            "unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, "
            "or user.max_user_namespaces > 0)")
    return bwrap


# As root, the student's code runs as SANDBOX_UID_BASE + the grading process's id: a user id of its
# own (no account, no files anywhere), so that the process limit counts this submission only.
SANDBOX_UID_BASE = 1_500_000_000


@functools.cache
def sandbox_uid() -> int | None:
    """The user id the sandbox runs as when grading as root (None otherwise, or without setpriv)."""
    if os.geteuid() != 0:
        return None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        log.warning("setpriv (util-linux) is missing: grading as root without a process limit")
        return None
    uid = SANDBOX_UID_BASE + os.getpid()
    probe = subprocess.run([check_sandbox(), "--unshare-pid", "--unshare-net", "--die-with-parent", "--ro-bind", "/",
                            "/", "--proc", "/proc", "--dev", "/dev", setpriv, f"--reuid={uid}", f"--regid={uid}",
                            "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "true"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        log.warning("cannot run the sandbox as another user (%s): grading as root without a process limit",
                    probe.stderr.strip() or probe.returncode)
        return None
    return uid


def _hand_over(scratch: Path, uid: int) -> None:
    """Give the scratch folder and what it holds to the sandbox's user."""
    for path in [scratch, *scratch.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)


def _course_lib_dir() -> Path:
    spec = importlib.util.find_spec("course_lib")
    if spec is None or not spec.submodule_search_locations:
        raise SandboxUnavailable("course_lib is not installed in this environment")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


_STAGED: dict[tuple[str, ...], Path] = {}


def _without(source: str, module: str, names: set[str]) -> str:
    """``source`` with its top-level definitions of ``names`` removed; importing one says why."""
    tree = ast.parse(source)
    defined = set()
    kept = []
    for node in tree.body:
        targets = [node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else []
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                       if isinstance(t, ast.Name)]
        if targets and set(targets) <= names:
            defined.update(targets)
            continue
        kept.append(node)
    missing = names - defined
    if missing:
        raise ValueError(f"hidden names {sorted(missing)} are not defined at the top level of {module}")
    tree.body = kept
    message = f"{module}.{{}} is not available while your exercise is graded: the exercise asks you to write it"
    return (ast.unparse(tree) + "\n\n\ndef __getattr__(name):\n"
            f"    if name in {sorted(names)!r}:\n"
            f"        raise ImportError({message!r}.format(name))\n"
            f"    raise AttributeError('module {module} has no attribute ' + repr(name))\n")


def staged_course_lib(hidden_modules: Iterable[str]) -> Path:
    """A read-only copy of course_lib in which what ``hidden_modules`` names is hidden.

    ``"course_lib.attention"`` makes the whole module a stub that raises ImportError saying why;
    ``"course_lib.gpt:LayerNorm,GPT"`` removes only those top-level definitions (importing one
    raises the same ImportError), for a module whose other parts the exercise's setup uses. Other
    modules are copied as they are. Made once per process and set of hidden modules, removed when
    the process exits.
    """
    key = tuple(sorted(hidden_modules))
    if key in _STAGED:
        return _STAGED[key]
    source = _course_lib_dir()
    root = Path(tempfile.mkdtemp(prefix="course-lib-view-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    target = root / "course_lib"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for spec in key:
        module, _, names = spec.partition(":")
        parts = module.split(".")
        if parts[0] != "course_lib" or len(parts) != 2 or not (source / f"{parts[1]}.py").is_file():
            raise ValueError(f"hidden module {spec!r}: give a module of course_lib, e.g. course_lib.attention, "
                             "or some of its names, e.g. course_lib.gpt:LayerNorm,GPT")
        path = target / f"{parts[1]}.py"
        if names:
            path.write_text(_without(path.read_text(), module, {n.strip() for n in names.split(",")}))
        else:
            path.write_text(
                f'raise ImportError("{module} is not available while your exercise is graded: the exercise '
                f'asks you to write what it contains")\n')
    compileall.compile_dir(str(target), quiet=1)  # the sandbox cannot write bytecode caches
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    _STAGED[key] = target
    return target


def sandbox_command(scratch: Path, hidden_modules: Iterable[str] = (), *, memory_mb: int = 6144,
                    file_size_mb: int = 256, cpu_seconds: int = 900, processes: int = 256,
                    open_files: int = 1024, tmp_mb: int = 256, env: dict[str, str] | None = None) -> list[str]:
    """The command prefix that runs a program inside the sandbox (append the program and its arguments)."""
    bwrap = check_sandbox()
    scratch = scratch.resolve()
    uid = sandbox_uid()
    ro: list[Path] = []
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        ro.append(Path(prefix).resolve())
    python = Path(sys.executable)
    ro.append(python.resolve().parent)
    if uid is None:
        args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    else:  # root: no user namespace; setpriv (below) drops to the sandbox's user and every capability
        args = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--die-with-parent", "--new-session"]
    args += ["--tmpfs", "/", "--dev", "/dev", "--proc", "/proc",
             "--perms", "1777", "--size", str(tmp_mb * 2**20), "--tmpfs", "/tmp"]
    args += ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin", "lib32"):
        path = Path("/") / link
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    seen: set[Path] = set()
    for path in sorted(ro, key=lambda p: len(p.parts)):
        if path in seen or any(parent in seen for parent in path.parents) or str(path).startswith("/usr/"):
            continue
        seen.add(path)
        args += ["--ro-bind", str(path), str(path)]
    # The environment's own python may be a symlink to the base installation: bind its venv path too.
    venv_python = Path(sys.prefix) / "bin"
    if venv_python.resolve() not in seen and not any(p in seen for p in venv_python.resolve().parents):
        args += ["--ro-bind", str(venv_python), str(venv_python)]
    course_lib = _course_lib_dir()
    args += ["--ro-bind", str(staged_course_lib(hidden_modules)), str(course_lib)]
    for data in _data_dirs():
        args += ["--ro-bind", str(data), str(data)]
    args += ["--bind", str(scratch), str(scratch)]
    args = _with_open_parents(args)
    args += ["--chdir", str(scratch), "--clearenv"]
    environment = {"PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(scratch),
                   "MPLCONFIGDIR": str(scratch / ".matplotlib"), "PYTHONDONTWRITEBYTECODE": "1",
                   "USER": "student", "LOGNAME": "student"}
    # One thread per kernel unless the grader chose otherwise (parallel grading shares the cores out):
    # a kernel grades small exercises, and idle OpenMP threads spinning between them only burn CPU.
    environment.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    environment.update({k: v for k, v in (env or os.environ).items() if k in ENV_ALLOW})
    for key, value in sorted(environment.items()):
        args += ["--setenv", key, value]
    limits = [f"--as={memory_mb * 2**20}", f"--fsize={file_size_mb * 2**20}", f"--cpu={cpu_seconds}",
              f"--nofile={open_files}", "--core=0"]
    if uid is not None:  # a user of its own: only this sandbox's processes count
        limits.append(f"--nproc={processes}")
        _hand_over(scratch, uid)
    elif os.geteuid() != 0:  # the kernel does not enforce RLIMIT_NPROC on root
        limits.append(f"--nproc={processes + _user_threads()}")
    prlimit = shutil.which("prlimit")
    prefix = [prlimit, *limits, "--"] if prlimit else []
    suffix = ["--"]
    if uid is not None:
        suffix += [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                   "--bounding-set=-all", "--no-new-privs", "--"]
    return [*prefix, *args, *suffix]


def _with_open_parents(args: list[str]) -> list[str]:
    """``args`` with the folders above each mount point made first, readable by everyone (0755).

    bwrap makes missing parent folders itself, but as root it makes them 0700, which the
    sandbox's own user could not enter.
    """
    mounts = [Path(args[i + 2]) for i, a in enumerate(args) if a in ("--ro-bind", "--bind")]
    parents: list[Path] = []
    for mount in mounts:
        for parent in reversed(mount.parents):
            if parent != Path("/") and parent not in parents and not any(
                    parent == m or m in parent.parents for m in mounts):
                parents.append(parent)
    first = args.index("--ro-bind")
    made = [x for parent in parents for x in ("--perms", "0755", "--dir", str(parent))]
    return args[:first] + made + args[first:]


def disk_use(folder: Path, stop_above: int) -> int:
    """Bytes of disk that ``folder`` uses (allocated blocks; each entry counts at least 4 KiB, so that
    a million empty files count too). Stops counting once above ``stop_above``."""
    total, pending = 0, [str(folder)]
    while pending and total <= stop_above:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += max(info.st_blocks * 512, 4096)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
        except OSError:
            continue
    return total


def _user_threads() -> int:
    """Threads this user runs now (RLIMIT_NPROC counts all of them, the grader's included)."""
    uid, count = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(list((entry / "task").iterdir()))
            except OSError:
                continue
    return count


def _data_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("COURSE_DATA_DIR"):
        dirs.append(Path(os.environ["COURSE_DATA_DIR"]))
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    dirs.append(Path(base) / "llm-from-scratch-course" / "data")
    return [d.resolve() for d in dirs if d.is_dir()]


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in the sandbox, reached through Unix sockets in ``scratch``."""

    scratch = Unicode("", help="the submission's scratch folder (made by the grader)").tag(config=False)
    hidden_modules = TList(Unicode(), default_value=[]).tag(config=False)
    limits = TDict(default_value={}).tag(config=False)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        scratch = Path(self.scratch)
        self.transport = "ipc"
        self.ip = str(scratch / "kernel-ipc")
        self.connection_file = str(scratch / "kernel.json")

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        # The kernel spec names "python" or sys.executable; inside, use this environment's python.
        if cmd and Path(cmd[0]).name.startswith("python"):
            cmd[0] = str(Path(sys.prefix) / "bin" / "python")
        return sandbox_command(Path(self.scratch), self.hidden_modules, **self.limits) + cmd

    async def _async_pre_start_kernel(self, **kw):
        kw["cwd"] = self.scratch
        # What the student's process writes to its own stdout and stderr (not to the notebook) must not
        # flood the grader's log: it goes to nowhere and to a file in the scratch folder (size-limited).
        kw["stdout"] = subprocess.DEVNULL
        kw["stderr"] = open(Path(self.scratch) / "kernel-stderr.log", "ab")  # noqa: SIM115 - closed below
        try:
            result = await super()._async_pre_start_kernel(**kw)
        finally:
            self._stderr_file = kw["stderr"]
        uid = sandbox_uid()
        if uid is not None:  # the connection file, written just now, must be readable by the sandbox's user
            _hand_over(Path(self.scratch), uid)
        return result

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        stderr = getattr(self, "_stderr_file", None)
        if stderr is not None:
            stderr.close()

    def stderr_tail(self, size: int = 2000) -> str:
        """The end of what the sandbox and the kernel wrote to stderr (for the grader's log)."""
        try:
            data = (Path(self.scratch) / "kernel-stderr.log").read_bytes()
        except OSError:
            return ""
        return data[-size:].decode(errors="replace")
