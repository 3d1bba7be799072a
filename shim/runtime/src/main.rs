//! `ember-runtime`: runc's command line with ember's sandbox profiles, for
//! containerd (runc v2 shim, `BinaryName`) and Docker (`--runtime`). See
//! the `ember_oci_runtime` library and docs/containerd.md.

use clap::Parser;
use ember_api::config_file::ConfigFile;
use ember_oci_runtime::exec::{self, ExecPlan};
use ember_oci_runtime::{
    apply_profile_to_bundle, emberd_socket, register_if_sandbox, report_error, Delegate,
    RuntimeCli, RuntimeCliError,
};
use liboci_cli::GlobalOpts;
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitStatus;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = RuntimeCli::try_parse_from(&args).unwrap_or_else(|e| e.exit());
    let file = ConfigFile::load_from_env().unwrap_or_else(|e| fail(&cli.global, &e.to_string()));
    if let Some(bundle) = cli.command.bundle() {
        if let Err(e) = apply_profile_to_bundle(bundle, cli.ember_profile.as_deref()) {
            fail(&cli.global, &e.to_string());
        }
    }
    let delegate = Delegate::configured(&file);
    if let Some(id) = cli.command.started() {
        start_and_register(&cli.global, &delegate, &args[1..], id);
        return;
    }
    let caller = match cli.command.exec() {
        Some(e) => match exec::plan(&delegate, &cli, e) {
            Err(e) => fail(&cli.global, &e.to_string()),
            Ok(ExecPlan::Unchanged) => args[1..].to_vec(),
            Ok(ExecPlan::Restricted {
                args,
                process: None,
            }) => args,
            Ok(ExecPlan::Restricted {
                args,
                process: Some(copy),
            }) => {
                // The restricted process file must exist until the
                // delegate has read it (runsc's `--detach` reads it in a
                // child), and go afterwards: wait, then remove it.
                let status = run(&cli.global, &delegate, &args);
                drop(copy);
                exit_like(status)
            }
        },
        None => args[1..].to_vec(),
    };
    // Replace this process: the delegate's exit code, output and pid are
    // what the caller sees.
    let source = std::process::Command::new(&delegate.binary)
        .args(delegate.argv(&caller))
        .exec();
    let e = RuntimeCliError::Exec {
        binary: delegate.binary,
        source,
    };
    report_error(&cli.global, &e.to_string());
    std::process::exit(127);
}

/// `start` runs as a child: once the container runs, an ember sandbox
/// registers with emberd (which connects to its agent).
fn start_and_register(global: &GlobalOpts, delegate: &Delegate, caller: &[OsString], id: &str) {
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
        .and_then(|state| register_if_sandbox(&state, &emberd_socket()));
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
