//! `ember-agent`: PID 1 of an ember sandbox.
//!
//! It starts the interpreter zygote (which preloads its modules), then
//! serves framed requests from emberd on stdin and answers on stdout. For
//! each invocation it hands the zygote three pipes (stdout, stderr, result),
//! enforces the wall-clock timeout, caps captured output, and, before
//! answering, kills the worker's process group and every other process that
//! is not the agent or the zygote, so no process survives an invocation.
//!
//! It owns nothing on the host: mounts, cgroups and freezing are emberd's.
//! Built statically (`scripts/build-agent`) so it runs in any root
//! filesystem.

mod check;
mod invoke;
mod procs;
mod zygote;

use ember_proto::{read_frame, write_frame, FrameError, FromAgent, ToAgent};
use std::io::{self, BufReader, BufWriter};
use std::time::Duration;

/// How long the next spare worker may take to fork and warm up.
const SPARE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options passed on the agent's command line by the sandbox bundle.
pub struct Options {
    pub python: String,
    pub uid: u32,
    pub gid: u32,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        python: "/usr/bin/python3".into(),
        uid: 65534,
        gid: 65534,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("flag {flag} needs a value"))?;
        match flag.as_str() {
            "--python" => opts.python = value,
            "--uid" => opts.uid = value.parse().map_err(|e| format!("--uid {value}: {e}"))?,
            "--gid" => opts.gid = value.parse().map_err(|e| format!("--gid {value}: {e}"))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(opts)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ember-agent: {e}");
            std::process::exit(2);
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let code = match run(&opts, &mut out) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("ember-agent: fatal: {message}");
            let _ = write_frame(&mut out, &FromAgent::Fatal { message });
            1
        }
    };
    procs::kill_all_but(&[]);
    std::process::exit(code);
}

/// After the zygote runs as the unprivileged user, the agent needs only
/// `CAP_KILL` (to kill what invocations leave behind): give up the rest.
fn drop_privileges() -> Result<(), String> {
    use caps::{CapSet, Capability};
    let keep = [Capability::CAP_KILL];
    for set in [CapSet::Effective, CapSet::Permitted] {
        let have = caps::read(None, set).map_err(|e| format!("reading capabilities: {e}"))?;
        for cap in have.into_iter().filter(|c| !keep.contains(c)) {
            caps::drop(None, set, cap).map_err(|e| format!("dropping {cap}: {e}"))?;
        }
    }
    Ok(())
}

fn run(opts: &Options, out: &mut impl io::Write) -> Result<(), String> {
    let mut zyg = zygote::Zygote::start(opts)?;
    drop_privileges()?;
    let ready = zyg.wait_ready()?;
    // The clean state every invocation must leave behind.
    let baseline = check::Baseline::capture()?;
    write_frame(out, &FromAgent::Ready(ready)).map_err(|e| format!("writing ready: {e}"))?;
    let mut input = BufReader::new(io::stdin().lock());
    loop {
        let msg: ToAgent = match read_frame(&mut input) {
            Ok(m) => m,
            // emberd went away: nobody can use this sandbox any more.
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(format!("reading request: {e}")),
        };
        match msg {
            ToAgent::Shutdown => return Ok(()),
            ToAgent::Check => {
                return Err("protocol error: check without an invocation".into());
            }
            ToAgent::Invoke(req) => {
                let (result, pending) = invoke::run(&mut zyg, &req)?;
                write_frame(out, &FromAgent::Result(result))
                    .map_err(|e| format!("writing result: {e}"))?;
                // While the daemon answers its caller and unmounts the
                // code: sweep what the invocation left, let the next worker
                // warm up. Then, once the daemon says the mounts are gone,
                // check the sandbox is as it was.
                let strays_killed = invoke::settle(&mut zyg, pending)?;
                let spare = zyg.wait_spare(SPARE_TIMEOUT)?;
                match read_frame::<_, ToAgent>(&mut input) {
                    Ok(ToAgent::Check) => {}
                    Ok(ToAgent::Shutdown) | Err(FrameError::Closed) => return Ok(()),
                    Ok(other) => {
                        return Err(format!("protocol error: expected check, got {other:?}"))
                    }
                    Err(e) => return Err(format!("reading check: {e}")),
                }
                let problems = baseline.problems(zyg.pid(), spare);
                write_frame(
                    out,
                    &FromAgent::Idle {
                        spare_pid: spare as u32,
                        strays_killed,
                        problems,
                    },
                )
                .map_err(|e| format!("writing idle: {e}"))?;
            }
        }
    }
}
