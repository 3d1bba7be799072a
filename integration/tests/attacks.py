# Attacks run by integration/tests/isolation.rs inside real sandboxes. Each
# returns {"ok": did the attack succeed, "detail": what happened}. The
# details are deterministic (errno names, not messages with pids) because
# docs/isolation.md is generated from them.
import ctypes
import errno
import os
import socket
import struct

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def errname(e):
    return errno.errorcode.get(e, str(e))


def oserr(exc):
    return "%s (%s)" % (type(exc).__name__, errname(exc.errno) if exc.errno else "?")


def libc_result(rc):
    if rc == -1 or (isinstance(rc, int) and rc < 0):
        return {"ok": False, "detail": "refused: " + errname(ctypes.get_errno())}
    return {"ok": True, "detail": "succeeded (returned %d)" % rc}


SKIP = ("/proc", "/sys", "/dev", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc")


def read_other_code(ev):
    token = ev["token"].encode()
    found = []
    # The victim's code, by its host path in the store.
    try:
        with open(ev["victim_path"], "rb") as f:
            if token in f.read():
                found.append(ev["victim_path"])
    except OSError:
        pass
    # Anywhere else a function could have left code: everything but the
    # host's read-only system directories.
    for root, dirs, files in os.walk("/"):
        if root.startswith(SKIP) and root != "/":
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP]
        for name in files:
            p = os.path.join(root, name)
            try:
                with open(p, "rb") as f:
                    if token in f.read(1 << 20):
                        found.append(p)
            except OSError:
                pass
    if found:
        return {"ok": True, "detail": "token found in %s" % found}
    return {"ok": False, "detail": "not found: no readable file holds the other function's code"}


def read_state_dir(ev):
    try:
        names = os.listdir(ev["state_dir"])
        return {"ok": True, "detail": "listed %d entries" % len(names)}
    except OSError as exc:
        return {"ok": False, "detail": "refused: " + oserr(exc)}


def read_proc1_environ(ev):
    try:
        with open("/proc/1/environ", "rb") as f:
            data = f.read()
        return {"ok": True, "detail": "read %d bytes" % len(data)}
    except OSError as exc:
        return {"ok": False, "detail": "refused: " + oserr(exc)}


def read_agent_memory(ev):
    results = []
    for pid in (1, os.getppid()):
        try:
            with open("/proc/%d/mem" % pid, "rb") as f:
                f.seek(0x400000)
                f.read(16)
            results.append("pid %s readable" % ("1" if pid == 1 else "zygote"))
        except OSError as exc:
            results.append(oserr(exc))
    ok = any("readable" in r for r in results)
    return {"ok": ok, "detail": ("refused: " if not ok else "") + ", ".join(sorted(set(results)))}


def list_processes(ev):
    names = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/comm" % entry) as f:
                    names.add(f.read().strip())
            except OSError:
                pass
    foreign = sorted(names - {"agent", "python3"})
    if foreign:
        return {"ok": True, "detail": "sees " + ", ".join(foreign)}
    return {"ok": False, "detail": "only this sandbox's agent and python3 are visible"}


def write_fn(ev):
    results = []
    for path, mode in (("/fn/main.py", "a"), ("/fn/new.py", "w")):
        try:
            with open(path, mode) as f:
                f.write("# owned\n")
            results.append("wrote " + path)
        except OSError as exc:
            results.append(oserr(exc))
    ok = any(r.startswith("wrote") for r in results)
    return {"ok": ok, "detail": ("refused: " if not ok else "") + ", ".join(sorted(set(results)))}


MS_REMOUNT = 32
MS_BIND = 4096


def remount_fn_rw(ev):
    return libc_result(libc.mount(None, b"/fn", None, MS_REMOUNT | MS_BIND, None))


def new_mount(ev):
    return libc_result(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))


CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000


def new_namespace(ev):
    return libc_result(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))


PTRACE_ATTACH = 16


def ptrace_zygote(ev):
    return libc_result(libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None))


SYS_bpf = 321
BPF_PROG_LOAD = 5


def load_bpf(ev):
    # A real socket filter: r0 = 0; exit.
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    ibuf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("<IIQQ", 1, 2, ctypes.addressof(ibuf), ctypes.addressof(lic))
    abuf = ctypes.create_string_buffer(attr + b"\0" * (128 - len(attr)), 128)
    return libc_result(libc.syscall(SYS_bpf, BPF_PROG_LOAD, abuf, 128))


def raw_socket(ev):
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        return {"ok": True, "detail": "raw socket opened"}
    except OSError as exc:
        return {"ok": False, "detail": "refused: " + oserr(exc)}


def inet_socket(ev):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        return {"ok": False, "detail": "socket refused: " + oserr(exc)}
    try:
        s.settimeout(2)
        s.connect(("1.1.1.1", 53))
        return {"ok": True, "detail": "connected to 1.1.1.1:53"}
    except OSError as exc:
        return {"ok": False, "detail": "socket opened, connect failed: " + oserr(exc)}


def emberd_socket(ev):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(ev["socket"])
        return {"ok": True, "detail": "connected to emberd"}
    except OSError as exc:
        return {"ok": False, "detail": "refused: " + oserr(exc)}


def run_host_program(ev):
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.execv("/bin/true", ["true"])
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            return {"ok": True, "detail": "ran /bin/true"}
        return {"ok": False, "detail": "refused: exec failed in the child"}
    except OSError as exc:
        return {"ok": False, "detail": "refused: " + oserr(exc)}


ATTACKS = {f.__name__: f for f in (
    read_other_code,
    read_state_dir,
    read_proc1_environ,
    read_agent_memory,
    list_processes,
    write_fn,
    remount_fn_rw,
    new_mount,
    new_namespace,
    ptrace_zygote,
    load_bpf,
    raw_socket,
    inet_socket,
    emberd_socket,
    run_host_program,
)}


def handler(event, context):
    return ATTACKS[event["attack"]](event)
