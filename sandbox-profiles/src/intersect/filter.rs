//! Reading one OCI `linux.seccomp` section into the filter libseccomp
//! builds from it once runc has added its rules: per syscall, either one
//! unconditional action or rules of argument comparisons.

use super::action::Action;
use super::args::Cond;
use super::error::IntersectError;
use oci_spec::runtime::{LinuxSeccompAction as Kind, LinuxSeccompOperator as Op};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// An OCI `linux.seccomp` section, as far as runc reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Section {
    pub(super) default_action: Kind,
    #[serde(default)]
    pub(super) default_errno_ret: Option<u32>,
    #[serde(default)]
    pub(super) architectures: Option<Vec<String>>,
    #[serde(default)]
    pub(super) flags: Option<Vec<String>>,
    #[serde(default)]
    pub(super) syscalls: Option<Vec<Syscall>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Syscall {
    #[serde(default)]
    pub(super) names: Vec<String>,
    pub(super) action: Kind,
    #[serde(default)]
    pub(super) errno_ret: Option<u32>,
    #[serde(default)]
    pub(super) args: Option<Vec<Arg>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Arg {
    pub(super) index: usize,
    pub(super) value: u64,
    #[serde(default)]
    pub(super) value_two: Option<u64>,
    pub(super) op: Op,
}

impl Section {
    pub(super) fn parse(side: &'static str, v: &Value) -> Result<Section, IntersectError> {
        Section::deserialize(v).map_err(|source| IntersectError::Parse { side, source })
    }
}

/// A rule's condition: all comparisons hold (at most one per argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    pub(super) conds: Vec<Cond>,
    pub(super) action: Action,
}

/// A syscall's rules in one filter.
#[derive(Debug, Clone)]
pub(super) enum Calls {
    Always(Action),
    /// Where no rule matches, the filter's default action.
    Rules(Vec<Rule>),
}

/// One filter as libseccomp sees it once runc has added its rules.
pub(super) struct Filter {
    pub(super) default: Action,
    pub(super) calls: BTreeMap<String, Calls>,
}

impl Filter {
    pub(super) fn new(side: &'static str, s: &Section) -> Result<Filter, IntersectError> {
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
    pub(super) fn view(&self, name: &str) -> (&[Rule], Action) {
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
pub(super) fn rule_conds(
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
pub(super) fn add(
    calls: &mut BTreeMap<String, Calls>,
    name: &str,
    conds: Vec<Vec<Cond>>,
    action: Action,
) {
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
