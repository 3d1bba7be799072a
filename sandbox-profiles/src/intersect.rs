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

mod args;

use args::{Cond, Conj};
use oci_spec::runtime::{LinuxSeccompAction as Kind, LinuxSeccompOperator as Op};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum IntersectError {
    #[error("the {side}'s linux.seccomp is not a valid OCI seccomp section: {source}")]
    Parse {
        side: &'static str,
        source: serde_json::Error,
    },
    #[error("the {side}'s seccomp rule for {syscall:?} compares argument {index}; syscalls have arguments 0 to 5")]
    ArgIndex {
        side: &'static str,
        syscall: String,
        index: usize,
    },
}

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

/// An OCI `linux.seccomp` section, as far as runc reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Section {
    default_action: Kind,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    syscalls: Option<Vec<Syscall>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    names: Vec<String>,
    action: Kind,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: Op,
}

impl Section {
    fn parse(side: &'static str, v: &Value) -> Result<Section, IntersectError> {
        Section::deserialize(v).map_err(|source| IntersectError::Parse { side, source })
    }
}

/// What a filter does to a call: the action, and the errno (or tracer
/// value) for `ERRNO` and `TRACE`, `EPERM` when unset as in runc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Action {
    kind: Kind,
    errno: Option<u32>,
}

impl Action {
    fn new(kind: Kind, errno: Option<u32>) -> Action {
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

    fn rank(self) -> u8 {
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
    fn key(self) -> (u8, &'static str, u32) {
        (self.rank(), kind_name(self.kind), self.errno.unwrap_or(0))
    }
}

/// The stricter of the bundle's and the profile's action; on a tie (the
/// same rank, e.g. two errnos) the bundle's, whose author chose it.
fn stricter(bundle: Action, profile: Action) -> Action {
    if profile.rank() > bundle.rank() {
        profile
    } else {
        bundle
    }
}

fn kind_name(kind: Kind) -> &'static str {
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

fn op_name(op: Op) -> &'static str {
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

/// A rule's condition: all comparisons hold (at most one per argument).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    conds: Vec<Cond>,
    action: Action,
}

/// A syscall's rules in one filter.
#[derive(Debug, Clone)]
enum Calls {
    Always(Action),
    /// Where no rule matches, the filter's default action.
    Rules(Vec<Rule>),
}

/// One filter as libseccomp sees it once runc has added its rules.
struct Filter {
    default: Action,
    calls: BTreeMap<String, Calls>,
}

impl Filter {
    fn new(side: &'static str, s: &Section) -> Result<Filter, IntersectError> {
        let default = Action::new(s.default_action, s.default_errno_ret);
        let mut calls = BTreeMap::new();
        for call in s.syscalls.iter().flatten() {
            let action = Action::new(call.action, call.errno_ret);
            // runc skips a rule that says what the default says
            // (libseccomp would refuse it).
            if action == default {
                continue;
            }
            for name in &call.names {
                let conds = rule_conds(side, name, call.args.as_deref().unwrap_or_default())?;
                add(&mut calls, name, conds, action);
            }
        }
        Ok(Filter { default, calls })
    }

    /// The rules for `name`, and the action where none matches.
    fn view(&self, name: &str) -> (&[Rule], Action) {
        match self.calls.get(name) {
            Some(Calls::Always(a)) => (&[], *a),
            Some(Calls::Rules(rules)) => (rules, self.default),
            None => (&[], self.default),
        }
    }
}

/// The conjunctions one OCI rule's `args` make. runc turns a rule that
/// compares one argument twice into one rule per comparison (so they are
/// alternatives, not all required); otherwise all must hold.
fn rule_conds(
    side: &'static str,
    name: &str,
    args: &[Arg],
) -> Result<Vec<Vec<Cond>>, IntersectError> {
    let mut conds = Vec::with_capacity(args.len());
    for a in args {
        if a.index > 5 {
            return Err(IntersectError::ArgIndex {
                side,
                syscall: name.to_string(),
                index: a.index,
            });
        }
        conds.push(Cond {
            index: a.index,
            op: a.op,
            value: a.value,
            value_two: a.value_two.unwrap_or(0),
        });
    }
    conds.sort();
    let repeated = conds.windows(2).any(|w| w[0].index == w[1].index);
    Ok(match (conds.is_empty(), repeated) {
        (true, _) => Vec::new(),
        (false, true) => conds.into_iter().map(|c| vec![c]).collect(),
        (false, false) => vec![conds],
    })
}

/// Add one OCI rule for `name` as libseccomp does: the first unconditional
/// rule of a syscall wins over any other rule for it, before or after.
fn add(calls: &mut BTreeMap<String, Calls>, name: &str, conds: Vec<Vec<Cond>>, action: Action) {
    let unconditional = conds.is_empty();
    let rules = conds.into_iter().map(|conds| Rule { conds, action });
    match calls.get_mut(name) {
        Some(Calls::Always(_)) => {}
        _ if unconditional => {
            calls.insert(name.to_string(), Calls::Always(action));
        }
        Some(Calls::Rules(existing)) => existing.extend(rules),
        None => {
            calls.insert(name.to_string(), Calls::Rules(rules.collect()));
        }
    }
}

/// Where a piece of one syscall's calls lies, as libseccomp rules.
#[derive(Debug, Clone, PartialEq)]
enum Region {
    /// Provably no call.
    Never,
    /// Calls matching any of these rules (each all its comparisons).
    Exact(Vec<Vec<Cond>>),
    /// Not expressible in a few libseccomp rules.
    Inexact,
}

/// Calls matching every rule of `inside` and none of `outside`.
fn region(inside: &[&Rule], outside: &[Rule]) -> Region {
    let mut conj = Conj::default();
    let possible = inside.iter().flat_map(|r| &r.conds).all(|c| conj.and(*c))
        && outside.iter().all(|r| conj.and_not(&r.conds));
    match (possible, conj.rules()) {
        (false, _) => Region::Never,
        (true, Some(rules)) => Region::Exact(rules),
        (true, None) => Region::Inexact,
    }
}

/// A piece of one syscall's calls on which both filters act uniformly:
/// matching bundle rule `bundle` (or none), profile rule `profile` (or
/// none).
struct Cell {
    region: Region,
    action: Action,
    bundle: Option<usize>,
    profile: Option<usize>,
}

/// Split one syscall's calls by which rule of each filter they match.
/// Provably empty pieces are left out.
fn cells(b: (&[Rule], Action), p: (&[Rule], Action)) -> Vec<Cell> {
    let ((brules, bdefault), (prules, pdefault)) = (b, p);
    let mut out = Vec::new();
    let mut push = |region, action, bundle, profile| {
        if region != Region::Never {
            out.push(Cell {
                region,
                action,
                bundle,
                profile,
            });
        }
    };
    for (i, br) in brules.iter().enumerate() {
        for (j, pr) in prules.iter().enumerate() {
            let action = stricter(br.action, pr.action);
            push(region(&[br, pr], &[]), action, Some(i), Some(j));
        }
        push(
            region(&[br], prules),
            stricter(br.action, pdefault),
            Some(i),
            None,
        );
    }
    for (j, pr) in prules.iter().enumerate() {
        push(
            region(&[pr], brules),
            stricter(bdefault, pr.action),
            None,
            Some(j),
        );
    }
    let all: Vec<Rule> = brules.iter().chain(prules).cloned().collect();
    push(region(&[], &all), stricter(bdefault, pdefault), None, None);
    out
}

/// What the intersected filter does with one syscall.
#[derive(Debug, PartialEq)]
enum Outcome {
    Always(Action),
    /// Conditional rules; every other call gets the filter's default.
    Rules(Vec<Rule>),
}

/// One syscall's outcome, given each filter's rules for it and the
/// intersected filter's default action.
fn combine(b: (&[Rule], Action), p: (&[Rule], Action), default: Action) -> Outcome {
    let cells = cells(b, p);
    let mut actions = cells.iter().map(|c| c.action);
    let first = actions.next().unwrap_or_else(|| stricter(b.1, p.1));
    if actions.all(|a| a == first) {
        return always(first, default);
    }
    let mut covered = vec![false; cells.len()];
    let mut rules = uniform_rules(&cells, &mut covered, b.0, |c| c.bundle);
    rules.extend(uniform_rules(&cells, &mut covered, p.0, |c| c.profile));
    for (cell, _) in cells.iter().zip(&covered).filter(|(_, c)| !**c) {
        match &cell.region {
            _ if cell.action == default => {}
            Region::Exact(alternatives) if alternatives.iter().all(|a| !a.is_empty()) => rules
                .extend(alternatives.iter().map(|conds| Rule {
                    conds: conds.clone(),
                    action: cell.action,
                })),
            // Not expressible: falling to the default is at least as
            // strict when the default ranks as high; otherwise the whole
            // syscall gets the strictest action any of its calls gets.
            _ if cell.action.rank() <= default.rank() => {}
            _ => return always(strictest(&cells, default), default),
        }
    }
    rules.retain(|r| r.action != default);
    Outcome::Rules(dedup(rules))
}

/// `action` for every call: no rule at all if that is the default (runc
/// would skip it).
fn always(action: Action, default: Action) -> Outcome {
    if action == default {
        Outcome::Rules(Vec::new())
    } else {
        Outcome::Always(action)
    }
}

/// A rule of one filter whose calls all get the same action in the
/// intersection is kept as it is, with that action: this is how a rule
/// that dominates the other filter (a bundle's KILL, a profile's ALLOW
/// where the bundle allows everything) survives whole, even where the
/// pieces it is made of could not be written as rules.
fn uniform_rules(
    cells: &[Cell],
    covered: &mut [bool],
    rules: &[Rule],
    owner: impl Fn(&Cell) -> Option<usize>,
) -> Vec<Rule> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let mine: Vec<usize> = (0..cells.len())
            .filter(|&k| owner(&cells[k]) == Some(i))
            .collect();
        let Some(&first) = mine.first() else { continue };
        let action = cells[first].action;
        if mine.iter().all(|&k| cells[k].action == action) {
            mine.iter().for_each(|&k| covered[k] = true);
            out.push(Rule {
                conds: rule.conds.clone(),
                action,
            });
        }
    }
    out
}

/// The strictest action any cell gets (`fallback` if there are none).
fn strictest(cells: &[Cell], fallback: Action) -> Action {
    cells
        .iter()
        .map(|c| c.action)
        .reduce(|m, a| if a.rank() > m.rank() { a } else { m })
        .unwrap_or(fallback)
}

/// Rules with the same comparisons and different actions would make
/// libseccomp refuse the filter: keep the strictest. Sorted, unique.
fn dedup(mut rules: Vec<Rule>) -> Vec<Rule> {
    rules.sort_by(|a, b| {
        a.conds
            .cmp(&b.conds)
            .then(b.action.key().cmp(&a.action.key()))
    });
    rules.dedup_by(|later, kept| later.conds == kept.conds);
    rules
}

/// The OCI `syscalls` list: names grouped by identical action and
/// comparisons, unconditional rules first.
fn render<'a>(outcomes: impl Iterator<Item = (&'a str, Outcome)>) -> Vec<Value> {
    type Key = ((u8, &'static str, u32), Vec<Cond>);
    let mut groups: BTreeMap<Key, (Action, Vec<&str>)> = BTreeMap::new();
    for (name, outcome) in outcomes {
        let rules = match outcome {
            Outcome::Always(action) => vec![Rule {
                conds: Vec::new(),
                action,
            }],
            Outcome::Rules(rules) => rules,
        };
        for r in rules {
            let entry = groups
                .entry((r.action.key(), r.conds))
                .or_insert((r.action, Vec::new()));
            entry.1.push(name);
        }
    }
    let (always, conditional): (Vec<_>, Vec<_>) =
        groups.into_iter().partition(|((_, c), _)| c.is_empty());
    always
        .into_iter()
        .chain(conditional)
        .map(|((_, conds), (action, names))| syscall_json(&names, action, &conds))
        .collect()
}

fn syscall_json(names: &[&str], action: Action, conds: &[Cond]) -> Value {
    let mut v = json!({ "names": names, "action": kind_name(action.kind) });
    if let Some(errno) = action.errno {
        v["errnoRet"] = json!(errno);
    }
    if !conds.is_empty() {
        let args: Vec<Value> = conds
            .iter()
            .map(|c| {
                json!({ "index": c.index, "value": c.value, "valueTwo": c.value_two, "op": op_name(c.op) })
            })
            .collect();
        v["args"] = json!(args);
    }
    v
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

#[cfg(test)]
mod tests {
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
}
