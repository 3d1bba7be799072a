//! The heavy-init scenario: a handler whose import takes over 150 ms
//! (numpy, then a deliberate sleep) and starts no thread, so a zygote may
//! fork it. Compared on runc: fork with its zygote turned off (every
//! invocation imports it), fork from a function zygote (imported once,
//! after the first invocation), specialized, and `runc run` of the same
//! handler in a fresh container.
//!
//! numpy comes from Debian's `python3-numpy`, linked against the reference
//! BLAS, which starts no threads (OpenBLAS would start one per CPU at
//! import, and functions cannot set `OPENBLAS_NUM_THREADS`); the handler
//! reports the thread count it saw at import so the report shows it.

use crate::cold;
use crate::hot::{self, Emberd};
use crate::stats::{summarize, Summary};
use crate::zygote::{self, Batch, Mode, Section};
use anyhow::{bail, Result};
use serde_json::json;
use std::path::Path;

const HANDLER: &str = r#"import os
import time

_t0 = time.perf_counter()
import numpy

time.sleep(0.15)
INIT_MS = (time.perf_counter() - _t0) * 1000.0
THREADS_AT_IMPORT = len(os.listdir("/proc/self/task"))


def handler(event, context):
    v = numpy.arange(4.0)
    return {
        "hello": event.get("name", "world"),
        "init_ms": INIT_MS,
        "threads_at_import": THREADS_AT_IMPORT,
        "dot": float(v.dot(v)),
    }
"#;

/// Sizes of the scenario.
pub struct Settings {
    pub iterations: usize,
    pub warmup: usize,
    pub cold_iterations: usize,
    pub event: String,
}

/// Figures the targets are checked against.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub zygote_daemon_p50: Option<f64>,
    pub init_p50: Option<f64>,
}

/// numpy must import in the host's Python, or the scenario says why not.
pub fn numpy_available(python: &str) -> bool {
    std::process::Command::new(python)
        .args(["-I", "-c", "import numpy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct ModeRun {
    mode: Mode,
    zygote_setting: String,
    first: hot::Sample,
    zygote: serde_json::Value,
    batch: Batch,
}

fn result_f64(s: &hot::Sample, key: &str) -> f64 {
    s.result[key].as_f64().unwrap_or(f64::NAN)
}

async fn run_mode(e: &Emberd, code: &Path, mode: Mode, s: &Settings) -> Result<ModeRun> {
    let name = mode.function("heavy");
    let zygote_setting = zygote::deploy(e, &name, code, mode).await?;
    let phase = format!("heavy-init, {}: first invocation", mode.label());
    let first = hot::invoke_n(e, phase, &name, &s.event, 1, "bench", 0).await?;
    let Some(first) = first.into_iter().next() else {
        bail!("{name}: no first invocation");
    };
    let zygote = zygote::settle(e, &name).await?;
    let phase = format!("heavy-init, {}: warm-up", mode.label());
    hot::invoke_n(e, phase, &name, &s.event, s.warmup, "bench", 0).await?;
    let phase = format!("heavy-init, {}: invocations", mode.label());
    let batch = zygote::batch(e, phase, &name, &s.event, s.iterations, 0).await?;
    Ok(ModeRun {
        mode,
        zygote_setting,
        first,
        zygote,
        batch,
    })
}

fn print_mode(r: &ModeRun) {
    let label = format!("heavy {}", r.mode.label());
    r.batch.print(&label);
    println!(
        "  first invocation: {} start, daemon {:.2} ms; zygote {}; zygote setting {}; threads at import {}",
        r.first.start,
        r.first.timings_us["total"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        r.zygote,
        r.zygote_setting,
        result_f64(&r.first, "threads_at_import"),
    );
}

fn mode_json(r: &ModeRun) -> serde_json::Value {
    let init: Vec<f64> = r
        .batch
        .samples
        .iter()
        .map(|s| result_f64(s, "init_ms"))
        .collect();
    json!({
        "function": r.mode.function("heavy"),
        "zygote_setting": r.zygote_setting,
        "zygote": r.zygote,
        "first": zygote::first_json(&r.first),
        "threads_at_import": result_f64(&r.first, "threads_at_import"),
        "init_ms_reported": summarize(&init),
        "timed": r.batch.json(),
    })
}

/// Ratios of the summary: how far each path is below the one before it.
fn ratios(runs: &[ModeRun], init: &Summary, cold: &Summary) -> serde_json::Value {
    let p50 = |m: Mode, daemon: bool| {
        runs.iter().find(|r| r.mode == m).map(|r| {
            if daemon {
                r.batch.daemon().p50_ms
            } else {
                r.batch.client().p50_ms
            }
        })
    };
    let over = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    json!({
        "generic_over_zygote_daemon_p50": over(p50(Mode::ForkGeneric, true), p50(Mode::ForkZygote, true)),
        "init_over_zygote_daemon_p50": over(Some(init.p50_ms), p50(Mode::ForkZygote, true)),
        "runc_run_over_zygote_client_p50": over(Some(cold.p50_ms), p50(Mode::ForkZygote, false)),
        "runc_run_over_specialized_client_p50": over(Some(cold.p50_ms), p50(Mode::Specialized, false)),
        "runc_run_over_generic_client_p50": over(Some(cold.p50_ms), p50(Mode::ForkGeneric, false)),
    })
}

/// Run the scenario on runc.
pub async fn run(emberd_bin: &Path, s: &Settings) -> Result<Section<Figures>> {
    let code = crate::code_dir("bench-heavy-", HANDLER)?;
    println!();
    println!(
        "{:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "heavy-init (numpy + 150 ms) on runc (ms)", "n", "p50", "p90", "p99", "mean"
    );
    let mut emberd = Emberd::start(emberd_bin, 2, "runc").await?;
    let mut runs = Vec::new();
    for mode in Mode::ALL {
        let r = run_mode(&emberd, code.path(), mode, s).await?;
        print_mode(&r);
        runs.push(r);
    }
    emberd.stop()?;
    let rt = cold::Runtime {
        binary: "runc".into(),
        global_args: Vec::new(),
    };
    let phase = "heavy-init: `runc run` cold starts".to_string();
    let cold_ms = cold::run(
        &rt,
        phase,
        code.path(),
        &s.event,
        s.cold_iterations,
        "bench",
    )?;
    crate::remove_bench_cgroups();
    let cold = summarize(&cold_ms);
    crate::row("heavy `runc run` (cold start)", &cold);
    // The import cost as the handler measured it, in the runs that pay it.
    let init_ms: Vec<f64> = runs
        .iter()
        .filter(|r| r.mode == Mode::ForkGeneric)
        .flat_map(|r| r.batch.samples.iter().map(|x| result_f64(x, "init_ms")))
        .collect();
    let init = summarize(&init_ms);
    let ratios = ratios(&runs, &init, &cold);
    println!(
        "  init (import numpy + sleep) p50 {:.1} ms; ratios {ratios}",
        init.p50_ms
    );
    let zygote_run = runs.iter().find(|r| r.mode == Mode::ForkZygote);
    let figures = Figures {
        zygote_daemon_p50: zygote_run.map(|r| r.batch.daemon().p50_ms),
        init_p50: Some(init.p50_ms).filter(|v| v.is_finite()),
    };
    let mut rows: Vec<crate::svg::Row> = runs
        .iter()
        .map(|r| crate::svg::Row {
            label: format!("heavy-init ember {}", r.mode.label()),
            summary: r.batch.client(),
            hot: true,
        })
        .collect();
    rows.push(crate::svg::Row {
        label: "heavy-init runc run (cold)".into(),
        summary: cold.clone(),
        hot: false,
    });
    let modes: serde_json::Map<_, _> = runs
        .iter()
        .map(|r| (r.mode.key().to_string(), mode_json(r)))
        .collect();
    let report = json!({
        "handler": HANDLER,
        "iterations": s.iterations,
        "modes": modes,
        "runc_run": { "summary": cold, "cold_ms": cold_ms },
        "init_ms": init,
        "ratios": ratios,
    });
    let batches: Vec<(String, &Batch)> = runs
        .iter()
        .map(|r| (format!("heavy-init {}", r.mode.label()), &r.batch))
        .collect();
    let groups = vec![zygote::cpu_group(
        "heavy-init: ember CPU per invocation (emberd + sandboxes), back to back",
        &batches,
    )];
    Ok(Section {
        report,
        rows,
        groups,
        figures,
    })
}
