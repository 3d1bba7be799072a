# ember Python zygote: started by ember-agent inside a warm sandbox.
#
# It imports the modules handlers commonly use once, then forks one worker
# per invocation. The worker is the only process that ever imports user
# code, so nothing from one invocation (module globals, environment, open
# files) can survive into the next: the worker dies with its result.
#
# fd 3 is a Unix stream socket to the agent. Requests arrive as JSON lines
# with three file descriptors attached (stdout, stderr, result pipe write
# ends); the zygote answers with {"forked": pid} and {"exited": ...} lines.
import os
import sys
import time

_t0 = time.monotonic()

import base64  # noqa: E402,F401  (preloads: imported for their side effect)
import collections  # noqa: F401
import copy  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import enum  # noqa: F401
import functools  # noqa: F401
import gc
import hashlib  # noqa: F401
import importlib
import io
import itertools  # noqa: F401
import json
import logging  # noqa: F401
import math  # noqa: F401
import random  # noqa: F401
import re  # noqa: F401
import socket
import string  # noqa: F401
import struct
import traceback
import typing  # noqa: F401
import urllib.parse  # noqa: F401
import uuid  # noqa: F401

CTL_FD = 3
ctl = socket.socket(fileno=CTL_FD)


def send(msg):
    ctl.sendall((json.dumps(msg) + "\n").encode())


def recv_request():
    data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 16, 3)
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


def write_result(fd, msg):
    body = json.dumps(msg, ensure_ascii=False).encode("utf-8", "surrogatepass")
    buf = struct.pack(">I", len(body)) + body
    view = memoryview(buf)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def error_of(exc):
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def run_worker(req, out_w, err_w, res_w):
    deadline = time.monotonic() + req["timeout_ms"] / 1000.0
    os.setsid()
    ctl.close()
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    gc.enable()
    msg = None
    try:
        os.chdir("/fn")
        sys.path.insert(0, "/fn")
        importlib.invalidate_caches()
        module_name, _, func_name = req["handler"].rpartition(".")
        module = importlib.import_module(module_name)
        handler = getattr(module, func_name, None)
        if not callable(handler):
            raise AttributeError(
                "handler %r not found: module %r has no callable %r"
                % (req["handler"], module_name, func_name)
            )
        event = json.loads(req["event"])
        value = handler(event, Context(req, deadline))
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError("handler result is not JSON serializable: %s" % exc) from None
        if len(text.encode("utf-8", "surrogatepass")) > req["max_result_bytes"]:
            msg = {
                "outcome": "result_too_large",
                "size": len(text),
            }
        else:
            msg = {"outcome": "ok", "result": text}
    except BaseException as exc:  # noqa: B036 - SystemExit from user code is an error too
        msg = {"outcome": "handler_error", "error": error_of(exc)}
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    write_result(res_w, msg)
    os._exit(0)


def main():
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    sys.dont_write_bytecode = True
    send(
        {
            "ready": os.getpid(),
            "version": "python " + sys.version.split()[0],
            "preload_us": int((time.monotonic() - _t0) * 1e6),
        }
    )
    # Objects allocated so far are never collected in workers: keeps pages
    # shared with the zygote after fork (SOCK's trick).
    gc.collect()
    gc.freeze()
    while True:
        req, fds = recv_request()
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            send({"error": "request without its 3 descriptors"})
            continue
        out_w, err_w, res_w = fds
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                run_worker(req, out_w, err_w, res_w)
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        send({"forked": pid})
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            send({"exited": pid, "signal": os.WTERMSIG(status)})
        else:
            send({"exited": pid, "code": os.WEXITSTATUS(status)})


if __name__ == "__main__":
    main()
