//! `ember-runtime`: runc's command line with ember's sandbox profiles, for
//! containerd (runc v2 shim, `BinaryName`) and Docker (`--runtime`). See
//! `ember_shim::oci_runtime` and docs/containerd.md.

use clap::Parser;
use ember_shim::config_file::ConfigFile;
use ember_shim::oci_runtime::{
    apply_profile_to_bundle, emberd_socket, register_if_sandbox, report_error, Delegate,
    RuntimeCli, RuntimeCliError,
};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = RuntimeCli::try_parse_from(&args).unwrap_or_else(|e| e.exit());
    let file = ConfigFile::load_from_env().unwrap_or_else(|e| {
        report_error(&cli.global, &e.to_string());
        std::process::exit(1)
    });
    if let Some(bundle) = cli.command.bundle() {
        if let Err(e) = apply_profile_to_bundle(bundle, cli.ember_profile.as_deref()) {
            report_error(&cli.global, &e.to_string());
            std::process::exit(1);
        }
    }
    let delegate = Delegate::configured(&file);
    if let Some(id) = cli.command.started() {
        // `start` runs as a child: once the container runs, an ember
        // sandbox registers with emberd (which connects to its agent).
        let status = std::process::Command::new(&delegate.binary)
            .args(delegate.argv(&args[1..]))
            .status()
            .unwrap_or_else(|source| {
                let e = RuntimeCliError::Exec {
                    binary: delegate.binary.clone(),
                    source,
                };
                report_error(&cli.global, &e.to_string());
                std::process::exit(127)
            });
        if !status.success() {
            std::process::exit(status.code().unwrap_or(1));
        }
        let registered = delegate
            .state(&cli.global, id)
            .map_err(|message| RuntimeCliError::Register {
                id: id.to_string(),
                socket: emberd_socket(),
                message,
            })
            .and_then(|state| register_if_sandbox(&state, &emberd_socket()));
        if let Err(e) = registered {
            report_error(&cli.global, &e.to_string());
            std::process::exit(1);
        }
        return;
    }
    // Replace this process: the delegate's exit code, output and pid are
    // what the caller sees.
    let source = std::process::Command::new(&delegate.binary)
        .args(delegate.argv(&args[1..]))
        .exec();
    let e = RuntimeCliError::Exec {
        binary: delegate.binary,
        source,
    };
    report_error(&cli.global, &e.to_string());
    std::process::exit(127);
}
