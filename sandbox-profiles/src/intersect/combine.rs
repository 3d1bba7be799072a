//! One syscall's outcome in the intersection: its calls split into cells
//! by which rule of each filter they match, each cell given the stricter
//! action, and the cells written back as rules.

use super::action::{stricter, Action};
use super::args::{Cond, Conj};
use super::filter::Rule;

/// Where a piece of one syscall's calls lies, as libseccomp rules.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Region {
    /// Provably no call.
    Never,
    /// Calls matching any of these rules (each all its comparisons).
    Exact(Vec<Vec<Cond>>),
    /// Not expressible in a few libseccomp rules.
    Inexact,
}

/// Calls matching every rule of `inside` and none of `outside`.
pub(super) fn region(inside: &[&Rule], outside: &[Rule]) -> Region {
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
pub(super) struct Cell {
    pub(super) region: Region,
    pub(super) action: Action,
    pub(super) bundle: Option<usize>,
    pub(super) profile: Option<usize>,
}

/// Split one syscall's calls by which rule of each filter they match.
/// Provably empty pieces are left out.
pub(super) fn cells(b: (&[Rule], Action), p: (&[Rule], Action)) -> Vec<Cell> {
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
pub(super) enum Outcome {
    Always(Action),
    /// Conditional rules; every other call gets the filter's default.
    Rules(Vec<Rule>),
}

/// One syscall's outcome, given each filter's rules for it and the
/// intersected filter's default action.
pub(super) fn combine(b: (&[Rule], Action), p: (&[Rule], Action), default: Action) -> Outcome {
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
pub(super) fn always(action: Action, default: Action) -> Outcome {
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
pub(super) fn uniform_rules(
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
pub(super) fn strictest(cells: &[Cell], fallback: Action) -> Action {
    cells
        .iter()
        .map(|c| c.action)
        .reduce(|m, a| if a.rank() > m.rank() { a } else { m })
        .unwrap_or(fallback)
}

/// Rules with the same comparisons and different actions would make
/// libseccomp refuse the filter: keep the strictest. Sorted, unique.
pub(super) fn dedup(mut rules: Vec<Rule>) -> Vec<Rule> {
    rules.sort_by(|a, b| {
        a.conds
            .cmp(&b.conds)
            .then(b.action.key().cmp(&a.action.key()))
    });
    rules.dedup_by(|later, kept| later.conds == kept.conds);
    rules
}
