//! `ember-runtime`: runc's command line with ember's sandbox profiles, for
//! containerd (runc v2 shim, `BinaryName`) and Docker (`--runtime`). See
//! the `ember_oci_runtime` library and docs/containerd.md.

use clap::Parser;
use ember_api::config_file::ConfigFile;
use ember_oci_runtime::cli::is_passthrough;
use ember_oci_runtime::exec::{self, ExecPlan};
use ember_oci_runtime::thaw::thaw_sandbox;
use ember_oci_runtime::{
    apply_profile_to_bundle, emberd_socket, register_if_sandbox, report_error, sandbox_dir,
    Delegate, RuntimeCli, RuntimeCliError, SandboxDir,
};
use liboci_cli::GlobalOpts;
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::ExitStatus;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if is_passthrough(&args[1..]) {
        pass_through(&args[1..]);
    }
    let cli = RuntimeCli::try_parse_from(&args).unwrap_or_else(|e| e.exit());
    let file = ConfigFile::load_from_env().unwrap_or_else(|e| fail(&cli.global, &e.to_string()));
    let delegate = Delegate::configured(&file);
    let global = &cli.global;
    let dir_of = |id: &str| SandboxDir::of(&sandbox_dir::base(), global.root.as_deref(), id);
    if let Some((bundle, id)) = cli.command.created() {
        let dir = dir_of(id);
        prepare(&cli, bundle, &dir);
        if dir.exists() && cli.command.is_create() {
            create_sandbox(global, &delegate, &args[1..], &dir);
        }
    }
    if let Some(id) = cli.command.started() {
        start_and_register(global, &delegate, &args[1..], id, &dir_of(id));
        return;
    }
    // Only an ember sandbox has a sandbox directory.
    let sandbox = |id: &str| Some(dir_of(id)).filter(SandboxDir::exists);
    if let Some((id, dir)) = cli
        .command
        .deleted()
        .and_then(|id| Some((id, sandbox(id)?)))
    {
        delete_sandbox(global, &delegate, &args[1..], id, &dir);
    }
    let target = cli
        .command
        .killed()
        .or(cli.command.exec().map(|e| e.container_id.as_str()));
    if let Some((id, dir)) = target.and_then(|id| Some((id, sandbox(id)?))) {
        thaw(global, id, &dir);
    }
    let caller = match cli.command.exec() {
        Some(e) => exec_args(&cli, &delegate, e, &args[1..]),
        None => args[1..].to_vec(),
    };
    let e = replace_with_delegate(delegate, &caller);
    report_error(global, &e.to_string());
    std::process::exit(127);
}

/// Apply the profile (and the sandbox rewrite) the bundle asks for.
fn prepare(cli: &RuntimeCli, bundle: &Path, dir: &SandboxDir) {
    if let Err(e) = apply_profile_to_bundle(bundle, cli.ember_profile.as_deref(), dir) {
        // A refused sandbox leaves no directory behind.
        let _ = dir.remove();
        fail(&cli.global, &e.to_string());
    }
}

/// `create` of an ember sandbox runs as a child: a failed create leaves
/// no sandbox directory behind.
fn create_sandbox(
    global: &GlobalOpts,
    delegate: &Delegate,
    caller: &[OsString],
    dir: &SandboxDir,
) -> ! {
    let status = run(global, delegate, caller);
    if !status.success() {
        let _ = dir.remove();
    }
    exit_like(status)
}

/// `delete` of an ember sandbox runs as a child: once the container is
/// gone, so is its sandbox directory (the agent's socket).
fn delete_sandbox(
    global: &GlobalOpts,
    delegate: &Delegate,
    caller: &[OsString],
    id: &str,
    dir: &SandboxDir,
) -> ! {
    let status = run(global, delegate, caller);
    if status.success() || delegate.state(global, id).is_err() {
        if let Err(e) = dir.remove() {
            report_error(global, &e.to_string());
        }
    }
    exit_like(status)
}

/// Before `exec` or `kill` of an ember sandbox: thaw it (see
/// `ember_oci_runtime::thaw`). A failure is reported, and the delegate
/// runs anyway: its own error says the rest.
fn thaw(global: &GlobalOpts, id: &str, dir: &SandboxDir) {
    if let Err(e) = thaw_sandbox(id, dir, &emberd_socket()) {
        report_error(global, &e.to_string());
    }
}

/// The delegate's arguments for an `exec`, restricted to the container's
/// profile (the restricted process file, if any, is removed once the
/// delegate returned: this waits for it and exits).
fn exec_args(
    cli: &RuntimeCli,
    delegate: &Delegate,
    e: &liboci_cli::Exec,
    caller: &[OsString],
) -> Vec<OsString> {
    match exec::plan(delegate, cli, e) {
        Err(e) => fail(&cli.global, &e.to_string()),
        Ok(ExecPlan::Unchanged) => caller.to_vec(),
        Ok(ExecPlan::Restricted {
            args,
            process: None,
        }) => args,
        Ok(ExecPlan::Restricted {
            args,
            process: Some(copy),
        }) => {
            // The restricted process file must exist until the delegate
            // has read it (runsc's `--detach` reads it in a child), and go
            // afterwards: wait, then remove it.
            let status = run(&cli.global, delegate, &args);
            drop(copy);
            exit_like(status)
        }
    }
}

/// Replace this process with the delegate: its exit code, output and pid
/// are what the caller sees. Returns only if it could not.
fn replace_with_delegate(delegate: Delegate, caller: &[OsString]) -> RuntimeCliError {
    let source = std::process::Command::new(&delegate.binary)
        .args(delegate.argv(caller))
        .exec();
    RuntimeCliError::Exec {
        binary: delegate.binary,
        source,
    }
}

/// A subcommand `liboci-cli` cannot parse as runc does (`checkpoint`):
/// straight to the delegate, unparsed.
fn pass_through(caller: &[OsString]) -> ! {
    let file = ConfigFile::load_from_env().unwrap_or_else(|e| {
        eprintln!("ember-runtime: {e}");
        std::process::exit(1)
    });
    let e = replace_with_delegate(Delegate::configured(&file), caller);
    eprintln!("ember-runtime: {e}");
    std::process::exit(127)
}

/// `start` runs as a child: once the container runs, an ember sandbox
/// registers with emberd (which connects to its agent).
fn start_and_register(
    global: &GlobalOpts,
    delegate: &Delegate,
    caller: &[OsString],
    id: &str,
    dir: &SandboxDir,
) {
    let status = run(global, delegate, caller);
    if !status.success() {
        exit_like(status);
    }
    let registered = delegate
        .state(global, id)
        .map_err(|e| RuntimeCliError::Register {
            id: id.to_string(),
            socket: emberd_socket(),
            source: Box::new(e.into()),
        })
        .and_then(|state| register_if_sandbox(&state, &emberd_socket(), dir));
    if let Err(e) = registered {
        fail(global, &e.to_string());
    }
}

/// Run the delegate with `caller`'s arguments and wait for it.
fn run(global: &GlobalOpts, delegate: &Delegate, caller: &[OsString]) -> ExitStatus {
    std::process::Command::new(&delegate.binary)
        .args(delegate.argv(caller))
        .status()
        .unwrap_or_else(|source| {
            let e = RuntimeCliError::Exec {
                binary: delegate.binary.clone(),
                source,
            };
            report_error(global, &e.to_string());
            std::process::exit(127)
        })
}

/// Exit as the delegate did (a signal as the shell reports it, 128 + n).
fn exit_like(status: ExitStatus) -> ! {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    std::process::exit(code)
}

fn fail(global: &GlobalOpts, message: &str) -> ! {
    report_error(global, message);
    std::process::exit(1)
}
