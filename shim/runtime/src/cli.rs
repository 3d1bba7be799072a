//! The command line, in runc's shape, parsed with youki's `liboci-cli`
//! (so a malformed call is refused in the same terms), plus ember's own
//! `--ember-profile`.

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::Path;

/// runc subcommands `liboci-cli` does not parse as runc does (it spells
/// `checkpoint` `checkpointt`, and lacks some of runc's flags): they go to
/// the delegate unparsed, as they came. ember has nothing to do there.
pub const PASSTHROUGH: &[&str] = &["checkpoint"];

/// runc's global flags that take a value (as `--flag value`), and ember's.
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    "--log",
    "-l",
    "--log-format",
    "--root",
    "-r",
    "--criu",
    "--rootless",
    "--ember-profile",
];

/// The subcommand of a runc-shaped command line (`args` without the
/// program name): the first argument that is not a global flag or its
/// value.
pub fn subcommand(args: &[OsString]) -> Option<&str> {
    let mut skip = false;
    for a in args {
        let a = a.to_str()?;
        if skip {
            skip = false;
        } else if a.starts_with('-') {
            skip = GLOBAL_VALUE_FLAGS.contains(&a);
        } else {
            return Some(a);
        }
    }
    None
}

/// Whether `args` (without the program name) go to the delegate
/// unparsed (see [`PASSTHROUGH`]).
pub fn is_passthrough(args: &[OsString]) -> bool {
    subcommand(args).is_some_and(|c| PASSTHROUGH.contains(&c))
}

/// The command line, in runc's shape.
#[derive(Debug, Parser)]
#[command(
    name = "ember-runtime",
    version,
    about = "OCI runtime for containerd and Docker: runc's command line, ember's sandbox profiles",
    long_about = "Takes runc's command line (global flags, then create, start, state, kill, \
delete, pause, resume, exec, ps, features, spec, ...). On create and run, a bundle whose \
config.json carries the annotation dev.ember.profile=<default|strict> (or, without it, \
--ember-profile) gets that ember profile, which only takes permissions away: its seccomp \
allow-list intersected with the bundle's filter, capabilities reduced to the profile's, \
no_new_privileges, masked paths; the container needs its own mount namespace. Processes \
exec'd into such a container get no more capabilities and no_new_privileges. Without the \
annotation the bundle is left as it is. Then the delegate runtime runs with the same \
arguments: runc, or what EMBER_RUNTIME_DELEGATE or the [ember_runtime] section of \
/etc/ember/ember.toml names (see docs/containerd.md)."
)]
pub struct RuntimeCli {
    #[command(flatten)]
    pub global: liboci_cli::GlobalOpts,
    /// ember profile for bundles without a `dev.ember.profile` annotation
    /// (for callers that cannot set annotations, e.g. Docker's
    /// `runtimeArgs`); not passed on to the delegate.
    #[arg(long = "ember-profile", global = true, value_name = "PROFILE")]
    pub ember_profile: Option<String>,
    #[command(subcommand)]
    pub command: RuntimeCommand,
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    #[command(flatten)]
    Standard(Box<liboci_cli::StandardCmd>),
    #[command(flatten)]
    Common(Box<liboci_cli::CommonCmd>),
}

impl RuntimeCommand {
    /// The bundle whose config a profile may change (`create`, `run`).
    pub fn bundle(&self) -> Option<&Path> {
        match self {
            RuntimeCommand::Standard(c) => match c.as_ref() {
                liboci_cli::StandardCmd::Create(c) => Some(&c.bundle),
                _ => None,
            },
            RuntimeCommand::Common(c) => match c.as_ref() {
                liboci_cli::CommonCmd::Run(r) => Some(&r.bundle),
                _ => None,
            },
        }
    }
}

impl RuntimeCommand {
    /// The options of an `exec`.
    pub fn exec(&self) -> Option<&liboci_cli::Exec> {
        match self {
            RuntimeCommand::Common(c) => match c.as_ref() {
                liboci_cli::CommonCmd::Exec(e) => Some(e),
                _ => None,
            },
            RuntimeCommand::Standard(_) => None,
        }
    }

    /// The container `start` starts (after which a sandbox registers).
    pub fn started(&self) -> Option<&str> {
        match self.standard()? {
            liboci_cli::StandardCmd::Start(s) => Some(&s.container_id),
            _ => None,
        }
    }

    /// The container `kill` signals.
    pub fn killed(&self) -> Option<&str> {
        match self.standard()? {
            liboci_cli::StandardCmd::Kill(k) => Some(&k.container_id),
            _ => None,
        }
    }

    /// The container `delete` removes.
    pub fn deleted(&self) -> Option<&str> {
        match self.standard()? {
            liboci_cli::StandardCmd::Delete(d) => Some(&d.container_id),
            _ => None,
        }
    }

    /// The container `create` or `run` makes, with its bundle.
    pub fn created(&self) -> Option<(&Path, &str)> {
        match self {
            RuntimeCommand::Standard(c) => match c.as_ref() {
                liboci_cli::StandardCmd::Create(c) => Some((&c.bundle, &c.container_id)),
                _ => None,
            },
            RuntimeCommand::Common(c) => match c.as_ref() {
                liboci_cli::CommonCmd::Run(r) => Some((&r.bundle, &r.container_id)),
                _ => None,
            },
        }
    }

    /// `create` (not `run`).
    pub fn is_create(&self) -> bool {
        matches!(self.standard(), Some(liboci_cli::StandardCmd::Create(_)))
    }

    fn standard(&self) -> Option<&liboci_cli::StandardCmd> {
        match self {
            RuntimeCommand::Standard(c) => Some(c.as_ref()),
            RuntimeCommand::Common(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_has_runcs_shape() {
        let cli = RuntimeCli::try_parse_from([
            "ember-runtime",
            "--root",
            "/run/containerd/runc/k8s.io",
            "--log",
            "/run/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/run/x",
            "--pid-file",
            "/run/x/init.pid",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.global.log_format.as_deref(), Some("json"));
        assert!(cli.global.systemd_cgroup);
        assert_eq!(cli.command.bundle(), Some(Path::new("/run/x")));
        for args in [
            vec!["ember-runtime", "state", "c1"],
            vec!["ember-runtime", "kill", "c1", "9"],
            vec!["ember-runtime", "kill", "--all", "c1", "KILL"],
            vec!["ember-runtime", "delete", "--force", "c1"],
            vec!["ember-runtime", "pause", "c1"],
            vec!["ember-runtime", "resume", "c1"],
            vec!["ember-runtime", "ps", "--format", "json", "c1"],
            vec!["ember-runtime", "features"],
            vec![
                "ember-runtime",
                "exec",
                "--process",
                "/tmp/p.json",
                "--detach",
                "--pid-file",
                "/tmp/p.pid",
                "c1",
            ],
        ] {
            let cli = RuntimeCli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.command.bundle(), None, "{args:?}");
        }
        let cli = RuntimeCli::try_parse_from([
            "ember-runtime",
            "--ember-profile",
            "strict",
            "--root",
            "/r",
            "create",
            "--bundle",
            "/b",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.ember_profile.as_deref(), Some("strict"));
        assert!(RuntimeCli::try_parse_from(["ember-runtime", "frobnicate", "c1"]).is_err());
        assert!(RuntimeCli::try_parse_from(["ember-runtime", "create"]).is_err());
    }

    #[test]
    fn the_containers_of_kill_delete_and_create_are_found() {
        let parse = |args: &[&str]| RuntimeCli::try_parse_from(args).unwrap().command;
        let c = parse(&["ember-runtime", "kill", "--all", "c1", "TERM"]);
        assert_eq!((c.killed(), c.deleted()), (Some("c1"), None));
        let c = parse(&["ember-runtime", "delete", "--force", "c2"]);
        assert_eq!((c.killed(), c.deleted()), (None, Some("c2")));
        let c = parse(&["ember-runtime", "create", "--bundle", "/b", "c3"]);
        assert_eq!(c.created(), Some((Path::new("/b"), "c3")));
        let c = parse(&["ember-runtime", "run", "--bundle", "/b", "c4"]);
        assert_eq!(c.created(), Some((Path::new("/b"), "c4")));
        assert_eq!(parse(&["ember-runtime", "state", "c1"]).created(), None);
    }

    #[test]
    fn checkpoint_goes_to_the_delegate_unparsed() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        for line in [
            vec!["checkpoint", "--image-path", "/x", "c1"],
            vec!["--root", "/r", "--log", "/l", "checkpoint", "--help"],
            vec![
                "--root=/r",
                "--debug",
                "--systemd-cgroup",
                "checkpoint",
                "c1",
            ],
            vec![
                "--ember-profile",
                "strict",
                "checkpoint",
                "--lazy-pages",
                "c1",
            ],
        ] {
            assert!(is_passthrough(&args(&line)), "{line:?}");
        }
        for line in [
            vec!["--root", "checkpoint", "state", "c1"],
            vec!["state", "checkpoint"],
            vec!["--debug"],
        ] {
            assert!(!is_passthrough(&args(&line)), "{line:?}");
        }
        assert_eq!(subcommand(&args(&["-r", "/r", "kill", "c1"])), Some("kill"));
    }
}
