//! What the function-zygote scenarios share: the three ways a Python
//! function can run (fork with its zygote turned off, fork from a function
//! zygote, specialized), deploying in each, waiting for emberd to bind a
//! zygote, and timed batches with the CPU they cost.
//!
//! An emberd from before function zygotes refuses the `zygote` deploy
//! setting: the function is then deployed without it and the report says
//! so (`zygote_setting`), so the bench still runs against it.

use crate::cpu;
use crate::hot::{self, Emberd, Sample};
use crate::stats::{summarize, Summary};
use anyhow::{bail, Result};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// How a Python function is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fork mode, `zygote=false`: every invocation imports the handler.
    ForkGeneric,
    /// Fork mode with a function zygote (the default): after the first
    /// invocation, workers fork from a process that imported it once.
    ForkZygote,
    /// A sandbox bound to the function keeps it loaded.
    Specialized,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::ForkGeneric, Mode::ForkZygote, Mode::Specialized];

    /// Key in the JSON report and suffix of the function's name.
    pub fn key(self) -> &'static str {
        match self {
            Mode::ForkGeneric => "fork_generic",
            Mode::ForkZygote => "fork_zygote",
            Mode::Specialized => "specialized",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::ForkGeneric => "fork, zygote off",
            Mode::ForkZygote => "fork, function zygote",
            Mode::Specialized => "specialized",
        }
    }

    /// Deploy query settings; fork modes name `zygote` explicitly.
    fn settings(self) -> &'static str {
        match self {
            Mode::ForkGeneric => "mode=fork&zygote=false",
            Mode::ForkZygote => "mode=fork&zygote=true",
            Mode::Specialized => "mode=specialized",
        }
    }

    /// The function's name, `<prefix>-fork-zygote`: dash-separated like
    /// the bench's other function names.
    pub fn function(self, prefix: &str) -> String {
        format!("{prefix}-{}", self.key().replace('_', "-"))
    }
}

/// Deploy `code` as `name` in `mode`. Returns what became of the
/// `zygote` setting: `"sent"`, `"none"` (specialized) or why emberd
/// refused it (the function is then deployed without it).
pub async fn deploy(e: &Emberd, name: &str, code: &Path, mode: Mode) -> Result<String> {
    let settings = mode.settings();
    match hot::deploy_with(e, name, code, settings).await {
        Ok(()) if settings.contains("zygote") => Ok("sent".into()),
        Ok(()) => Ok("none".into()),
        Err(err) if settings.contains("zygote") && err.to_string().contains("zygote") => {
            let without = settings.split('&').next().unwrap_or("mode=fork");
            hot::deploy_with(e, name, code, without).await?;
            eprintln!("{name}: emberd refused the zygote setting, deployed without it");
            Ok(format!("refused ({err:#}); deployed without it"))
        }
        Err(err) => Err(err),
    }
}

/// The function's `zygote_state` (`{"state": "ready", "init_us"}`,
/// `{"state": "fallback", "outcome", "reason"}`, ...), or null from an
/// emberd without function zygotes.
pub async fn zygote_state(e: &Emberd, name: &str) -> Result<serde_json::Value> {
    let a = e.client.get(&format!("/v1/functions/{name}")).await?;
    if !a.status.is_success() {
        bail!("GET function {name}: {}", a.error_message());
    }
    Ok(a.json()["zygote_state"].clone())
}

/// After a function's first invocation emberd binds its zygote in the
/// background: wait (up to 5 s) until it is no longer `pending`, so the
/// timed invocations measure the settled path.
pub async fn settle(e: &Emberd, name: &str) -> Result<serde_json::Value> {
    let t = Instant::now();
    loop {
        let z = zygote_state(e, name).await?;
        if z["state"] != "pending" || t.elapsed() > Duration::from_secs(5) {
            return Ok(z);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a scenario hands back: its report section, its chart rows and
/// bar groups, and the figures the targets are checked against.
pub struct Section<F> {
    pub report: serde_json::Value,
    pub rows: Vec<crate::svg::Row>,
    pub groups: Vec<crate::svg::BarGroup>,
    pub figures: F,
}

/// Bars of the CPU one invocation costs ember (emberd, the runtime
/// processes it ran, the sandboxes), one per labelled batch that has it.
/// Not machine-wide: on a shared machine that counts other people's work.
pub fn cpu_group(title: &str, batches: &[(String, &Batch)]) -> crate::svg::BarGroup {
    crate::svg::BarGroup {
        title: title.to_string(),
        unit: "us".into(),
        bars: batches
            .iter()
            .filter_map(|(label, b)| {
                b.cpu.as_ref().map(|c| crate::svg::Bar {
                    label: label.clone(),
                    value: c.ember_us(),
                })
            })
            .collect(),
    }
}

/// Timed invocations and the CPU they took.
pub struct Batch {
    pub samples: Vec<Sample>,
    pub cpu: Option<cpu::PerInvocation>,
}

/// How long background work (a pool refill, the last cleanup) may run on
/// after a batch and still be charged to it; and how long it is let
/// finish before one, so it is not.
const SETTLE: Duration = Duration::from_millis(200);

/// `n` sequential invocations, `gap_ms` apart, on one kept-alive
/// connection, with emberd's, the sandboxes', the bench's and the
/// machine's CPU read around them.
pub async fn batch(
    e: &Emberd,
    phase: String,
    name: &str,
    event: &str,
    n: usize,
    gap_ms: u64,
) -> Result<Batch> {
    let tag = e.tag().await?;
    tokio::time::sleep(SETTLE).await;
    let before = e.pid().map(|pid| cpu::Snapshot::take(pid, &tag));
    let samples = hot::invoke_n(e, phase, name, event, n, "bench", gap_ms).await?;
    tokio::time::sleep(SETTLE).await;
    let cpu = before.zip(e.pid()).map(|(b, pid)| {
        cpu::Snapshot::take(pid, &tag)
            .since(&b)
            .per_invocation(samples.len())
    });
    Ok(Batch { samples, cpu })
}

pub fn client_ms(samples: &[Sample]) -> Vec<f64> {
    samples.iter().map(|s| s.client_ms).collect()
}

pub fn daemon_ms(samples: &[Sample]) -> Vec<f64> {
    crate::phase_ms(samples, "total")
}

impl Batch {
    pub fn client(&self) -> Summary {
        summarize(&client_ms(&self.samples))
    }

    pub fn daemon(&self) -> Summary {
        summarize(&daemon_ms(&self.samples))
    }

    /// Print the client and daemon rows, the start kinds and the CPU.
    pub fn print(&self, label: &str) {
        let starts = crate::scenarios::start_counts(&self.samples);
        crate::row(&format!("{label} (client; {starts})"), &self.client());
        crate::row(&format!("{label} (daemon)"), &self.daemon());
        if let Some(c) = &self.cpu {
            println!("  {}", c.line());
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let phases = ["queue", "thaw", "inject", "run", "confine", "cleanup"];
        let phase_p50: serde_json::Map<_, _> = phases
            .iter()
            .map(|p| {
                let s = summarize(&crate::phase_ms(&self.samples, p));
                (p.to_string(), json!(s.p50_ms))
            })
            .collect();
        json!({
            "client": self.client(),
            "daemon_total": self.daemon(),
            "phase_p50_ms": phase_p50,
            "starts": crate::scenarios::start_counts(&self.samples),
            "cpu_per_invocation_us": self.cpu,
            "samples": self.samples,
        })
    }
}

/// The first invocation of a freshly deployed function, as the report
/// shows it.
pub fn first_json(s: &Sample) -> serde_json::Value {
    json!({
        "start": s.start,
        "client_ms": s.client_ms,
        "daemon_ms": s.timings_us["total"].as_f64().unwrap_or(f64::NAN) / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_name_functions_and_settings() {
        let names: Vec<String> = Mode::ALL.iter().map(|m| m.function("heavy")).collect();
        assert_eq!(
            names,
            [
                "heavy-fork-generic",
                "heavy-fork-zygote",
                "heavy-specialized"
            ]
        );
        assert!(Mode::ForkGeneric.settings().ends_with("zygote=false"));
        assert!(!Mode::Specialized.settings().contains("zygote"));
    }
}
