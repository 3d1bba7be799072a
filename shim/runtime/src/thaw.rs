//! Before an `exec` into or a `kill` of a container that is an adopted
//! sandbox: thaw it. emberd keeps idle sandboxes frozen, and in a frozen
//! cgroup runc refuses to exec ("cannot exec in a paused container") and
//! signals wait (the kubelet's StopContainer would sit out its whole grace
//! period, its probes would fail).
//!
//! emberd is asked first (`POST /v1/sandboxes/{id}/thaw`): it thaws the
//! sandbox and never freezes it again, so an exec'd process (a shell, a
//! probe) is never frozen under its feet. If emberd cannot be reached, or
//! does not have the sandbox, the container's cgroup is thawed directly
//! (the freezer path `start` kept in its sandbox directory); an emberd that
//! takes it back later freezes it again.

use crate::emberd::post;
use crate::sandbox_dir::SandboxDir;
use ember_runtimes::cgroup::CgroupLayout;
use std::path::Path;
use std::time::Duration;

/// How long emberd may take to thaw (a write to the cgroup's freezer).
const THAW_WITHIN: Duration = Duration::from_secs(5);

/// How the sandbox was thawed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thawed {
    /// By emberd, which keeps it thawed.
    ByEmberd,
    /// Through its cgroup, because emberd did not (`why`).
    Directly { why: String },
    /// It never registered (no cgroup kept): nobody froze it.
    NeverRegistered,
}

/// The sandbox's cgroup could not be thawed.
#[derive(Debug, thiserror::Error)]
#[error("thawing sandbox {id} through its cgroup {cgroup} (emberd did not: {why}): {source}")]
pub struct ThawError {
    id: String,
    cgroup: String,
    why: String,
    source: Box<ember_runtimes::RuntimeError>,
}

/// Thaw adopted sandbox `id` (its directory `dir`), through emberd at
/// `socket` if it answers, else directly.
pub fn thaw_sandbox(id: &str, dir: &SandboxDir, socket: &Path) -> Result<Thawed, ThawError> {
    let why = match post(
        socket,
        &format!("/v1/sandboxes/{id}/thaw"),
        String::new(),
        THAW_WITHIN,
    ) {
        Ok(a) if a.status.is_success() => return Ok(Thawed::ByEmberd),
        Ok(a) => a.error_message(),
        Err(e) => e.to_string(),
    };
    let Some(cgroup) = dir.cgroup() else {
        return Ok(Thawed::NeverRegistered);
    };
    CgroupLayout::detect()
        .freezer(&cgroup)
        .and_then(|f| f.thaw())
        .map(|()| Thawed::Directly { why: why.clone() })
        .map_err(|source| ThawError {
            id: id.to_string(),
            cgroup,
            why,
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_emberd_or_a_registration_nothing_is_thawed() {
        let base = tempfile::tempdir().unwrap();
        let dir = SandboxDir::of(base.path(), None, "c1");
        dir.create().unwrap();
        let nowhere = base.path().join("no.sock");
        assert_eq!(
            thaw_sandbox("c1", &dir, &nowhere).unwrap(),
            Thawed::NeverRegistered
        );
    }
}
