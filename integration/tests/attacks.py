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


def read_host_etc(ev):
    """The host's /etc (configuration, keys an application keeps there, the
    account list) must not be the sandbox's."""
    found = []
    try:
        with open(ev["host_etc_file"], "rb") as f:
            if ev["token"].encode() in f.read():
                found.append("the host's " + ev["host_etc_file"])
    except OSError:
        pass
    try:
        with open("/etc/passwd") as f:
            users = sorted(l.split(":")[0] for l in f if ":" in l)
    except OSError:
        users = []
    extra = [u for u in users if u not in ("root", "nobody")]
    if extra:
        found.append("host accounts " + ",".join(extra[:3]))
    if found:
        return {"ok": True, "detail": "read " + "; ".join(found)}
    return {"ok": False, "detail": "blocked: /etc is ember's own (no host file; accounts %s)" % ",".join(users)}


AF_NETLINK = 16
NETLINK_KOBJECT_UEVENT = 15


def netlink_socket(ev):
    try:
        s = socket.socket(AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
        s.close()
        return {"ok": True, "detail": "opened a kernel uevent socket"}
    except OSError as exc:
        return {"ok": False, "detail": "refused: " + oserr(exc)}


def host_kernel_files(ev):
    seen = []
    quiet = []
    for path in ("/proc/config.gz", "/sys/kernel/vmcoreinfo", "/proc/kallsyms", "/proc/modules", "/sys/module/kernel"):
        try:
            if os.path.isdir(path):
                if os.listdir(path):
                    seen.append(path)
                else:
                    quiet.append("empty")
                continue
            with open(path, "rb") as f:
                if f.read(64):
                    seen.append(path)
                else:
                    quiet.append("empty")
        except OSError as exc:
            quiet.append(errname(exc.errno))
    if seen:
        return {"ok": True, "detail": "read " + ", ".join(seen)}
    return {"ok": False, "detail": "blocked: " + ", ".join(sorted(set(quiet)))}


def host_memory(ev):
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1])
    if total == ev["host_mem_kb"]:
        return {"ok": True, "detail": "MemTotal is the host's"}
    return {"ok": False, "detail": "blocked: MemTotal is the sandbox's (%d MiB)" % (total // 1024)}


SYS_modify_ldt = 154
SYS_memfd_secret = 447


def odd_memory_calls(ev):
    buf = ctypes.create_string_buffer(16)
    ldt = libc.syscall(SYS_modify_ldt, 0, buf, 16)
    ldt_err = ctypes.get_errno()
    secret = libc.syscall(SYS_memfd_secret, 0)
    secret_err = ctypes.get_errno()
    if ldt >= 0 or secret >= 0:
        if secret >= 0:
            os.close(secret)
        return {"ok": True, "detail": "modify_ldt %d, memfd_secret %d" % (ldt, secret)}
    return {"ok": False, "detail": "refused: modify_ldt %s, memfd_secret %s" % (errname(ldt_err), errname(secret_err))}


CLONE_PARENT = 0x00008000
SIGCHLD = 17
SYS_clone = 56


def clone_parent(ev):
    """A child made with CLONE_PARENT is the zygote's, not the worker's:
    it would survive the sweep that spares the zygote's own spare."""
    pid = libc.syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        return {"ok": True, "detail": "made a sibling of the zygote (pid %d)" % pid}
    return {"ok": False, "detail": "refused: " + errname(ctypes.get_errno())}


def device_nodes(ev):
    opened = []
    errs = []
    for path in ("/dev/fuse", "/dev/net/tun"):
        try:
            fd = os.open(path, os.O_RDWR)
            os.close(fd)
            opened.append(path)
        except OSError as exc:
            errs.append(errname(exc.errno))
    if opened:
        return {"ok": True, "detail": "opened " + ", ".join(opened)}
    return {"ok": False, "detail": "blocked: " + ", ".join(sorted(set(errs)))}


def read_zygote_proc(ev):
    """The zygote (the worker's parent) is not dumpable: a worker of the
    same user cannot read its environment or memory map."""
    results = []
    for name in ("environ", "maps"):
        try:
            with open("/proc/%d/%s" % (os.getppid(), name), "rb") as f:
                f.read(16)
            results.append(name + " readable")
        except OSError as exc:
            results.append(oserr(exc))
    ok = any("readable" in r for r in results)
    return {"ok": ok, "detail": ("refused: " if not ok else "") + ", ".join(sorted(set(results)))}


IPC_CREAT = 0o1000
IPC_RMID = 0


def _mq():
    mq_open = libc.mq_open
    mq_open.restype = ctypes.c_int
    mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    return mq_open


def leave_ipc(ev):
    """Leave one of each IPC object behind for whoever runs next."""
    key = ev["ipc_key"]
    left = []
    size = ev.get("shm_bytes", 4096)
    shm = libc.shmget(key, size, IPC_CREAT | 0o666)
    if shm >= 0:
        libc.shmat.restype = ctypes.c_void_p
        addr = libc.shmat(shm, None, 0)
        if addr not in (None, ctypes.c_void_p(-1).value):
            # Really there: every page touched (counted against memory).
            ctypes.memset(addr, 1, size)
            libc.shmdt(ctypes.c_void_p(addr))
        left.append("shm")
    msg = libc.msgget(key, IPC_CREAT | 0o666)
    if msg >= 0:
        text = ctypes.create_string_buffer(struct.pack("l", 1) + ev["token"].encode(), 8 + len(ev["token"]))
        libc.msgsnd(msg, text, len(ev["token"]), 0)
        left.append("msg")
    if libc.semget(key, 1, IPC_CREAT | 0o666) >= 0:
        left.append("sem")
    if _mq()(b"/" + ev["mq_name"].encode(), os.O_CREAT | os.O_RDWR, 0o666, None) >= 0:
        left.append("mq")
    return {"ok": True, "detail": "left " + ",".join(left)}


def find_ipc(ev):
    """What the last invocation left, looked for by its keys and name."""
    key = ev["ipc_key"]
    seen = []
    if libc.shmget(key, 0, 0) >= 0:
        seen.append("shm")
    if libc.msgget(key, 0) >= 0:
        seen.append("msg")
    if libc.semget(key, 0, 0) >= 0:
        seen.append("sem")
    if _mq()(b"/" + ev["mq_name"].encode(), os.O_RDONLY, 0, None) >= 0:
        seen.append("mq")
    if seen:
        return {"ok": True, "detail": "found " + ",".join(seen)}
    return {"ok": False, "detail": "blocked: nothing left"}


ATTACKS = {f.__name__: f for f in (
    read_host_etc,
    netlink_socket,
    host_kernel_files,
    host_memory,
    odd_memory_calls,
    clone_parent,
    device_nodes,
    read_zygote_proc,
    leave_ipc,
    find_ipc,
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
