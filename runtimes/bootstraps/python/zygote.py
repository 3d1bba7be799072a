# ember Python zygote: started by ember-agent inside a warm sandbox.
#
# It imports the few modules it needs itself once, then keeps exactly one
# *spare* worker forked ahead of need. The spare prepares itself (new
# session, output wrappers, a rehearsal that warms the compiler and import
# machinery in its own copy-on-write pages), reports {"spare": pid} and
# blocks reading the next request. It runs that one invocation and dies;
# the zygote then forks the next spare. So every invocation gets a fresh
# process that never saw another function's code (nothing survives: module
# globals, environment, files), while the fork and the warm-up happen
# between invocations, off the caller's path.
#
# fd 3 is a Unix stream socket to the agent. Its first line is the config:
# {"base": hex BPF, "profiles": {name: [hex BPF program, ...]}}, the seccomp
# filters a worker installs on itself (with no_new_privs): the base as soon
# as the spare is forked (off the hot path), its function's profile extras
# once the request names it, before any user code runs. So the worker is
# always confined more tightly than the zygote. Requests then arrive as
# JSON lines with three file descriptors attached (stdout, stderr, result
# pipe write ends). The zygote writes {"ready": pid} once and
# {"exited": pid, ...} per worker; spares write {"spare": pid}. Before a
# spare gets its request, the agent may send it {"clean": true}: the spare
# removes what the previous invocation left in the IPC namespace (it runs
# as the same user as every worker, so it may) and answers {"cleaned": n}.
# Nothing else reads or writes fd 3.
#
# A spare may instead be made a *function zygote* ({"function_zygote": true,
# "handler", "profile", "nproc"} with three descriptors: its own new control
# socket, then the init's stdout and stderr pipes). It confines itself to
# the profile, imports the handler's module once (the function's init) and
# checks that the init left nothing a fork would share or break (threads,
# open descriptors, shared memory); it answers {"ready": pid, "init_us"} or
# {"init_error": ...} / {"unsafe": why} on the new socket and then acts as
# a zygote for that function alone: its spares fork with the module
# already imported, so each invocation pays a fork, not the import.
import os
import resource
import sys
import time

_t0 = time.monotonic()

# Preloads: only what this bootstrap needs (which brings json, re,
# collections, enum, functools, itertools, math along). Every module here is
# in every sandbox's memory and in the page tables each fork copies: fewer
# mean a smaller paused sandbox and a cheaper fork. A function's own imports
# are paid once, in its function zygote, not per invocation; only a
# function's first (hot) invocation and functions without a zygote import
# them per invocation. `logging` and `random` are never imported here: both
# register at-fork hooks (lock re-init, reseeding from urandom) that more
# than double the cost of every fork (measured 0.64 -> 1.47 ms).
import ctypes  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

CTL_FD = 3
# Where deploy vendors a function's requirements.txt, inside its code tree.
DEPS_DIR = ".ember/python"
ctl = socket.socket(fileno=CTL_FD)

PR_SET_DUMPABLE = 4
IPC_RMID = 0
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# profile name -> [(buffer, sock_fprog)], built once in the zygote so a
# worker only makes the prctl calls; BASE is the filter every spare installs.
FILTERS = {}
BASE = []

REHEARSAL = """
def handler(event, context):
    items = [x * 2 for x in event.get("items", [])]
    return {"ok": True, "items": items, "name": str(context)}
"""


def send(msg):
    ctl.sendall((json.dumps(msg) + "\n").encode())


def read_config():
    data = b""
    while not data.endswith(b"\n"):
        more = ctl.recv(1 << 20)
        if not more:
            os._exit(0)
        data += more
    cfg = json.loads(data)

    def build(text):
        code = bytes.fromhex(text)
        buf = ctypes.create_string_buffer(code, len(code))
        return (buf, _SockFprog(len(code) // 8, ctypes.addressof(buf)))

    BASE.append(build(cfg["base"]))
    for name, programs in cfg["profiles"].items():
        FILTERS[name] = [build(text) for text in programs]


def install(filters, what):
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    for _buf, fprog in filters:
        if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) for %s" % what)


def confine(profile):
    """Install the profile's extra worker filters on this process (the base
    is already in place). Irreversible; anything that fails here means no
    user code may run."""
    filters = FILTERS.get(profile)
    if filters is None:
        raise RuntimeError("unknown sandbox profile %r (known: %s)" % (profile, ", ".join(sorted(FILTERS))))
    for _buf, fprog in filters:
        if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) for profile %s" % profile)


def recv_request():
    data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 16, 4)
    if not data:
        os._exit(0)
    chunks = [data]
    while not chunks[-1].endswith(b"\n"):
        more = ctl.recv(1 << 20)
        if not more:
            os._exit(0)
        chunks.append(more)
    return json.loads(b"".join(chunks)), fds


class Context:
    """What a handler gets as its second argument (Lambda-like)."""

    def __init__(self, req, deadline):
        self.function_name = req["function"]
        self.invocation_id = req["id"]
        self.memory_limit_in_mb = req["memory_limit_mb"]
        self._deadline = deadline

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self):
        return "Context(function_name=%r, invocation_id=%r)" % (
            self.function_name,
            self.invocation_id,
        )


def scrub(text):
    """`text` with lone surrogates (which no UTF-8 or JSON reader takes)
    spelled out as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def write_result(fd, msg):
    body = json.dumps(msg, ensure_ascii=False).encode("utf-8")
    buf = struct.pack(">I", len(body)) + body
    view = memoryview(buf)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _user_frame(frame):
    # Hide the bootstrap (compiled from a string) and importlib's plumbing:
    # users should see their own code.
    name = frame.filename
    return not (name == "<string>" or name.startswith("<frozen importlib") or "/importlib/" in name)


def error_of(exc):
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if _user_frame(f)])
    return {
        "type": scrub(type(exc).__name__),
        "message": scrub(str(exc)),
        "traceback": scrub("".join(te.format())),
    }


def rehearse():
    """Run the invocation path once on built-in code, so the pages it
    touches are already this process's own when the real request comes."""
    mod = types.ModuleType("_ember_rehearsal")
    exec(compile(REHEARSAL, "<rehearsal>", "exec"), mod.__dict__)
    value = mod.handler(json.loads('{"items": [1, 2, 3], "s": "\\u00e9"}'), "ctx")
    json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    # Not rehearsed: formatting a traceback (~1 ms of CPU per worker); the
    # error path pays it only when a handler raises.
    # Warm the path-based finder and the bytecode loader on a small stdlib
    # module, never on /fn (a finder cached for /fn before the code is
    # mounted could go stale). The module is executed but never
    # registered in sys.modules.
    spec = importlib.machinery.PathFinder.find_spec("colorsys", [os.path.dirname(json.__path__[0])])
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    importlib.machinery.PathFinder.find_spec("_ember_no_such_module", ["/"])
    sys.path_importer_cache.clear()
    # The ctypes call path that `confine` takes (a harmless query).
    _prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)


def read_line(fd, pending):
    """One request line from the request pipe (specialized mode); the
    bytes after it stay in `pending` for the next call."""
    while b"\n" not in pending:
        more = os.read(fd, 1 << 20)
        if not more:
            os._exit(0)
        pending.extend(more)
    i = pending.index(b"\n")
    line = bytes(pending[:i])
    del pending[: i + 1]
    return json.loads(line)


def limit_processes(nproc):
    """Cap the processes and threads of the sandbox user (this worker, its
    children, and the zygote): for backends whose cgroup cannot count a
    function's processes (gVisor's), the kernel's per-user limit does."""
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def redirect_output(out_w, err_w, out, err):
    """Make the pipes `out_w` and `err_w` this process's fds 1 and 2, and
    `out`, `err` (wrappers of those numbers) its sys.stdout and stderr."""
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    sys.stdout = out
    sys.stderr = err


def prepare(out_w, err_w, res_w, out, err, profile, fatal, nproc=None):
    """Make the invocation's pipes this process's stdout and stderr, then
    confine it to `profile`; returns how long confining took (us). If it
    cannot be confined, reports a setup error and exits: no user code may
    run (`fatal` tells a runner's agent it is gone for good)."""
    redirect_output(out_w, err_w, out, err)
    t = time.perf_counter_ns()
    try:
        limit_processes(nproc)
        if profile is not None:
            confine(profile)
    except BaseException as exc:  # noqa: B036 - fail closed, whatever it was
        msg = {"outcome": "setup_error", "message": "confining the worker: %s" % exc}
        if fatal:
            msg["fatal"] = True
        write_result(res_w, msg)
        os._exit(0)
    return (time.perf_counter_ns() - t) // 1000


def serve_specialized(profile, fds, out, err, nproc):
    """Specialized mode: this process is bound to one function for the
    sandbox's life. Confined once, it imports the handler on the first
    request and keeps it (module state survives between invocations, as in
    a warm Lambda); each request line gets one result frame."""
    out_w, err_w, res_w, req_r = fds
    confine_us = prepare(out_w, err_w, res_w, out, err, profile, fatal=True, nproc=nproc)
    os.chdir("/fn")
    sys.path.insert(0, "/fn")
    add_dependencies()
    pending = bytearray()
    handler = None
    while True:
        req = read_line(req_r, pending)
        deadline = time.monotonic() + req["timeout_ms"] / 1000.0
        try:
            if handler is None:
                handler = load_handler(req["handler"])
            msg = call(handler, req, deadline)
        except BaseException as exc:  # noqa: B036
            msg = {"outcome": "handler_error", "error": error_of(exc)}
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        msg["confine_us"] = confine_us
        confine_us = 0
        write_result(res_w, msg)


def add_dependencies():
    """Dependencies vendored at deploy time (requirements.txt) live in the
    function's own code tree, so only this function sees them."""
    deps = "/fn/" + DEPS_DIR
    if os.path.isdir(deps):
        sys.path.insert(1, deps)


def load_handler(spec):
    module_name, _, func_name = spec.rpartition(".")
    module = importlib.import_module(module_name)
    handler = getattr(module, func_name, None)
    if not callable(handler):
        raise AttributeError(
            "handler %r not found: module %r has no callable %r" % (spec, module_name, func_name)
        )
    return handler


def call(handler, req, deadline):
    event = json.loads(req["event"])
    value = handler(event, Context(req, deadline))
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError("handler result is not JSON serializable: %s" % exc) from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise TypeError(
            "handler result is not valid Unicode: a lone surrogate (%r) at character %d"
            % (exc.object[exc.start], exc.start)
        ) from None
    if size > req["max_result_bytes"]:
        return {"outcome": "result_too_large", "size": size}
    return {"outcome": "ok", "result": text}


def run_worker(req, fds, out, err):
    deadline = time.monotonic() + req["timeout_ms"] / 1000.0
    out_w, err_w, res_w = fds
    if BOUND:
        # Forked from a function zygote: confined, limited and in /fn
        # since before the import; only the pipes are new.
        confine_us = prepare(out_w, err_w, res_w, out, err, None, fatal=False)
    else:
        confine_us = prepare(
            out_w, err_w, res_w, out, err, req["profile"], fatal=False, nproc=req.get("nproc")
        )
    msg = None
    try:
        if BOUND:
            if req["function"] != BOUND["function"]:
                raise RuntimeError("function zygote of %r asked to run %r" % (BOUND["function"], req["function"]))
            handler = BOUND["handler"]
        else:
            os.chdir("/fn")
            sys.path.insert(0, "/fn")
            add_dependencies()
            handler = load_handler(req["handler"])
        msg = call(handler, req, deadline)
    except BaseException as exc:  # noqa: B036 - SystemExit from user code is an error too
        msg = {"outcome": "handler_error", "error": error_of(exc)}
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    msg["confine_us"] = confine_us
    write_result(res_w, msg)
    os._exit(0)


def clean_ipc():
    """Remove every System V IPC object and POSIX message queue in the
    sandbox's IPC namespace: what the last invocation left there must not
    reach the next one. Returns how many were removed; what cannot be
    listed here (gVisor has no /proc/sysvipc) is left to the agent's
    clean-state check, which discards the sandbox if anything remains."""
    removed = 0
    for kind, rmid in (
        ("shm", lambda i: _libc.shmctl(i, IPC_RMID, None)),
        ("msg", lambda i: _libc.msgctl(i, IPC_RMID, None)),
        ("sem", lambda i: _libc.semctl(i, 0, IPC_RMID)),
    ):
        try:
            with open("/proc/sysvipc/" + kind) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and rmid(int(fields[1])) == 0:
                removed += 1
    try:
        queues = os.listdir("/dev/mqueue")
    except OSError:
        queues = []
    for name in queues:
        try:
            os.unlink("/dev/mqueue/" + name)
            removed += 1
        except OSError:
            pass
    return removed


# Set in a function zygote (and inherited by its spares): the function it
# serves and its handler, imported once.
BOUND = {}


def unsafe_after_init():
    """What the function's init left that a fork would share between
    invocations or break; None if nothing. Threads do not survive a fork
    (a lock one held stays locked in every worker); a descriptor or a
    shared mapping would be one object seen by every worker, so what one
    invocation writes there the next could read."""
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        return "module init started %d threads (forking a multi-threaded process is unsafe)" % (threads - 1)
    extra = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in (0, 1, 2, CTL_FD):
            continue
        try:
            extra.append("%d -> %s" % (fd, os.readlink("/proc/self/fd/" + name)))
        except OSError:
            continue  # the directory listing's own descriptor
    if extra:
        return "module init left file descriptors open: " + ", ".join(extra)
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1][3] == "s" and "w" in fields[1]:
                return "module init left shared writable memory: " + " ".join(fields[5:] or ["anonymous"])
    children = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/children" % task) as f:
                children.extend(f.read().split())
        except OSError:
            pass  # not every kernel has it (gVisor); the agent counts processes too
    if children:
        return "module init left child processes running: " + ", ".join(children)
    return None


def become_function_zygote(req, fds, out, err):
    """This spare becomes the zygote of one function: confined to its
    profile before any of its code runs, it imports the handler's module
    (init output goes to the pipes the agent gave), reports, then forks a
    spare per invocation with the module loaded. Never returns."""
    global ctl
    if len(fds) != 3:
        os._exit(71)
    new_ctl, out_w, err_w = fds
    # The agent's socket goes (dup2 closes it); the old object must not
    # close fd 3 again when it is collected.
    ctl.detach()
    os.dup2(new_ctl, CTL_FD)
    os.close(new_ctl)
    ctl = socket.socket(fileno=CTL_FD)
    redirect_output(out_w, err_w, out, err)
    t = time.monotonic()
    try:
        limit_processes(req.get("nproc"))
        confine(req["profile"])
    except BaseException as exc:  # noqa: B036 - fail closed
        send({"init_error": {"type": "SetupError", "message": "confining the zygote: %s" % exc, "traceback": ""}})
        os._exit(0)
    try:
        os.chdir("/fn")
        sys.path.insert(0, "/fn")
        add_dependencies()
        handler = load_handler(req["handler"])
    except BaseException as exc:  # noqa: B036 - SystemExit at import too
        send({"init_error": error_of(exc)})
        os._exit(0)
    init_us = int((time.monotonic() - t) * 1e6)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    why = unsafe_after_init()
    if why:
        send({"unsafe": why})
        os._exit(0)
    # The init's pipes close here (the agent reads them to the end); each
    # worker gets its own.
    devnull = os.open("/dev/null", os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    BOUND["function"] = req["function"]
    BOUND["handler"] = handler
    send({"ready": os.getpid(), "init_us": init_us})
    serve_forks()


def spare():
    os.setsid()
    # The OOM killer's first choice, before the zygote (which it would
    # otherwise pick as often: their badness differs only by size).
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    # fds 1 and 2 are swapped for the invocation's pipes later; wrappers
    # refer to the numbers, so they can be built now.
    out = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    err = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    gc.enable()
    if not BOUND:
        # Confined from here on: nothing this process does later needs
        # what the base filter refuses. Without it, it must not serve at
        # all. (A function zygote's spares inherit its filters.)
        try:
            install(BASE, "the base worker filter")
        except BaseException:  # noqa: B036
            traceback.print_exc()
            os._exit(72)
        try:
            rehearse()
        except Exception:  # a warm-up failure must not cost the sandbox
            traceback.print_exc()
    send({"spare": os.getpid()})
    while True:
        req, fds = recv_request()
        if not req.get("clean"):
            break
        send({"cleaned": clean_ipc()})
    if req.get("function_zygote") and not BOUND:
        become_function_zygote(req, fds, out, err)
    # User code must never reach the agent's control socket.
    ctl.close()
    if req.get("specialized"):
        if len(fds) != 4:
            os._exit(71)
        serve_specialized(req["profile"], fds, out, err, req.get("nproc"))
    if len(fds) != 3:
        os._exit(71)
    run_worker(req, fds, out, err)


def main():
    read_config()
    # Under memory pressure the kernel should kill a worker (each spare
    # raises itself to 1000), then the zygote, never the agent.
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
    except OSError:
        pass
    # Not dumpable: workers (same uid) cannot ptrace the zygote or read its
    # memory or environment through /proc. Workers inherit it.
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    sys.dont_write_bytecode = True
    # The first compile() in a process initialises the parser (~0.5 ms):
    # pay it once here, not in every worker.
    compile(REHEARSAL, "<warm>", "exec")
    send(
        {
            "ready": os.getpid(),
            "version": "python " + sys.version.split()[0],
            "preload_us": int((time.monotonic() - _t0) * 1e6),
        }
    )
    serve_forks()


def serve_forks():
    """The zygote's loop: keep one spare forked, report how each ends."""
    # Objects allocated so far are never collected in workers: keeps pages
    # shared with the zygote after fork (SOCK's trick).
    gc.collect()
    gc.freeze()
    while True:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                spare()
            finally:
                os._exit(70)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            send({"exited": pid, "signal": os.WTERMSIG(status)})
        else:
            send({"exited": pid, "code": os.WEXITSTATUS(status)})


if __name__ == "__main__":
    main()
