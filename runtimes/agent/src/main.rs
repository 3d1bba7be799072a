//! `ember-agent`: PID 1 of an ember sandbox.
//!
//! It starts the interpreter zygote (which preloads its modules), then
//! serves framed requests from emberd on stdin and answers on stdout. For
//! each invocation it hands the zygote three pipes (stdout, stderr, result),
//! enforces the wall-clock timeout, caps captured output, and, before
//! answering, kills the worker's process group and every other process that
//! is not the agent or the zygote, so no process survives an invocation.
//!
//! Functions in specialized mode (all of Node.js, Python by choice) run in
//! a long-lived runner bound to one function instead (`runner`).
//!
//! It owns nothing on the host: mounts, cgroups and freezing are emberd's.
//! Built statically (`scripts/build-agent`) so it runs in any root
//! filesystem.

mod build;
mod capture;
mod check;
mod devices;
mod error;
mod function_zygote;
mod ipc;
mod procs;
mod runner;
mod worker;
mod zygote;

use ember_proto::{
    read_frame, write_frame, BindReport, BindRequest, FrameError, FromAgent, InitOutcome,
    InvokeRequest, Mode, Ready, ToAgent,
};
use error::{AgentError, ArgsError, PrivilegeError, ProtocolError, SocketError};
use std::io::{self, BufReader, BufWriter};
use std::time::Duration;

/// The ember release this agent belongs to: `--version` prints it and
/// `Ready` tells emberd, which refuses an agent of another release.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long the next spare worker may take to fork and warm up.
const SPARE_TIMEOUT: Duration = Duration::from_secs(10);

/// The language runtime of this sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    Node,
}

/// Options passed on the agent's command line by the sandbox bundle.
pub struct Options {
    /// Serve emberd on this Unix socket instead of stdin/stdout (a sandbox
    /// created by someone else, e.g. containerd, whose stdio emberd does
    /// not hold).
    pub listen: Option<String>,
    pub language: Language,
    /// The interpreter binary inside the sandbox.
    pub interpreter: String,
    pub uid: u32,
    pub gid: u32,
    /// A deploy build instead of a sandbox (`build.rs`).
    pub build: bool,
    /// Deploy builds: where the operator's wheels are mounted.
    pub wheels: Option<String>,
    /// Where the sandbox's cgroup cannot count its processes (gVisor):
    /// the `RLIMIT_NPROC` of the Node.js runner.
    pub nproc: Option<u64>,
}

fn parse_args() -> Result<Options, ArgsError> {
    let mut opts = Options {
        listen: None,
        language: Language::Python,
        interpreter: "/usr/bin/python3".into(),
        uid: 65534,
        gid: 65534,
        build: false,
        wheels: None,
        nproc: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--build" {
            opts.build = true;
            continue;
        }
        let Some(value) = args.next() else {
            return Err(ArgsError::NeedsValue { flag });
        };
        match flag.as_str() {
            "--python" => {
                opts.language = Language::Python;
                opts.interpreter = value;
            }
            "--node" => {
                opts.language = Language::Node;
                opts.interpreter = value;
            }
            "--listen" => opts.listen = Some(value),
            "--uid" => opts.uid = number("--uid", value)?,
            "--gid" => opts.gid = number("--gid", value)?,
            "--wheels" => opts.wheels = Some(value),
            "--nproc" => opts.nproc = Some(number("--nproc", value)?),
            _ => return Err(ArgsError::Unknown { flag }),
        }
    }
    Ok(opts)
}

/// The number `value` of `flag`.
fn number<T: std::str::FromStr<Err = std::num::ParseIntError>>(
    flag: &'static str,
    value: String,
) -> Result<T, ArgsError> {
    value.parse().map_err(|source| ArgsError::NotANumber {
        flag,
        value,
        source,
    })
}

fn main() {
    // Alone, as clap's `--version` is in ember's other binaries (the
    // installer and the version checks read it).
    if matches!(std::env::args().nth(1).as_deref(), Some("--version" | "-V"))
        && std::env::args().len() == 2
    {
        println!("ember-agent {VERSION}");
        return;
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ember-agent: {e}");
            std::process::exit(2);
        }
    };
    if opts.build {
        std::process::exit(serve_build(&opts));
    }
    // Device nodes no function needs that some runtimes add whatever the
    // bundle says (gVisor: /dev/fuse, /dev/net/tun).
    devices::remove_extra();
    let code = match &opts.listen {
        None => {
            let mut out = BufWriter::new(io::stdout().lock());
            let input = BufReader::new(io::stdin().lock());
            match run(&opts, &mut out, input) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("ember-agent: fatal: {e}");
                    let message = e.to_string();
                    let _ = write_frame(&mut out, &FromAgent::Fatal { message });
                    1
                }
            }
        }
        Some(path) => match serve_socket(&opts, path) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ember-agent: fatal: {e}");
                1
            }
        },
    };
    procs::kill_all_but(&[]);
    std::process::exit(code);
}

/// Run a deploy build and write its report (or why it could not run) as
/// the one frame on stdout. Returns the exit code.
fn serve_build(opts: &Options) -> i32 {
    let mut out = BufWriter::new(io::stdout().lock());
    let build = build::BuildOptions {
        language: opts.language,
        interpreter: &opts.interpreter,
        wheels: opts.wheels.as_deref(),
        uid: opts.uid,
        gid: opts.gid,
        nproc: opts.nproc,
    };
    let msg = match build::run(&build) {
        Ok(report) => FromAgent::Built(report),
        Err(e) => FromAgent::Fatal {
            message: e.to_string(),
        },
    };
    match write_frame(&mut out, &msg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ember-agent: writing the build report: {e}");
            1
        }
    }
}

/// After the zygote runs as the unprivileged user, the agent needs only
/// `CAP_KILL` (to kill what invocations leave behind): give up the rest.
fn drop_privileges() -> Result<(), PrivilegeError> {
    use caps::{CapSet, Capability};
    let keep = [Capability::CAP_KILL];
    for set in [CapSet::Effective, CapSet::Permitted] {
        let have = caps::read(None, set).map_err(PrivilegeError::Read)?;
        for cap in have.into_iter().filter(|c| !keep.contains(c)) {
            caps::drop(None, set, cap).map_err(|source| PrivilegeError::Drop { cap, source })?;
        }
    }
    Ok(())
}

/// The sandbox's processes: a Python zygote (fork mode, and the source of
/// a Python runner), and the specialized runner once there is one (for
/// Node.js from the start).
struct Interp {
    zygote: Option<zygote::Zygote>,
    runner: Option<runner::Runner>,
    /// Fork mode, once the sandbox is bound: the function and its zygote
    /// (a child of `zygote`), which workers are forked from.
    function: Option<(String, zygote::Zygote)>,
    /// The clean state of a bound sandbox: the baseline plus its /fn and
    /// /tmp, which stay mounted while it serves its function.
    bound_baseline: Option<check::Baseline>,
}

/// Listen on `path` (bound before anything else, so the socket exists as
/// soon as the sandbox runs), wait for emberd to connect, then start the
/// interpreter and serve. A sandbox made by someone else outlives an
/// emberd: when its emberd goes away between invocations, the agent waits
/// on the socket for the next one and serves it (`Ready` again), as long
/// as nothing binds it to a function. Whatever stops it is said to emberd
/// (`Fatal`) before it exits, and goes to its stderr (the container log).
fn serve_socket(opts: &Options, path: &str) -> Result<(), AgentError> {
    let listener = listen(path)?;
    stop_on_sigterm();
    let mut conn = Conn::accept(&listener, path)?;
    let mut session = match Session::start(opts) {
        Ok(s) => s,
        Err(e) => return Err(conn.fatal(e)),
    };
    loop {
        let ready = FromAgent::Ready(session.ready.clone());
        write_frame(&mut conn.out, &ready).map_err(AgentError::write("ready"))?;
        match session.serve(&mut conn.out, &mut conn.input) {
            Ok(Ended::Disconnected) if session.reusable() => {
                eprintln!("ember-agent: emberd went away; waiting for the next one on {path}");
                conn = Conn::accept(&listener, path)?;
            }
            Ok(_) => return Ok(()),
            Err(e) => return Err(conn.fatal(e)),
        }
    }
}

/// The socket emberd connects to, for root only (emberd is root on the
/// host; the sandbox's code runs as another user).
fn listen(path: &str) -> Result<std::os::unix::net::UnixListener, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let p = || path.to_string();
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|source| SocketError::Listen { path: p(), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| SocketError::Chmod { path: p(), source })?;
    Ok(listener)
}

/// A sandbox made by someone else is stopped by its owner's SIGTERM (the
/// kubelet's StopContainer): the agent is its PID 1, which the kernel
/// shields from signals it has no handler for. Exiting ends every other
/// process of the sandbox (the kernel kills a pid namespace with its
/// init); an invocation running then fails.
fn stop_on_sigterm() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    extern "C" fn on_term(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    let action = SigAction::new(
        SigHandler::Handler(on_term),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only calls _exit.
    if let Err(e) = unsafe { sigaction(Signal::SIGTERM, &action) } {
        eprintln!("ember-agent: handling SIGTERM: {e}");
    }
}

/// One emberd's connection.
struct Conn {
    out: BufWriter<std::os::unix::net::UnixStream>,
    input: BufReader<std::os::unix::net::UnixStream>,
}

impl Conn {
    fn accept(listener: &std::os::unix::net::UnixListener, path: &str) -> Result<Conn, AgentError> {
        let p = || path.to_string();
        let (stream, _) = listener
            .accept()
            .map_err(|source| SocketError::Accept { path: p(), source })?;
        let reader = stream
            .try_clone()
            .map_err(|source| SocketError::Clone { path: p(), source })?;
        Ok(Conn {
            out: BufWriter::new(stream),
            input: BufReader::new(reader),
        })
    }

    /// Tell emberd why the agent stops (best effort), and hand `e` back.
    fn fatal(&mut self, e: AgentError) -> AgentError {
        let message = e.to_string();
        let _ = write_frame(&mut self.out, &FromAgent::Fatal { message });
        e
    }
}

/// A started sandbox: its interpreter ready, its clean state captured.
struct Session {
    interp: Interp,
    /// The clean state every invocation must leave behind.
    baseline: check::Baseline,
    ready: Ready,
}

/// How serving one connection ended.
enum Ended {
    /// emberd asked the agent to stop, or went away during an invocation
    /// (its mounts may still be in place): the sandbox is done.
    Stop,
    /// emberd went away between invocations.
    Disconnected,
}

impl Session {
    /// Start the interpreter and wait until it is ready.
    fn start(opts: &Options) -> Result<Session, AgentError> {
        let mut interp = match opts.language {
            Language::Python => Interp {
                zygote: Some(zygote::Zygote::start(opts)?),
                runner: None,
                function: None,
                bound_baseline: None,
            },
            Language::Node => Interp {
                zygote: None,
                runner: Some(runner::Runner::spawn_node(opts)?),
                function: None,
                bound_baseline: None,
            },
        };
        drop_privileges()?;
        let ready = match (&mut interp.zygote, &mut interp.runner) {
            (Some(zyg), _) => zyg.wait_ready()?,
            (None, Some(r)) => r.wait_ready()?,
            (None, None) => return Err(AgentError::NoInterpreter),
        };
        let baseline = check::Baseline::capture()?;
        Ok(Session {
            interp,
            baseline,
            ready,
        })
    }

    /// Whether another emberd may take the sandbox as a generic one: no
    /// function is bound to it.
    fn reusable(&self) -> bool {
        let runner_bound = self
            .interp
            .runner
            .as_ref()
            .is_some_and(|r| r.bound.is_some());
        self.interp.function.is_none() && !runner_bound
    }

    /// Serve emberd's requests from `input`, answering on `out`.
    fn serve(
        &mut self,
        out: &mut impl io::Write,
        mut input: impl io::Read,
    ) -> Result<Ended, AgentError> {
        let (interp, baseline) = (&mut self.interp, &self.baseline);
        loop {
            let msg: ToAgent = match read_frame(&mut input) {
                Ok(m) => m,
                Err(FrameError::Closed) => return Ok(Ended::Disconnected),
                Err(source) => {
                    return Err(AgentError::Read {
                        what: "request",
                        source,
                    })
                }
            };
            let req = match msg {
                ToAgent::Shutdown => return Ok(Ended::Stop),
                ToAgent::Check | ToAgent::Bind(_) => {
                    return Err(ProtocolError::CheckWithoutInvocation.into());
                }
                ToAgent::Invoke(req) => req,
            };
            let idle = match req.mode {
                Mode::Fork => invoke_fork(interp, baseline, &req, out, &mut input)?,
                Mode::Specialized => invoke_specialized(interp, &req, out, &mut input)?,
            };
            match idle {
                Some(idle) => write_frame(out, &idle).map_err(AgentError::write("idle"))?,
                None => return Ok(Ended::Stop),
            }
        }
    }
}

/// Start the interpreter, then serve emberd's requests from `input`,
/// answering on `out` (emberd holds the agent's stdio: when it goes away,
/// nobody can use this sandbox any more).
fn run(opts: &Options, out: &mut impl io::Write, input: impl io::Read) -> Result<(), AgentError> {
    let mut session = Session::start(opts)?;
    let ready = FromAgent::Ready(session.ready.clone());
    write_frame(out, &ready).map_err(AgentError::write("ready"))?;
    session.serve(out, input).map(|_| ())
}

/// What the daemon says once `/fn` and `/tmp` are handled.
enum AfterInvoke {
    Check,
    Bind(BindRequest),
    /// The daemon is done with this sandbox.
    Stop,
}

fn await_check(input: &mut impl io::Read) -> Result<AfterInvoke, AgentError> {
    match read_frame::<_, ToAgent>(input) {
        Ok(ToAgent::Check) => Ok(AfterInvoke::Check),
        Ok(ToAgent::Bind(req)) => Ok(AfterInvoke::Bind(req)),
        Ok(ToAgent::Shutdown) | Err(FrameError::Closed) => Ok(AfterInvoke::Stop),
        Ok(other) => Err(ProtocolError::ExpectedCheck {
            got: format!("{other:?}"),
        }
        .into()),
        Err(source) => Err(AgentError::Read {
            what: "check",
            source,
        }),
    }
}

fn invoke_fork(
    interp: &mut Interp,
    baseline: &check::Baseline,
    req: &InvokeRequest,
    out: &mut impl io::Write,
    input: &mut impl io::Read,
) -> Result<Option<FromAgent>, AgentError> {
    if interp.runner.is_some() {
        return Err(ProtocolError::ForkInSpecialized.into());
    }
    let bound = interp.function.is_some();
    let zyg = match (&mut interp.function, &mut interp.zygote) {
        (Some((f, fz)), _) if *f == req.function => fz,
        (Some((f, _)), _) => {
            return Err(ProtocolError::WrongFunction {
                bound: f.clone(),
                asked: req.function.clone(),
            }
            .into())
        }
        (None, Some(zyg)) => zyg,
        (None, None) => return Err(ProtocolError::NoZygoteToFork.into()),
    };
    let (result, pending) = worker::run(zyg, req)?;
    write_frame(out, &FromAgent::Result(result)).map_err(AgentError::write("result"))?;
    // While the daemon answers its caller and unmounts the code: sweep what
    // the invocation left, let the next worker warm up. Then, once the
    // daemon says the mounts are gone, check the sandbox is as it was.
    let strays_killed = worker::settle(zyg, pending)?;
    // Nothing of the invocation runs any more: what it left in the IPC
    // namespace goes now (the check below verifies it). Counting is a few
    // syscalls; asking the spare costs a round trip, only paid when there
    // is something to remove.
    if !ipc::leftovers().is_empty() {
        zyg.wait_spare(SPARE_TIMEOUT)?;
        zyg.clean_ipc(SPARE_TIMEOUT)?;
    }
    // Otherwise the next spare forks and warms up while the daemon does
    // its part; `Idle` does not wait for it (the next invocation does, if
    // it comes first). The zygote's children are spares: user code cannot
    // make the zygote fork, and the worker is reaped by now.
    let next = await_check(input)?;
    let keep = zyg.keep_with(zyg.spare.unwrap_or(0));
    let zygote = zyg.pid();
    let belongs = |pid: i32| keep.contains(&pid) || procs::ppid(pid) == Some(zygote);
    let spare = zyg.spare.unwrap_or(0);
    match next {
        AfterInvoke::Stop => Ok(None),
        AfterInvoke::Check => {
            let problems = if bound {
                // The daemon mounted this sandbox's fresh /tmp after the
                // bind, before this first check: that is its clean state.
                if interp.bound_baseline.is_none() {
                    interp.bound_baseline = Some(check::Baseline::capture()?);
                }
                let b = interp
                    .bound_baseline
                    .as_ref()
                    .ok_or(AgentError::NoBoundBaseline)?;
                b.problems_where(belongs, true)
            } else {
                baseline.problems_where(belongs, true)
            };
            Ok(Some(FromAgent::Idle {
                spare_pid: spare as u32,
                strays_killed,
                problems,
            }))
        }
        AfterInvoke::Bind(bind) if !bound => {
            // The bind takes the spare: it must be there.
            let spare = zyg.wait_spare(SPARE_TIMEOUT)?;
            let keep = zyg.keep_with(spare);
            Ok(Some(FromAgent::Bound(bind_function(
                interp, baseline, &keep, &bind,
            )?)))
        }
        AfterInvoke::Bind(_) => Err(ProtocolError::AlreadyBound.into()),
    }
}

/// Check the sandbox is clean (its code still at `/fn`, nothing else
/// new), then make the generic zygote's spare the function's zygote.
fn bind_function(
    interp: &mut Interp,
    baseline: &check::Baseline,
    keep: &[i32],
    req: &BindRequest,
) -> Result<BindReport, AgentError> {
    let problems: Vec<String> = baseline
        .problems(keep, true)
        .into_iter()
        .filter(|p| p != "unexpected mount at /fn")
        .collect();
    if !problems.is_empty() {
        return Ok(BindReport {
            outcome: InitOutcome::NotClean,
            message: problems.join("; "),
            stdout: String::new(),
            stderr: String::new(),
            init_us: 0,
            zygote_pid: 0,
        });
    }
    let zyg = interp
        .zygote
        .as_mut()
        .ok_or(ProtocolError::NoZygoteToBind)?;
    let (report, fz) = function_zygote::bind(zyg, req)?;
    if let Some(fz) = fz {
        interp.function = Some((req.function.clone(), fz));
        interp.bound_baseline = None;
    }
    Ok(report)
}

fn invoke_specialized(
    interp: &mut Interp,
    req: &InvokeRequest,
    out: &mut impl io::Write,
    input: &mut impl io::Read,
) -> Result<Option<FromAgent>, AgentError> {
    if interp.runner.is_none() {
        let zyg = interp
            .zygote
            .as_mut()
            .ok_or(ProtocolError::NoZygoteForRunner)?;
        interp.runner = Some(runner::Runner::bind_python(zyg, &req.profile, req.nproc)?);
    }
    let runner = interp.runner.as_mut().ok_or(AgentError::NoRunner)?;
    match &runner.bound {
        None => {
            if interp.zygote.is_none() && req.profile != "default" {
                // Node starts before any profile is known, under the base
                // filter only; the daemon refuses such deploys already.
                return Err(AgentError::ProfileUnavailable {
                    profile: req.profile.clone(),
                });
            }
            runner.bound = Some(req.function.clone());
            // /fn and /tmp are mounted now and stay until the sandbox goes.
            interp.bound_baseline = Some(check::Baseline::capture()?);
        }
        Some(f) if *f != req.function => {
            return Err(ProtocolError::WrongRunnerFunction {
                bound: f.clone(),
                asked: req.function.clone(),
            }
            .into())
        }
        Some(_) => {}
    }
    let result = runner.invoke(interp.zygote.as_mut(), req)?;
    write_frame(out, &FromAgent::Result(result)).map_err(AgentError::write("result"))?;
    let keep: Vec<i32> = interp
        .zygote
        .as_ref()
        .map(|z| z.pid())
        .into_iter()
        .chain(Some(runner.pid))
        .collect();
    // The runner's children (a handler's subprocesses) do not outlive the
    // invocation either.
    let strays_killed = procs::kill_all_but(&keep);
    if let Some(zyg) = &interp.zygote {
        procs::reap(zyg.pid())?;
    } else {
        procs::reap(-1)?;
    }
    if !matches!(await_check(input)?, AfterInvoke::Check) {
        return Ok(None);
    }
    let mut problems = match &interp.bound_baseline {
        Some(b) => b.problems(&keep, false),
        None => vec!["bound runner without a baseline".to_string()],
    };
    if runner.dead {
        problems.push(format!("runner {} is gone", runner.pid));
    }
    Ok(Some(FromAgent::Idle {
        spare_pid: runner.pid as u32,
        strays_killed,
        problems,
    }))
}
