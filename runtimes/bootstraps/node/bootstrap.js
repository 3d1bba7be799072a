// ember Node.js runner: started by ember-agent inside a warm sandbox, with
// the base worker seccomp filter already installed (Node cannot install one
// on itself; the agent does it between fork and exec).
//
// Node cannot fork a warm zygote, so it runs in *specialized* mode: this one
// process preloads the common built-in modules, reports ready, and waits.
// The first request binds it to a function: it loads the handler from /fn
// (CommonJS or ES module) and keeps it loaded for every later invocation
// of that function, until the daemon recycles the sandbox.
//
// fd 3: requests, one JSON line each (blocking reads: between invocations
// the event loop is parked, like a frozen Lambda). fd 4: one frame per
// request, a big-endian u32 length and that much JSON. The first frame,
// unprompted, is {"ready": pid, ...}. stdout and stderr are the
// invocation's captured output.
"use strict";
const t0 = process.hrtime.bigint();

const fs = require("fs");
const path = require("path");
const url = require("url");
const Module = require("module");
// Preloads: built-ins handlers commonly use, loaded once per sandbox.
for (const m of ["util", "crypto", "events", "stream", "buffer", "zlib", "os",
  "querystring", "string_decoder", "assert", "timers/promises"]) {
  require(m);
}

const REQ_FD = 3;
const RES_FD = 4;

function writeFrame(msg) {
  const body = Buffer.from(JSON.stringify(msg), "utf8");
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  const buf = Buffer.concat([head, body]);
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(RES_FD, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== "EAGAIN") throw e;
    }
  }
}

let pending = Buffer.alloc(0);
function readRequest() {
  const chunk = Buffer.alloc(1 << 20);
  for (;;) {
    const nl = pending.indexOf(10);
    if (nl >= 0) {
      const line = pending.subarray(0, nl).toString("utf8");
      pending = pending.subarray(nl + 1);
      return JSON.parse(line);
    }
    let n;
    try {
      n = fs.readSync(REQ_FD, chunk, 0, chunk.length, null);
    } catch (e) {
      if (e.code === "EAGAIN" || e.code === "EINTR") continue;
      throw e;
    }
    if (n === 0) process.exit(0);
    pending = Buffer.concat([pending, chunk.subarray(0, n)]);
  }
}

// Stack frames of this bootstrap and of Node's internals are noise to the
// function's author.
function cleanStack(stack) {
  return String(stack)
    .split("\n")
    .filter((l) => !l.includes("[eval]") && !l.includes("node:internal"))
    .join("\n");
}

function errorOf(err) {
  if (err instanceof Error) {
    return {
      type: err.name || "Error",
      message: err.message,
      traceback: cleanStack(err.stack || ""),
    };
  }
  return { type: "Error", message: "thrown non-Error value: " + safeString(err), traceback: "" };
}

function safeString(v) {
  try {
    return typeof v === "string" ? v : JSON.stringify(v);
  } catch (_) {
    return String(v);
  }
}

// The package.json nearest to `file` decides whether .js is an ES module.
function isModule(file) {
  if (file.endsWith(".mjs")) return true;
  if (file.endsWith(".cjs")) return false;
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const pj = path.join(dir, "package.json");
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, "utf8")).type === "module";
      } catch (_) {
        return false;
      }
    }
    if (dir === "/fn" || dir === "/") return false;
  }
}

async function loadHandler(spec) {
  const dot = spec.lastIndexOf(".");
  const modName = spec.slice(0, dot);
  const fnName = spec.slice(dot + 1);
  const base = path.join("/fn", modName);
  const file = [".js", ".mjs", ".cjs", ""].map((ext) => base + ext).find((f) => {
    try {
      return fs.statSync(f).isFile();
    } catch (_) {
      return false;
    }
  });
  if (!file) {
    const e = new Error(`handler ${JSON.stringify(spec)}: no ${modName}.js, .mjs or .cjs in the function's code`);
    e.name = "ModuleNotFoundError";
    throw e;
  }
  let mod;
  if (isModule(file)) {
    mod = await import(url.pathToFileURL(file).href);
  } else {
    mod = Module.createRequire(file)(file);
  }
  let fn = mod[fnName];
  if (typeof fn !== "function" && mod.default && typeof mod.default[fnName] === "function") {
    fn = mod.default[fnName];
  }
  if (typeof fn !== "function") {
    const e = new Error(`handler ${JSON.stringify(spec)} not found: ${file.slice(4)} exports no function ${JSON.stringify(fnName)}`);
    e.name = "HandlerNotFound";
    throw e;
  }
  return fn;
}

class Context {
  constructor(req, deadline) {
    this.functionName = req.function;
    this.invocationId = req.id;
    this.memoryLimitInMB = req.memory_limit_mb;
    this._deadline = deadline;
  }
  getRemainingTimeInMillis() {
    return Math.max(0, Math.floor(this._deadline - performance.now()));
  }
}

// An exception outside the handler's own promise chain (a throwing timer,
// an unhandled rejection) fails the invocation in flight and then this
// process: its state is unknown, so the daemon replaces the sandbox.
let failCurrent = null;
let fatal = false;
function onStray(err) {
  fatal = true;
  if (failCurrent) {
    failCurrent(err);
  } else {
    process.stderr.write("ember: uncaught exception between invocations: " + cleanStack(err && err.stack || err) + "\n");
    process.exit(70);
  }
}
process.on("uncaughtException", onStray);
process.on("unhandledRejection", onStray);

async function invoke(handlerPromise, req) {
  const deadline = performance.now() + req.timeout_ms;
  const stray = new Promise((_, reject) => {
    failCurrent = reject;
  });
  try {
    const handler = await Promise.race([handlerPromise(), stray]);
    const event = JSON.parse(req.event);
    const value = await Promise.race([
      Promise.resolve().then(() => handler(event, new Context(req, deadline))),
      stray,
    ]);
    let text;
    try {
      text = JSON.stringify(value === undefined ? null : value);
    } catch (e) {
      const err = new TypeError("handler result is not JSON serializable: " + e.message);
      throw err;
    }
    if (text === undefined) {
      throw new TypeError("handler result is not JSON serializable: " + typeof value);
    }
    const size = Buffer.byteLength(text, "utf8");
    if (size > req.max_result_bytes) return { outcome: "result_too_large", size };
    return { outcome: "ok", result: text };
  } catch (err) {
    return { outcome: "handler_error", error: errorOf(err) };
  } finally {
    failCurrent = null;
  }
}

function rehearse() {
  const fn = new Function("event", "context", "return { ok: true, items: (event.items || []).map((x) => x * 2), name: String(context) };");
  JSON.stringify(fn(JSON.parse('{"items": [1, 2, 3], "s": "\\u00e9"}'), "ctx"));
}

async function main() {
  rehearse();
  writeFrame({
    ready: process.pid,
    version: "node " + process.version,
    preload_us: Number((process.hrtime.bigint() - t0) / 1000n),
  });
  let handler = null;
  for (;;) {
    const req = readRequest();
    if (handler === null) {
      process.chdir("/fn");
      // Loaded once and kept; a failed load is retried next time.
      handler = loadHandler(req.handler);
      handler.catch(() => {
        handler = null;
      });
    }
    const current = handler;
    const msg = await invoke(() => current, req);
    if (fatal) msg.fatal = true;
    writeFrame(msg);
    if (fatal) process.exit(70);
  }
}

main().catch((e) => {
  process.stderr.write("ember: runner failed: " + (e && e.stack || e) + "\n");
  process.exit(70);
});
