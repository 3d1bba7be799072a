//! What a filter does to a call, how strict that is, and the names OCI
//! gives actions and comparison operators.

use oci_spec::runtime::{LinuxSeccompAction as Kind, LinuxSeccompOperator as Op};

/// What a filter does to a call: the action, and the errno (or tracer
/// value) for `ERRNO` and `TRACE`, `EPERM` when unset as in runc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Action {
    pub(super) kind: Kind,
    pub(super) errno: Option<u32>,
}

impl Action {
    pub(super) fn new(kind: Kind, errno: Option<u32>) -> Action {
        // runc compiles KILL and KILL_THREAD alike.
        let kind = match kind {
            Kind::ScmpActKillThread => Kind::ScmpActKill,
            k => k,
        };
        let errno = match kind {
            Kind::ScmpActErrno | Kind::ScmpActTrace => Some(errno.unwrap_or(libc::EPERM as u32)),
            _ => None,
        };
        Action { kind, errno }
    }

    pub(super) fn rank(self) -> u8 {
        match self.kind {
            Kind::ScmpActAllow | Kind::ScmpActLog => 0,
            // A tracer or a seccomp agent decides: it may let the call run.
            Kind::ScmpActTrace | Kind::ScmpActNotify => 1,
            Kind::ScmpActErrno => 2,
            Kind::ScmpActTrap => 3,
            Kind::ScmpActKill | Kind::ScmpActKillThread => 4,
            Kind::ScmpActKillProcess => 5,
        }
    }

    /// A total order for grouping the output (rank first).
    pub(super) fn key(self) -> (u8, &'static str, u32) {
        (self.rank(), kind_name(self.kind), self.errno.unwrap_or(0))
    }
}

/// The stricter of the bundle's and the profile's action; on a tie (the
/// same rank, e.g. two errnos) the bundle's, whose author chose it.
pub(super) fn stricter(bundle: Action, profile: Action) -> Action {
    if profile.rank() > bundle.rank() {
        profile
    } else {
        bundle
    }
}

pub(super) fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::ScmpActKill => "SCMP_ACT_KILL",
        Kind::ScmpActKillThread => "SCMP_ACT_KILL_THREAD",
        Kind::ScmpActKillProcess => "SCMP_ACT_KILL_PROCESS",
        Kind::ScmpActTrap => "SCMP_ACT_TRAP",
        Kind::ScmpActErrno => "SCMP_ACT_ERRNO",
        Kind::ScmpActNotify => "SCMP_ACT_NOTIFY",
        Kind::ScmpActTrace => "SCMP_ACT_TRACE",
        Kind::ScmpActLog => "SCMP_ACT_LOG",
        Kind::ScmpActAllow => "SCMP_ACT_ALLOW",
    }
}

pub(super) fn op_name(op: Op) -> &'static str {
    match op {
        Op::ScmpCmpNe => "SCMP_CMP_NE",
        Op::ScmpCmpLt => "SCMP_CMP_LT",
        Op::ScmpCmpLe => "SCMP_CMP_LE",
        Op::ScmpCmpEq => "SCMP_CMP_EQ",
        Op::ScmpCmpGe => "SCMP_CMP_GE",
        Op::ScmpCmpGt => "SCMP_CMP_GT",
        Op::ScmpCmpMaskedEq => "SCMP_CMP_MASKED_EQ",
    }
}
