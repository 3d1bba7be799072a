//! Conjunctions of syscall-argument comparisons, and how to write one as
//! libseccomp rules: a rule holds at most one comparison per argument, so
//! a conjunction becomes one or more rules (alternatives), or cannot be
//! written at all.
//!
//! Per argument, ordered comparisons (`EQ`, `NE`, `LT`, `LE`, `GT`, `GE`)
//! are kept as the set of values they allow (sorted intervals), which
//! intersect and complement exactly; a set that is not one comparison is
//! written as several (`LE`/`GE` for open ends, `MASKED_EQ` for aligned
//! blocks in between). `MASKED_EQ` is kept as it is.

use oci_spec::runtime::LinuxSeccompOperator as Op;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// At most this many rules for one piece of a syscall's calls; beyond,
/// the piece counts as not expressible.
const MAX_ALTERNATIVES: usize = 64;

/// One comparison of a syscall argument (64-bit, unsigned, as libseccomp
/// compares on x86_64). For `MASKED_EQ`, `value` is the mask and
/// `value_two` the expected bits, as runc passes them to libseccomp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cond {
    pub index: usize,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

impl Cond {
    fn new(index: usize, op: Op, value: u64) -> Cond {
        Cond {
            index,
            op,
            value,
            value_two: 0,
        }
    }

    fn key(&self) -> (usize, u32, u64, u64) {
        (self.index, self.op as u32, self.value, self.value_two)
    }

    #[cfg(test)]
    pub(super) fn holds(&self, arg: u64) -> bool {
        match self.op {
            Op::ScmpCmpMaskedEq => arg & self.value == self.value_two,
            _ => intervals(self)
                .is_some_and(|set| set.iter().any(|&(lo, hi)| lo <= arg && arg <= hi)),
        }
    }
}

impl PartialOrd for Cond {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cond {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Sorted, disjoint, inclusive intervals of argument values.
type Values = Vec<(u64, u64)>;

/// The values an ordered comparison allows (`None` for `MASKED_EQ`).
fn intervals(c: &Cond) -> Option<Values> {
    let v = c.value;
    let set = match c.op {
        Op::ScmpCmpEq => vec![(v, v)],
        Op::ScmpCmpNe => complement(&[(v, v)]),
        Op::ScmpCmpLt => complement(&[(v, u64::MAX)]),
        Op::ScmpCmpLe => vec![(0, v)],
        Op::ScmpCmpGt => complement(&[(0, v)]),
        Op::ScmpCmpGe => vec![(v, u64::MAX)],
        Op::ScmpCmpMaskedEq => return None,
    };
    Some(set)
}

fn complement(set: &[(u64, u64)]) -> Values {
    let mut out = Vec::new();
    let mut next = Some(0u64);
    for &(lo, hi) in set {
        if let Some(n) = next.filter(|&n| n < lo) {
            out.push((n, lo - 1));
        }
        next = hi.checked_add(1);
    }
    if let Some(n) = next {
        out.push((n, u64::MAX));
    }
    out
}

fn meet(a: &[(u64, u64)], b: &[(u64, u64)]) -> Values {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (lo, hi) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// What a conjunction allows for one argument.
#[derive(Debug, Clone, PartialEq)]
enum Allowed {
    Values(Values),
    Masked(Cond),
}

/// A conjunction of comparisons, by argument; `inexact` once it holds one
/// libseccomp cannot say (then the rest over-approximates it, which still
/// proves a conjunction can never hold).
#[derive(Debug, Clone, Default)]
pub(super) struct Conj {
    args: BTreeMap<usize, Allowed>,
    inexact: bool,
}

impl Conj {
    /// Add `c`; false if the conjunction can then never hold.
    pub fn and(&mut self, c: Cond) -> bool {
        let new = match intervals(&c) {
            Some(set) => Allowed::Values(set),
            None => Allowed::Masked(c),
        };
        self.and_allowed(c.index, new)
    }

    /// Add "not all of `rule`"; false if the conjunction can then never
    /// hold. Exact for a rule of one ordered comparison; otherwise it is a
    /// disjunction, fine only where the rule cannot match anyway.
    pub fn and_not(&mut self, rule: &[Cond]) -> bool {
        if let [c] = rule {
            if let Some(set) = intervals(c) {
                return self.and_allowed(c.index, Allowed::Values(complement(&set)));
            }
        }
        let mut with = self.clone();
        let never = !rule.iter().all(|c| with.and(*c));
        self.inexact |= !never;
        !rule.is_empty()
    }

    fn and_allowed(&mut self, index: usize, new: Allowed) -> bool {
        let Some(old) = self.args.get(&index) else {
            let never = new == Allowed::Values(Vec::new());
            self.args.insert(index, new);
            return !never;
        };
        match both(old, &new) {
            Some(Allowed::Values(set)) if set.is_empty() => false,
            Some(merged) => {
                self.args.insert(index, merged);
                true
            }
            // Kept as it was: an over-approximation from now on.
            None => {
                self.inexact = true;
                true
            }
        }
    }

    /// The libseccomp rules (each a list of comparisons, one per argument
    /// at most; none: every call) that together match exactly this
    /// conjunction, or `None` if it cannot be written in a few.
    pub fn rules(&self) -> Option<Vec<Vec<Cond>>> {
        if self.inexact {
            return None;
        }
        let mut rules: Vec<Vec<Cond>> = vec![Vec::new()];
        for (&index, allowed) in &self.args {
            let choices = match allowed {
                Allowed::Masked(c) => vec![*c],
                Allowed::Values(set) => comparisons(index, set),
            };
            if choices.is_empty() {
                continue; // any value
            }
            if rules.len() * choices.len() > MAX_ALTERNATIVES {
                return None;
            }
            rules = rules
                .iter()
                .flat_map(|r| choices.iter().map(move |c| [r.as_slice(), &[*c]].concat()))
                .collect();
        }
        Some(rules)
    }
}

/// Both `a` and `b` for one argument, if one `Allowed` says it exactly.
fn both(a: &Allowed, b: &Allowed) -> Option<Allowed> {
    match (a, b) {
        (Allowed::Values(x), Allowed::Values(y)) => Some(Allowed::Values(meet(x, y))),
        (Allowed::Masked(m), Allowed::Values(v)) | (Allowed::Values(v), Allowed::Masked(m)) => {
            masked_and_values(m, v)
        }
        (Allowed::Masked(x), Allowed::Masked(y)) => Some(both_masked(x, y)),
    }
}

/// A mask test and a value set: exact when the set is one value.
fn masked_and_values(m: &Cond, set: &[(u64, u64)]) -> Option<Allowed> {
    match set {
        [] => Some(Allowed::Values(Vec::new())),
        [(lo, hi)] if lo == hi && *lo & m.value == m.value_two => {
            Some(Allowed::Values(set.to_vec()))
        }
        [(lo, hi)] if lo == hi => Some(Allowed::Values(Vec::new())),
        _ => None,
    }
}

/// `(x & m1) == v1 && (x & m2) == v2` is `(x & (m1|m2)) == (v1|v2)` when
/// the expected bits agree where the masks overlap; never otherwise.
fn both_masked(a: &Cond, b: &Cond) -> Allowed {
    let (m1, v1, m2, v2) = (a.value, a.value_two, b.value, b.value_two);
    if v1 & !m1 != 0 || v2 & !m2 != 0 || v1 & m2 != v2 & m1 {
        return Allowed::Values(Vec::new());
    }
    Allowed::Masked(Cond {
        value: m1 | m2,
        value_two: v1 | v2,
        ..*a
    })
}

/// Comparisons of argument `index`, any one of which holds exactly for
/// the values in `set` (none: every value).
fn comparisons(index: usize, set: &[(u64, u64)]) -> Vec<Cond> {
    match set {
        [(0, u64::MAX)] => Vec::new(),
        // All values but one.
        [(0, a), (b, u64::MAX)] if b - a == 2 => vec![Cond::new(index, Op::ScmpCmpNe, a + 1)],
        _ => set
            .iter()
            .flat_map(|&(lo, hi)| interval(index, lo, hi))
            .collect(),
    }
}

fn interval(index: usize, lo: u64, hi: u64) -> Vec<Cond> {
    match (lo, hi) {
        _ if lo == hi => vec![Cond::new(index, Op::ScmpCmpEq, lo)],
        (0, _) => vec![Cond::new(index, Op::ScmpCmpLe, hi)],
        (_, u64::MAX) => vec![Cond::new(index, Op::ScmpCmpGe, lo)],
        _ => aligned_blocks(lo, hi)
            .into_iter()
            .map(|(base, size)| Cond {
                index,
                op: Op::ScmpCmpMaskedEq,
                value: !(size - 1),
                value_two: base,
            })
            .collect(),
    }
}

/// `lo..=hi` as blocks `base..base+size` with `size` a power of two and
/// `base` a multiple of it (each one `MASKED_EQ`), at most 128 of them.
fn aligned_blocks(lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut base = lo;
    loop {
        let mut size = if base == 0 {
            1 << 63
        } else {
            1u64 << base.trailing_zeros()
        };
        while base + (size - 1) > hi {
            size >>= 1;
        }
        out.push((base, size));
        match (base + (size - 1)).checked_add(1) {
            Some(next) if next <= hi => base = next,
            _ => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, op: Op, value: u64) -> Cond {
        Cond::new(index, op, value)
    }

    /// Every value in `probes` satisfies `rules` (any of them) exactly
    /// when it satisfies `want`.
    fn assert_same(rules: &[Vec<Cond>], want: impl Fn(u64) -> bool, probes: &[u64]) {
        for &v in probes {
            let args = [v; 6];
            let got = rules
                .iter()
                .any(|r| r.iter().all(|c| c.holds(args[c.index])));
            assert_eq!(got, want(v), "value {v}: {rules:?}");
        }
    }

    #[test]
    fn values_but_a_few_become_open_ranges_and_aligned_blocks() {
        let mut conj = Conj::default();
        assert!(conj.and(c(1, Op::ScmpCmpNe, 17)));
        assert!(conj.and(c(1, Op::ScmpCmpNe, 40)));
        let rules = conj.rules().unwrap();
        assert!(rules.len() <= 8, "{rules:?}");
        let probes: Vec<u64> = (0..64).chain([u64::MAX, u64::MAX - 1]).collect();
        assert_same(&rules, |v| v != 17 && v != 40, &probes);
        // One comparison stays one.
        let mut conj = Conj::default();
        conj.and(c(0, Op::ScmpCmpNe, 40));
        assert_eq!(conj.rules().unwrap(), vec![vec![c(0, Op::ScmpCmpNe, 40)]]);
    }

    #[test]
    fn contradictions_are_proven_and_complements_are_exact() {
        let mut conj = Conj::default();
        assert!(conj.and(c(0, Op::ScmpCmpGe, 10)));
        assert!(!conj.clone().and(c(0, Op::ScmpCmpLt, 10)));
        assert!(!conj.clone().and_not(&[c(0, Op::ScmpCmpGt, 3)]));
        assert!(conj.and_not(&[c(0, Op::ScmpCmpEq, 12)]));
        assert_same(
            &conj.rules().unwrap(),
            |v| v >= 10 && v != 12,
            &(0..40).collect::<Vec<_>>(),
        );
    }

    #[test]
    fn masks_merge_and_meet_single_values() {
        let masked = |m, v| Cond {
            value_two: v,
            ..c(0, Op::ScmpCmpMaskedEq, m)
        };
        let mut conj = Conj::default();
        conj.and(masked(0xF0, 0));
        conj.and(masked(0x0F, 0x01));
        assert_eq!(conj.rules().unwrap(), vec![vec![masked(0xFF, 0x01)]]);
        assert!(!conj.clone().and(masked(0x01, 0)), "disagreeing bits");
        assert!(!conj.clone().and(c(0, Op::ScmpCmpEq, 0x11)));
        assert!(conj.clone().and(c(0, Op::ScmpCmpEq, 0x201)));
        // A mask and a range: one libseccomp rule cannot say both.
        let mut range = conj.clone();
        assert!(range.and(c(0, Op::ScmpCmpGe, 5)));
        assert_eq!(range.rules(), None);
    }

    #[test]
    fn a_rule_of_several_arguments_is_excluded_only_where_it_cannot_match() {
        let rule = [c(0, Op::ScmpCmpEq, 1), c(1, Op::ScmpCmpEq, 2)];
        let mut disjoint = Conj::default();
        disjoint.and(c(0, Op::ScmpCmpEq, 5));
        assert!(disjoint.and_not(&rule));
        assert_eq!(
            disjoint.rules().unwrap(),
            vec![vec![c(0, Op::ScmpCmpEq, 5)]]
        );
        let mut overlapping = Conj::default();
        assert!(overlapping.and_not(&rule));
        assert_eq!(overlapping.rules(), None);
    }

    #[test]
    fn aligned_blocks_cover_exactly() {
        for (lo, hi) in [(18, 39), (1, 1), (3, 1 << 20), (u64::MAX - 9, u64::MAX - 1)] {
            let blocks = aligned_blocks(lo, hi);
            assert!(blocks.len() <= 128);
            assert_eq!(blocks[0].0, lo);
            for w in blocks.windows(2) {
                assert_eq!(w[0].0 + w[0].1, w[1].0, "contiguous");
            }
            let (base, size) = blocks[blocks.len() - 1];
            assert_eq!(base + (size - 1), hi);
            assert!(blocks
                .iter()
                .all(|(b, s)| s.is_power_of_two() && b % s == 0));
        }
    }
}
