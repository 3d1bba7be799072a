//! The intersection judged by probing: for each call and argument values,
//! the intersected filter is never looser than either input.

use super::*;
use crate::Profile;

const EPERM: u32 = libc::EPERM as u32;
const EACCES: u32 = libc::EACCES as u32;

fn profile(name: &str) -> Value {
    let p = Profile::by_name(name).unwrap();
    serde_json::to_value(p.oci_seccomp().unwrap()).unwrap()
}

/// What `filter` does to `name` called with `args`, as libseccomp
/// would decide it; fails the test if two matching rules disagree
/// (libseccomp's answer would then depend on rule order).
fn decide(filter: &Value, name: &str, args: [u64; 6]) -> Action {
    let f = Filter::new("test", &Section::parse("test", filter).unwrap()).unwrap();
    let (rules, fallback) = f.view(name);
    let matching: BTreeSet<(u8, &str, u32)> = rules
        .iter()
        .filter(|r| r.conds.iter().all(|c| c.holds(args[c.index])))
        .map(|r| r.action.key())
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {args:?}: ambiguous {matching:?}"
    );
    rules
        .iter()
        .find(|r| r.conds.iter().all(|c| c.holds(args[c.index])))
        .map_or(fallback, |r| r.action)
}

fn call(filter: &Value, name: &str) -> (&'static str, Option<u32>) {
    let a = decide(filter, name, [0; 6]);
    (kind_name(a.kind), a.errno)
}

fn arg0(filter: &Value, name: &str, a0: u64) -> (&'static str, Option<u32>) {
    let a = decide(filter, name, [a0, 0, 0, 0, 0, 0]);
    (kind_name(a.kind), a.errno)
}

const ALLOW: (&str, Option<u32>) = ("SCMP_ACT_ALLOW", None);
const DENY: (&str, Option<u32>) = ("SCMP_ACT_ERRNO", Some(EPERM));

/// The argument values worth trying for `filters`: every compared
/// value, its neighbours, and the extremes.
fn probes(filters: &[&Value]) -> Vec<u64> {
    let mut out = vec![0, 1, u64::MAX];
    for f in filters {
        for r in f["syscalls"].as_array().into_iter().flatten() {
            for a in r["args"].as_array().into_iter().flatten() {
                for key in ["value", "valueTwo"] {
                    let v = a[key].as_u64().unwrap_or(0);
                    out.extend([v, v.wrapping_sub(1), v.wrapping_add(1), v | 0x80]);
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The intersection never lets a call through that either filter
/// refuses, never softens a refusal, and equals the stricter answer
/// wherever that is one of the two (it may be stricter only where a
/// combination cannot be written as a libseccomp rule).
fn assert_never_looser(bundle: &Value, profile: &Value, names: &[&str]) -> Value {
    let out = intersect(bundle, profile).unwrap();
    let section = Section::parse("out", &out).unwrap();
    let default = Action::new(section.default_action, section.default_errno_ret);
    for call in section.syscalls.iter().flatten() {
        let action = Action::new(call.action, call.errno_ret);
        assert_ne!(action, default, "{:?}: the default again", call.names);
    }
    for name in names {
        for a0 in probes(&[bundle, profile]) {
            let args = [a0, 0, 0, 0, 0, 0];
            let want = stricter(decide(bundle, name, args), decide(profile, name, args));
            let got = decide(&out, name, args);
            assert!(
                got.rank() >= want.rank(),
                "{name}({a0:#x}): {got:?} looser than {want:?}"
            );
            if want.rank() == 0 {
                continue;
            }
            assert!(got.rank() > 0, "{name}({a0:#x}) allowed, {want:?} expected");
        }
    }
    out
}

#[test]
fn a_bundles_denial_stands_where_the_profile_allows() {
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let out = assert_never_looser(&bundle, &profile("default"), &["mkdir", "mkdirat", "read"]);
    assert_eq!(
        call(&profile("default"), "mkdir"),
        ALLOW,
        "the profile alone allows it"
    );
    assert_eq!(call(&out, "mkdir"), DENY);
    assert_eq!(call(&out, "mkdirat"), DENY);
    assert_eq!(call(&out, "read"), ALLOW);
}

#[test]
fn a_profiles_denial_stands_where_the_bundle_allows() {
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["ptrace", "read", "mount"], "action": "SCMP_ACT_ALLOW"}]
    });
    let out = assert_never_looser(&bundle, &profile("strict"), &["ptrace", "read", "mount"]);
    assert_eq!(call(&out, "ptrace"), DENY);
    assert_eq!(call(&out, "mount"), DENY);
    assert_eq!(call(&out, "read"), ALLOW);
    assert_eq!(call(&out, "write"), DENY, "the bundle does not list write");
}

#[test]
fn errno_values_of_either_side_are_kept() {
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "syscalls": [
            {"names": ["read", "mkdir", "ptrace"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    });
    let out = assert_never_looser(
        &bundle,
        &profile("strict"),
        &["read", "chmod", "ptrace", "write"],
    );
    // Both default to ERRNO: the bundle's errno on a tie.
    assert_eq!(
        (&out["defaultAction"], &out["defaultErrnoRet"]),
        (&json!("SCMP_ACT_ERRNO"), &json!(38))
    );
    assert_eq!(call(&out, "chmod"), ("SCMP_ACT_ERRNO", Some(EACCES)));
    assert_eq!(
        call(&out, "ptrace"),
        DENY,
        "the profile's EPERM, not the default"
    );
    assert_eq!(call(&out, "write"), ("SCMP_ACT_ERRNO", Some(38)));
    assert_eq!(call(&out, "clone3"), ("SCMP_ACT_ERRNO", Some(38)));
    assert_eq!(call(&out, "read"), ALLOW);
}

#[test]
fn a_default_allow_bundle_with_a_few_denials() {
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["chmod", "fchmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["kill"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getpid"], "action": "SCMP_ACT_LOG"}
        ]
    });
    let p = profile("default");
    let names = [
        "chmod", "fchmod", "ptrace", "kill", "getpid", "read", "mount",
    ];
    let out = assert_never_looser(&bundle, &p, &names);
    assert_eq!(
        out["defaultAction"], "SCMP_ACT_ERRNO",
        "the profile's allow-list"
    );
    assert_eq!(call(&out, "chmod"), ("SCMP_ACT_ERRNO", Some(EACCES)));
    assert_eq!(call(&out, "ptrace"), ("SCMP_ACT_KILL_PROCESS", None));
    assert_eq!(call(&out, "kill"), ("SCMP_ACT_TRAP", None));
    assert_eq!(
        call(&out, "getpid"),
        ("SCMP_ACT_LOG", None),
        "LOG still allows"
    );
    assert_eq!(call(&out, "read"), ALLOW);
    assert_eq!(call(&out, "mount"), DENY);
}

#[test]
fn a_default_kill_is_kept_and_only_what_both_allow_runs() {
    let bundle = json!({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "syscalls": [{"names": ["read", "write", "mount"], "action": "SCMP_ACT_ALLOW"}]
    });
    let out = assert_never_looser(&bundle, &profile("default"), &["read", "mount", "getpid"]);
    assert_eq!(out["defaultAction"], "SCMP_ACT_KILL_PROCESS");
    assert!(out.get("defaultErrnoRet").is_none());
    assert_eq!(call(&out, "read"), ALLOW);
    assert_eq!(
        call(&out, "getpid"),
        ("SCMP_ACT_KILL_PROCESS", None),
        "the bundle does not allow it"
    );
    assert_eq!(
        call(&out, "mount"),
        DENY,
        "the profile's EPERM where the bundle allows"
    );
}

const CLONE_NEWTIME: u64 = 0x80;
/// The profile's refused clone flags: every namespace and CLONE_PARENT.
const NS_MASK: u64 = 0x7E02_8000;

#[test]
fn conditional_clone_rules_combine_into_one_mask() {
    // The bundle refuses new time namespaces, the profile every other.
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NEWTIME, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    });
    let out = assert_never_looser(&bundle, &profile("default"), &["clone"]);
    let clone: Vec<&Value> = out["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"].as_array().unwrap().contains(&json!("clone")))
        .collect();
    assert_eq!(clone.len(), 1, "{clone:?}");
    assert_eq!(
        clone[0]["args"],
        json!([{"index": 0, "value": NS_MASK | CLONE_NEWTIME, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
    );
    assert_eq!(
        arg0(&out, "clone", libc::SIGCHLD as u64),
        ALLOW,
        "a plain fork"
    );
    assert_eq!(arg0(&out, "clone", CLONE_NEWTIME), DENY);
    assert_eq!(arg0(&out, "clone", libc::CLONE_NEWUSER as u64), DENY);
}

#[test]
fn conditional_personality_rules_keep_what_both_allow() {
    // Docker's personality rule for value 0 only; the profile allows five.
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]
    });
    let out = assert_never_looser(&bundle, &profile("default"), &["personality"]);
    assert_eq!(arg0(&out, "personality", 0), ALLOW);
    assert_eq!(
        arg0(&out, "personality", 0x0008),
        DENY,
        "the profile's, not the bundle's"
    );
    // A bundle allowing every personality but one: the profile's five
    // values, less that one.
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_KILL",
            "args": [{"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"}]}]
    });
    let out = assert_never_looser(&bundle, &profile("default"), &["personality"]);
    assert_eq!(arg0(&out, "personality", 0x20000), ("SCMP_ACT_KILL", None));
    assert_eq!(arg0(&out, "personality", 0x0008), ALLOW);
    assert_eq!(arg0(&out, "personality", 0x0004), DENY);
    // strict refuses personality whatever the bundle says.
    let out = assert_never_looser(&bundle, &profile("strict"), &["personality"]);
    assert_eq!(arg0(&out, "personality", 0), DENY);
}

#[test]
fn ranges_of_one_argument_combine_exactly() {
    // socket(a0 >= 2) and socket(a0 in {unix, inet, inet6}): a range
    // against equalities, said exactly by a few rules.
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_GE"}]}]
    });
    let out = assert_never_looser(&bundle, &profile("default"), &["socket"]);
    for (family, want) in [
        (0, DENY),
        (1, DENY),
        (2, ALLOW),
        (10, ALLOW),
        (16, DENY),
        (39, DENY),
        (40, DENY),
    ] {
        assert_eq!(arg0(&out, "socket", family), want, "family {family}");
    }
}

#[test]
fn one_argument_compared_inexpressibly_by_both_is_denied() {
    // socket((a0 & 0xF0) == 0x20) and socket(a0 != AF_VSOCK): a mask
    // and a range of one argument fit no libseccomp rule, so families
    // 32 to 47 are refused although both filters allow all but 40.
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0xF0, "valueTwo": 0x20, "op": "SCMP_CMP_MASKED_EQ"}]}]
    });
    let out = assert_never_looser(&bundle, &profile("default"), &["socket"]);
    for family in [1, 32, 33, 40, 47] {
        assert_eq!(arg0(&out, "socket", family), DENY, "family {family}");
    }
}

#[test]
fn rules_are_read_as_runc_adds_them_to_libseccomp() {
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            // One argument compared twice: runc adds one rule each (OR).
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]},
            // The first unconditional rule of a syscall wins.
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["chmod"], "action": "SCMP_ACT_KILL"},
            // A rule with the default's action is skipped.
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"}
        ]
    });
    let out = intersect(&bundle, &profile("default")).unwrap();
    let kill = |sig| {
        let a = decide(&out, "kill", [1, sig, 0, 0, 0, 0]);
        (kind_name(a.kind), a.errno)
    };
    assert_eq!(kill(9), DENY);
    assert_eq!(kill(15), DENY);
    assert_eq!(kill(10), ALLOW);
    assert_eq!(call(&out, "chmod"), ("SCMP_ACT_ERRNO", Some(EACCES)));
    assert_eq!(call(&out, "read"), ALLOW);
    // Never two comparisons of one argument in an output rule.
    for r in out["syscalls"].as_array().unwrap() {
        let idx: Vec<u64> = r["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["index"].as_u64().unwrap())
            .collect();
        let unique: BTreeSet<&u64> = idx.iter().collect();
        assert_eq!(unique.len(), idx.len(), "{r}");
    }
}

#[test]
fn architectures_intersect_and_flags_unite() {
    let bundle = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/run/agent.sock",
        "syscalls": []
    });
    let mut p = profile("default");
    p["flags"] = json!(["SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"]);
    let out = intersect(&bundle, &p).unwrap();
    assert_eq!(out["architectures"], json!(["SCMP_ARCH_X86_64"]));
    assert_eq!(
        out["flags"],
        json!(["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])
    );
    assert_eq!(out["listenerPath"], "/run/agent.sock");
    // No list: runc filters the native architecture only.
    let out = intersect(&json!({"defaultAction": "SCMP_ACT_ALLOW"}), &p).unwrap();
    assert!(out.get("architectures").is_none(), "{out}");
}

#[test]
fn bad_bundle_filters_are_named() {
    let e = intersect(
        &json!({"defaultAction": "SCMP_ACT_MAYBE"}),
        &profile("default"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bundle") && e.contains("SCMP_ACT_MAYBE"), "{e}");
    let bad = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
        "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]});
    let e = intersect(&bad, &profile("default"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"kill\"") && e.contains('6'), "{e}");
}

#[test]
fn the_profiles_own_filter_survives_intersection_with_itself() {
    for name in crate::PROFILE_NAMES {
        let p = profile(name);
        let out = assert_never_looser(
            &p,
            &p,
            &["clone", "clone3", "socket", "personality", "read"],
        );
        for (n, a0) in [("clone", 0x11), ("socket", 1), ("read", 0)] {
            assert_eq!(arg0(&out, n, a0), arg0(&p, n, a0), "{name}: {n}({a0})");
        }
        assert_eq!(
            call(&out, "clone3"),
            ("SCMP_ACT_ERRNO", Some(libc::ENOSYS as u32))
        );
    }
}
