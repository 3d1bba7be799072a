//! Intersecting a container's own seccomp filter with a profile's, so that
//! applying a profile only ever takes permissions away.
//!
//! Both filters are OCI `linux.seccomp` sections read the way runc builds
//! them with libseccomp: a default action, then per syscall either one
//! unconditional action or rules whose argument comparisons must all hold.
//! The result allows a call only where both filters allow it; where either
//! refuses, its refusal (action and errno) stands; where both refuse, the
//! stricter action wins (`KILL_PROCESS` > `KILL`/`KILL_THREAD` > `TRAP` >
//! `ERRNO` > `TRACE`/`NOTIFY` > `LOG`/`ALLOW`, the bundle's on a tie).
//! Architectures are the intersection, flags the union.
//!
//! ```
//! use ember_profiles::intersect::intersect;
//! use serde_json::json;
//! let bundle = json!({"defaultAction": "SCMP_ACT_ALLOW",
//!     "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]});
//! let profile = json!({"defaultAction": "SCMP_ACT_ERRNO",
//!     "syscalls": [{"names": ["mkdir", "read"], "action": "SCMP_ACT_ALLOW"}]});
//! let both = intersect(&bundle, &profile).unwrap();
//! assert_eq!(both["defaultAction"], "SCMP_ACT_ERRNO");
//! assert!(both["syscalls"].as_array().unwrap().iter()
//!     .any(|r| r["names"] == json!(["mkdir"]) && r["errnoRet"] == 13));
//! ```

mod action;
mod args;
mod combine;
mod error;
mod filter;
mod render;
#[cfg(test)]
mod tests;

use action::{kind_name, stricter, Action};
use combine::combine;
pub use error::IntersectError;
use filter::{Filter, Section};
use render::render;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The filter allowing what both `bundle` and `profile` allow (see the
/// module doc), as an OCI `linux.seccomp` section.
pub fn intersect(bundle: &Value, profile: &Value) -> Result<Value, IntersectError> {
    let b = Section::parse("bundle", bundle)?;
    let p = Section::parse("profile", profile)?;
    let (bf, pf) = (Filter::new("bundle", &b)?, Filter::new("profile", &p)?);
    let default = stricter(bf.default, pf.default);
    let names: BTreeSet<&String> = bf.calls.keys().chain(pf.calls.keys()).collect();
    let outcomes = names.into_iter().map(|name| {
        (
            name.as_str(),
            combine(bf.view(name), pf.view(name), default),
        )
    });
    let mut out = header(default, &b, &p, bundle);
    out["syscalls"] = json!(render(outcomes));
    Ok(out)
}

/// Everything of the intersected section but its rules.
fn header(default: Action, b: &Section, p: &Section, bundle: &Value) -> Value {
    let mut out = json!({ "defaultAction": kind_name(default.kind) });
    if let Some(errno) = default.errno {
        out["defaultErrnoRet"] = json!(errno);
    }
    if let Some(archs) = architectures(&b.architectures, &p.architectures) {
        out["architectures"] = json!(archs);
    }
    let flags = union(&b.flags, &p.flags);
    if !flags.is_empty() {
        out["flags"] = json!(flags);
    }
    // Only the bundle can have SCMP_ACT_NOTIFY rules, and their agent.
    for key in ["listenerPath", "listenerMetadata"] {
        if let Some(v) = bundle.get(key).filter(|v| !v.is_null()) {
            out[key] = v.clone();
        }
    }
    out
}

/// runc always filters the native architecture and adds the listed ones;
/// without a list on either side, only the native one is left.
fn architectures(b: &Option<Vec<String>>, p: &Option<Vec<String>>) -> Option<Vec<String>> {
    let (b, p) = (
        b.as_deref().unwrap_or_default(),
        p.as_deref().unwrap_or_default(),
    );
    let both: Vec<String> = p.iter().filter(|a| b.contains(a)).cloned().collect();
    (!both.is_empty()).then_some(both)
}

fn union(b: &Option<Vec<String>>, p: &Option<Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in b.iter().chain(p).flatten() {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    out
}
