//! Writing the intersected rules as an OCI `syscalls` list.

use super::action::{kind_name, op_name, Action};
use super::args::Cond;
use super::combine::Outcome;
use super::filter::Rule;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The OCI `syscalls` list: names grouped by identical action and
/// comparisons, unconditional rules first.
pub(super) fn render<'a>(outcomes: impl Iterator<Item = (&'a str, Outcome)>) -> Vec<Value> {
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

pub(super) fn syscall_json(names: &[&str], action: Action, conds: &[Cond]) -> Value {
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
