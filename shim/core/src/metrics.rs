//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4):
//! invocations by function and outcome, start kinds, latency histograms
//! per phase, pool sizes and states, sandbox creations, recycles and
//! injection failures. Counters live here; pool gauges are read from the
//! pools when scraped.

use ember_api::{Backend, Language, PoolStatus, StartKind, Timings};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Reads one number of a pool's status.
type PoolField = fn(&PoolStatus) -> u64;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Phases of `timings_us` that get a histogram, and how to read each.
/// Reads one phase of an invocation's timings.
type PhaseField = fn(&Timings) -> u64;

const PHASES: [(&str, PhaseField); 8] = [
    ("queue", |t| t.queue),
    ("create", |t| t.create),
    ("thaw", |t| t.thaw),
    ("inject", |t| t.inject),
    ("run", |t| t.run),
    ("confine", |t| t.confine),
    ("cleanup", |t| t.cleanup),
    ("total", |t| t.total),
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    /// (function, outcome) -> count
    invocations: BTreeMap<(String, String), u64>,
    /// (runtime, backend, start kind) -> count
    starts: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// phase -> histogram
    phases: BTreeMap<&'static str, Histogram>,
    /// failure phase (inject, thaw, limits, run, ...) -> count
    failures: BTreeMap<String, u64>,
    /// (function, error code) -> invocations refused before they ran
    refused: BTreeMap<(String, String), u64>,
    /// function zygote inits by outcome (zygote_ready, init_error, ...)
    zygote_inits: BTreeMap<String, u64>,
    /// (runtime, backend) -> sandboxes found dead when taken for an
    /// invocation
    found_dead: BTreeMap<(&'static str, &'static str), u64>,
    /// function -> sessions opened
    sessions_opened: BTreeMap<String, u64>,
    /// (function, end reason) -> sessions ended
    sessions_ended: BTreeMap<(String, String), u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One finished invocation (or one refused before it ran: `outcome` is
    /// then the error code).
    pub fn invocation(&self, function: &str, outcome: &str) {
        *self
            .lock()
            .invocations
            .entry((function.to_string(), outcome.to_string()))
            .or_default() += 1;
    }

    /// A sandbox taken for an invocation, and the invocation's timings.
    pub fn timings(
        &self,
        runtime: Language,
        backend: Backend,
        start: StartKind,
        timings: &Timings,
    ) {
        let mut m = self.lock();
        let key = (runtime.runtime_name(), backend.as_str(), start.as_str());
        *m.starts.entry(key).or_default() += 1;
        for (phase, read) in PHASES {
            let us = read(timings);
            // Only cold starts create a sandbox.
            if phase == "create" && us == 0 {
                continue;
            }
            m.phases.entry(phase).or_default().observe(us as f64 / 1e6);
        }
    }

    /// An invocation of `function` refused with `code` before it ran
    /// (`overloaded`: a queue was full, at once; `pool_exhausted`: no
    /// sandbox in time; ...).
    pub fn refused(&self, function: &str, code: &str) {
        *self
            .lock()
            .refused
            .entry((function.to_string(), code.to_string()))
            .or_default() += 1;
    }

    /// A sandbox failed during `phase` (`inject`, `thaw`, `limits`, ...).
    pub fn sandbox_failure(&self, phase: &str) {
        *self.lock().failures.entry(phase.to_string()).or_default() += 1;
    }

    /// A sandbox of `runtime` on `backend` was found dead (a process of it
    /// killed from outside) as an invocation took it.
    pub fn sandbox_found_dead(&self, runtime: Language, backend: Backend) {
        let key = (runtime.runtime_name(), backend.as_str());
        *self.lock().found_dead.entry(key).or_default() += 1;
    }

    /// A session of `function` opened.
    pub fn session_opened(&self, function: &str) {
        *self
            .lock()
            .sessions_opened
            .entry(function.to_string())
            .or_default() += 1;
    }

    /// A session of `function` ended, for `reason`.
    pub fn session_ended(&self, function: &str, reason: &str) {
        *self
            .lock()
            .sessions_ended
            .entry((function.to_string(), reason.to_string()))
            .or_default() += 1;
    }

    /// A function zygote's init ended with `outcome`.
    pub fn zygote_init(&self, outcome: &str) {
        *self
            .lock()
            .zygote_inits
            .entry(outcome.to_string())
            .or_default() += 1;
    }

    /// The exposition text, with the pools' current state.
    pub fn render(&self, pools: &[PoolStatus]) -> String {
        let mut out = String::new();
        {
            let m = self.lock();
            render_counts(&m, &mut out);
            render_phases(&m, &mut out);
        }
        render_pools(pools, &mut out);
        out
    }
}

/// The samples of a counter by function and one more label.
fn by_function(
    out: &mut String,
    name: &str,
    label: &str,
    counts: &BTreeMap<(String, String), u64>,
) {
    for ((f, v), n) in counts {
        let _ = writeln!(
            out,
            "{name}{{function=\"{}\",{label}=\"{}\"}} {n}",
            escape(f),
            escape(v)
        );
    }
}

/// Invocations, starts, sandbox failures and zygote inits.
fn render_counts(m: &Inner, out: &mut String) {
    family(
        out,
        "ember_invocations_total",
        "counter",
        "Invocations by function and outcome (an API error code when refused before running).",
    );
    by_function(out, "ember_invocations_total", "outcome", &m.invocations);
    family(
        out,
        "ember_invocations_refused_total",
        "counter",
        "Invocations refused before they ran, by function and error code (overloaded: refused at once, a queue was full).",
    );
    by_function(out, "ember_invocations_refused_total", "code", &m.refused);
    family(
        out,
        "ember_starts_total",
        "counter",
        "Sandboxes taken for invocations, by start kind (warm, hot, cold).",
    );
    for ((rt, b, k), n) in &m.starts {
        let _ = writeln!(
            out,
            "ember_starts_total{{runtime=\"{rt}\",backend=\"{b}\",start=\"{k}\"}} {n}"
        );
    }
    family(
        out,
        "ember_sandbox_failures_total",
        "counter",
        "Sandboxes that failed during an invocation, by phase (inject counts injection failures).",
    );
    for (phase, n) in &m.failures {
        let _ = writeln!(out, "ember_sandbox_failures_total{{phase=\"{phase}\"}} {n}");
    }
    family(
        out,
        "ember_zygote_inits_total",
        "counter",
        "Function zygote inits (a fork-mode sandbox bound to its function), by outcome.",
    );
    for (o, n) in &m.zygote_inits {
        let _ = writeln!(out, "ember_zygote_inits_total{{outcome=\"{o}\"}} {n}");
    }
    family(
        out,
        "ember_sandboxes_found_dead_total",
        "counter",
        "Idle sandboxes found dead (agent, zygote or runner killed from outside) as an invocation took them; the invocation moved to another sandbox.",
    );
    for ((rt, b), n) in &m.found_dead {
        let _ = writeln!(
            out,
            "ember_sandboxes_found_dead_total{{runtime=\"{rt}\",backend=\"{b}\"}} {n}"
        );
    }
}

/// Sessions: open now (from the book), opened and ended so far.
pub fn render_sessions(metrics: &Metrics, open: &[(String, usize)], out: &mut String) {
    family(
        out,
        "ember_sessions_open",
        "gauge",
        "Sessions open now, by function.",
    );
    for (f, n) in open {
        let _ = writeln!(out, "ember_sessions_open{{function=\"{}\"}} {n}", escape(f));
    }
    let m = metrics.lock();
    family(
        out,
        "ember_sessions_opened_total",
        "counter",
        "Sessions opened, by function.",
    );
    for (f, n) in &m.sessions_opened {
        let _ = writeln!(
            out,
            "ember_sessions_opened_total{{function=\"{}\"}} {n}",
            escape(f)
        );
    }
    family(
        out,
        "ember_sessions_ended_total",
        "counter",
        "Sessions ended, by function and reason (closed, idle, lifetime, failed, ...).",
    );
    by_function(
        out,
        "ember_sessions_ended_total",
        "reason",
        &m.sessions_ended,
    );
}

/// Whether each deployed function is paused (1) or not (0).
pub fn render_paused(functions: &[ember_api::FunctionRecord], out: &mut String) {
    family(
        out,
        "ember_function_paused",
        "gauge",
        "1 while the function is paused (its invocations are refused with function_paused).",
    );
    for f in functions {
        let _ = writeln!(
            out,
            "ember_function_paused{{function=\"{}\"}} {}",
            escape(&f.name),
            u8::from(f.paused)
        );
    }
}

/// The history's state: whether it writes, what waits, failed writes.
pub fn render_history(s: &crate::history::HistoryStatus, out: &mut String) {
    let series = [
        (
            "ember_history_degraded",
            "gauge",
            "1 while invocation records cannot be written to SQLite (they wait in memory and in the journal).",
            u64::from(s.degraded),
        ),
        (
            "ember_history_records_waiting",
            "gauge",
            "Invocation records waiting to be written to SQLite.",
            s.waiting as u64,
        ),
        (
            "ember_history_write_errors_total",
            "counter",
            "Failed writes of invocation records to SQLite (each is retried).",
            s.write_errors,
        ),
    ];
    for (name, kind, help, v) in series {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// A histogram per invocation phase.
fn render_phases(m: &Inner, out: &mut String) {
    family(
        out,
        "ember_invocation_phase_seconds",
        "histogram",
        "Time per invocation phase (queue, create, thaw, inject, run, confine, cleanup, total).",
    );
    for (phase, h) in &m.phases {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ember_invocation_phase_seconds_bucket{{phase=\"{phase}\",le=\"{b}\"}} {}",
                h.counts.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            out,
            "ember_invocation_phase_seconds_bucket{{phase=\"{phase}\",le=\"+Inf\"}} {}\n\
             ember_invocation_phase_seconds_sum{{phase=\"{phase}\"}} {}\n\
             ember_invocation_phase_seconds_count{{phase=\"{phase}\"}} {}",
            h.count, h.sum, h.count
        );
    }
}

/// Each pool's gauges and counters, read when scraped.
fn render_pools(pools: &[PoolStatus], out: &mut String) {
    let gauges: [(&str, &str, PoolField); 5] = [
        ("ember_pool_sandboxes", "idle", |p| p.idle as u64),
        ("ember_pool_sandboxes", "bound", |p| p.bound as u64),
        ("ember_pool_sandboxes", "busy", |p| p.busy as u64),
        ("ember_pool_sandboxes", "creating", |p| p.creating as u64),
        ("ember_pool_sandboxes", "target", |p| p.target as u64),
    ];
    family(out,
        "ember_pool_sandboxes",
        "gauge",
        "Sandboxes of each pool by state (idle includes bound; target is the generic sandboxes wanted).",
    );
    for p in pools {
        for (name, state, get) in &gauges {
            let _ = writeln!(
                out,
                "{name}{{runtime=\"{}\",backend=\"{}\",state=\"{state}\"}} {}",
                p.runtime,
                p.backend,
                get(p)
            );
        }
    }
    family(
        out,
        "ember_pool_queued",
        "gauge",
        "Invocations admitted to each pool beyond what it runs at once: they wait for a sandbox.",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "ember_pool_queued{{runtime=\"{}\",backend=\"{}\"}} {}",
            p.runtime, p.backend, p.queued
        );
    }
    let counters: [(&str, &str, PoolField); 5] = [
        ("ember_sandboxes_created_total", "Sandboxes created.", |p| {
            p.created_total
        }),
        (
            "ember_sandboxes_destroyed_total",
            "Sandboxes destroyed.",
            |p| p.destroyed_total,
        ),
        (
            "ember_sandbox_create_failures_total",
            "Sandbox creations that failed.",
            |p| p.create_failures_total,
        ),
        (
            "ember_sandboxes_recycled_total",
            "Specialized sandboxes recycled.",
            |p| p.recycled_total,
        ),
        (
            "ember_sandboxes_adopted_total",
            "External sandboxes adopted.",
            |p| p.adopted_total,
        ),
    ];
    for (name, help, get) in &counters {
        family(out, name, "counter", help);
        for p in pools {
            let _ = writeln!(
                out,
                "{name}{{runtime=\"{}\",backend=\"{}\"}} {}",
                p.runtime,
                p.backend,
                get(p)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_functions_read_1() {
        let f = |name: &str, paused: bool| -> ember_api::FunctionRecord {
            serde_json::from_value(serde_json::json!({
                "name": name, "runtime": "python3", "handler": "main.handler",
                "timeout_ms": 1000, "profile": "default", "mode": "fork", "zygote": true,
                "limits": {}, "digest": "aa", "created_at": 1, "updated_at": 1,
                "paused": paused,
            }))
            .unwrap()
        };
        let mut text = String::new();
        render_paused(&[f("a", true), f("b", false)], &mut text);
        for line in [
            "# TYPE ember_function_paused gauge",
            "ember_function_paused{function=\"a\"} 1",
            "ember_function_paused{function=\"b\"} 0",
        ] {
            assert!(text.contains(line), "{text}");
        }
    }

    #[test]
    fn refusals_are_counted_by_function_and_code() {
        let m = Metrics::default();
        m.refused("slow", "overloaded");
        m.refused("slow", "overloaded");
        let text = m.render(&[]);
        assert!(
            text.contains(
                "ember_invocations_refused_total{function=\"slow\",code=\"overloaded\"} 2"
            ),
            "{text}"
        );
    }

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        let hot = Timings {
            run: 800,
            total: 1_500,
            ..Timings::default()
        };
        m.timings(Language::Python, Backend::Runc, StartKind::Hot, &hot);
        let cold = Timings {
            run: 30_000,
            total: 60_000,
            ..Timings::default()
        };
        m.timings(Language::Python, Backend::Runc, StartKind::Cold, &cold);
        m.invocation("f\"x", "ok");
        let text = m.render(&[]);
        assert!(
            text.contains("ember_invocation_phase_seconds_bucket{phase=\"run\",le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ember_invocation_phase_seconds_bucket{phase=\"run\",le=\"0.05\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ember_invocation_phase_seconds_count{phase=\"total\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("phase=\"create\""),
            "create only counts cold starts with a time"
        );
        assert!(text.contains("function=\"f\\\"x\""), "{text}");
        assert!(text
            .contains("ember_starts_total{runtime=\"python3\",backend=\"runc\",start=\"cold\"} 1"));
    }

    #[test]
    fn dead_sandboxes_are_counted_by_runtime() {
        let m = Metrics::default();
        m.sandbox_found_dead(Language::Python, Backend::Runc);
        m.sandbox_found_dead(Language::Python, Backend::Runc);
        let text = m.render(&[]);
        assert!(
            text.contains(
                "ember_sandboxes_found_dead_total{runtime=\"python3\",backend=\"runc\"} 2"
            ),
            "{text}"
        );
    }
}
