//! The figures the function-zygote work aims at, and what this run
//! reached. Reported, never asserted: a slower machine or a busy one
//! misses them without anything being broken.

use crate::zygote::Mode;
use serde::Serialize;

/// Everything the targets are checked against; `None` where the run did
/// not measure it (a skipped scenario or backend).
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub heavy: crate::heavy::Figures,
    pub hello: crate::hello::Figures,
    pub throughput: crate::throughput::Figures,
    /// runsc: ember hot-swap client p50 and `runsc run` p50.
    pub runsc_hot_cold_p50: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub reached: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

fn target(
    what: &str,
    goal: &str,
    value: Option<f64>,
    unit: &str,
    ok: impl Fn(f64) -> bool,
) -> Target {
    let value = value.filter(|v| v.is_finite());
    Target {
        what: what.to_string(),
        target: goal.to_string(),
        reached: value.map_or_else(|| "not measured".into(), |v| format!("{v:.2}{unit}")),
        met: value.map(ok),
    }
}

fn heavy(f: &crate::heavy::Figures) -> Vec<Target> {
    let ratio = f.init_p50.zip(f.zygote_daemon_p50).map(|(i, z)| i / z);
    vec![
        target(
            "heavy-init, fork after the first invocation: daemon p50",
            "<= 2 ms",
            f.zygote_daemon_p50,
            " ms",
            |v| v <= 2.0,
        ),
        target(
            "heavy-init: its init / that daemon p50",
            ">= 75x",
            ratio,
            "x",
            |v| v >= 75.0,
        ),
    ]
}

fn hello(f: &crate::hello::Figures) -> Vec<Target> {
    let mut out = Vec::new();
    for &(gap, daemon, client) in &f.fork_gaps {
        let when = if gap == 0 {
            "back to back".to_string()
        } else {
            format!("{gap} ms apart")
        };
        out.push(target(
            &format!("hello fork, {when}: daemon p50"),
            "<= 1.0 ms",
            Some(daemon),
            " ms",
            |v| v <= 1.0,
        ));
        out.push(target(
            &format!("hello fork, {when}: client p50"),
            "<= 1.5 ms",
            Some(client),
            " ms",
            |v| v <= 1.5,
        ));
    }
    let speedup = f
        .runc_run_p50
        .zip(f.fork_back_to_back)
        .map(|(cold, (_, client))| cold / client);
    out.push(target(
        "hello: `runc run` p50 / fork client p50",
        ">= 50x",
        speedup,
        "x",
        |v| v >= 50.0,
    ));
    out.push(target(
        "paused generic python3 sandbox (runc): PSS",
        "<= 10 MiB",
        f.paused_generic_pss_mib,
        " MiB",
        |v| v <= 10.0,
    ));
    out
}

fn throughput(f: &crate::throughput::Figures) -> Vec<Target> {
    vec![
        target(
            "throughput, 8 clients, fork",
            ">= 1000 inv/s",
            f.rate(Mode::ForkZygote, 8),
            " inv/s",
            |v| v >= 1000.0,
        ),
        target(
            "throughput, 8 clients, specialized",
            ">= 3000 inv/s",
            f.rate(Mode::Specialized, 8),
            " inv/s",
            |v| v >= 3000.0,
        ),
    ]
}

/// Every target, in the order of the issue.
pub fn evaluate(f: &Figures) -> Vec<Target> {
    let mut out = heavy(&f.heavy);
    out.extend(hello(&f.hello));
    out.extend(throughput(&f.throughput));
    out.push(target(
        "runsc: `runsc run` p50 / hot path client p50",
        ">= 30x",
        f.runsc_hot_cold_p50.map(|(hot, cold)| cold / hot),
        "x",
        |v| v >= 30.0,
    ));
    out
}

pub fn print(targets: &[Target]) {
    println!();
    println!("{:<58} {:>14} {:>16}  met", "target", "goal", "reached");
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!("{:<58} {:>14} {:>16}  {met}", t.what, t.target, t.reached);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmeasured_targets_say_so_and_measured_ones_compare() {
        let mut f = Figures::default();
        f.heavy.zygote_daemon_p50 = Some(1.5);
        f.heavy.init_p50 = Some(210.0);
        f.throughput.rates.push((Mode::ForkZygote, 8, 900.0));
        let t = evaluate(&f);
        let get = |what: &str| t.iter().find(|x| x.what.starts_with(what)).unwrap();
        assert_eq!(get("heavy-init, fork").met, Some(true));
        assert_eq!(get("heavy-init: its init").reached, "140.00x");
        assert_eq!(get("throughput, 8 clients, fork").met, Some(false));
        let spec = get("throughput, 8 clients, specialized");
        assert_eq!((spec.met, spec.reached.as_str()), (None, "not measured"));
        assert_eq!(get("runsc").met, None);
    }

    #[test]
    fn every_gap_gets_a_daemon_and_a_client_row() {
        let mut f = Figures::default();
        f.hello.fork_gaps = vec![(0, 0.9, 1.6), (5, 0.8, 1.2)];
        f.hello.fork_back_to_back = Some((0.9, 1.6));
        f.hello.runc_run_p50 = Some(96.0);
        let t = evaluate(&f);
        let met: Vec<(String, Option<bool>)> = t
            .iter()
            .filter(|x| x.what.starts_with("hello"))
            .map(|x| (x.what.clone(), x.met))
            .collect();
        assert_eq!(
            met,
            vec![
                (
                    "hello fork, back to back: daemon p50".to_string(),
                    Some(true)
                ),
                (
                    "hello fork, back to back: client p50".to_string(),
                    Some(false)
                ),
                ("hello fork, 5 ms apart: daemon p50".to_string(), Some(true)),
                ("hello fork, 5 ms apart: client p50".to_string(), Some(true)),
                (
                    "hello: `runc run` p50 / fork client p50".to_string(),
                    Some(true)
                ),
            ]
        );
    }
}
