//! The hello handler in each Python mode (fork with its zygote off, fork
//! from a function zygote, specialized) on runc: latency and CPU per
//! invocation back to back; then fork with a function zygote at several
//! gaps between invocations (back to back, the sandbox has no time to
//! settle; 5 and 20 ms, it has); the memory of the paused sandboxes,
//! generic and bound; and `runc run` of the same handler.

use crate::cold;
use crate::hot::{self, Emberd};
use crate::stats::summarize;
use crate::zygote::{self, Batch, Mode, Section};
use anyhow::Result;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

pub struct Settings {
    pub iterations: usize,
    pub warmup: usize,
    pub gaps: Vec<u64>,
    pub cold_iterations: usize,
    pub event: String,
}

/// Figures the targets are checked against.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Fork with a function zygote, back to back: (daemon p50, client p50).
    pub fork_back_to_back: Option<(f64, f64)>,
    /// Fork with a function zygote per gap: (gap ms, daemon p50, client p50).
    pub fork_gaps: Vec<(u64, f64, f64)>,
    pub runc_run_p50: Option<f64>,
    pub paused_generic_pss_mib: Option<f64>,
}

/// One mode's report section and its timed batch.
async fn run_mode(
    e: &Emberd,
    code: &Path,
    mode: Mode,
    s: &Settings,
) -> Result<(serde_json::Value, Batch)> {
    let name = mode.function("hello");
    let zygote_setting = zygote::deploy(e, &name, code, mode).await?;
    let phase = format!("hello, {}: first invocation", mode.label());
    let first = hot::invoke_n(e, phase, &name, &s.event, 1, "bench", 0).await?;
    let zygote = zygote::settle(e, &name).await?;
    let phase = format!("hello, {}: warm-up", mode.label());
    hot::invoke_n(e, phase, &name, &s.event, s.warmup, "bench", 0).await?;
    let phase = format!("hello, {}: invocations", mode.label());
    let batch = zygote::batch(e, phase, &name, &s.event, s.iterations, 0).await?;
    batch.print(&format!("hello {}", mode.label()));
    let report = json!({
        "function": name,
        "zygote_setting": zygote_setting,
        "zygote": zygote,
        "first": first.first().map(zygote::first_json),
        "timed": batch.json(),
    });
    Ok((report, batch))
}

async fn gap_runs(e: &Emberd, s: &Settings) -> Result<Vec<(u64, Batch)>> {
    let name = Mode::ForkZygote.function("hello");
    let mut out = Vec::new();
    for &gap in &s.gaps {
        let phase = format!("hello, fork with zygote, {gap} ms apart");
        let b = zygote::batch(e, phase, &name, &s.event, s.iterations, gap).await?;
        b.print(&format!("hello fork+zygote, {gap} ms gap"));
        out.push((gap, b));
    }
    Ok(out)
}

/// PSS and RSS of the idle sandboxes, generic ones apart from those bound
/// to a function (a function zygote or a specialized function loaded).
async fn paused_memory(e: &Emberd) -> Result<(serde_json::Value, Option<f64>)> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tag = e.tag().await?;
    let sandboxes = e.client.get("/v1/sandboxes").await?.json()["sandboxes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let idle = sandboxes.iter().filter(|s| s["state"] == "idle");
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in idle {
        let label = s["bound_to"].as_str().unwrap_or("generic").to_string();
        if let Some(id) = s["id"].as_str() {
            groups.entry(label).or_default().push(id.to_string());
        }
    }
    let mut out = serde_json::Map::new();
    let mut generic = None;
    for (label, ids) in groups {
        let m = crate::memory::measure(&tag, &ids);
        let n = m.len().max(1) as u64;
        let pss = m.iter().map(|x| x.pss_kib).sum::<u64>() / n;
        let rss = m.iter().map(|x| x.rss_kib).sum::<u64>() / n;
        println!(
            "  paused python3 sandbox, {label}: PSS {:.1} MiB, RSS {:.1} MiB (mean of {})",
            pss as f64 / 1024.0,
            rss as f64 / 1024.0,
            m.len()
        );
        if label == "generic" {
            generic = Some(pss as f64 / 1024.0);
        }
        out.insert(
            label,
            json!({ "pss_kib_mean": pss, "rss_kib_mean": rss, "n": m.len() }),
        );
    }
    Ok((serde_json::Value::Object(out), generic))
}

/// Run on runc.
pub async fn run(emberd_bin: &Path, code: &Path, s: &Settings) -> Result<Section<Figures>> {
    println!();
    println!(
        "{:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "hello per mode on runc (ms)", "n", "p50", "p90", "p99", "mean"
    );
    let mut emberd = Emberd::start(emberd_bin, 2, "runc").await?;
    let mut modes = serde_json::Map::new();
    let mut rows = Vec::new();
    let mut batches = Vec::new();
    let mut figures = Figures::default();
    for mode in Mode::ALL {
        let (r, batch) = run_mode(&emberd, code, mode, s).await?;
        if mode == Mode::ForkZygote {
            figures.fork_back_to_back = Some((batch.daemon().p50_ms, batch.client().p50_ms));
        }
        rows.push(crate::svg::Row {
            label: format!("hello ember {}", mode.label()),
            summary: batch.client(),
            hot: true,
        });
        modes.insert(mode.key().to_string(), r);
        batches.push((format!("hello {}", mode.label()), batch));
    }
    let gaps = gap_runs(&emberd, s).await?;
    figures.fork_gaps = gaps
        .iter()
        .map(|(g, b)| (*g, b.daemon().p50_ms, b.client().p50_ms))
        .collect();
    let (memory, generic_pss) = paused_memory(&emberd).await?;
    figures.paused_generic_pss_mib = generic_pss;
    emberd.stop()?;
    let rt = cold::Runtime {
        binary: "runc".into(),
        global_args: Vec::new(),
    };
    let phase = "hello: `runc run` cold starts".to_string();
    let cold_ms = cold::run(&rt, phase, code, &s.event, s.cold_iterations, "bench")?;
    crate::remove_bench_cgroups();
    let cold = summarize(&cold_ms);
    crate::row("hello `runc run` (cold start)", &cold);
    figures.runc_run_p50 = Some(cold.p50_ms).filter(|v| v.is_finite());
    rows.push(crate::svg::Row {
        label: "hello runc run (cold)".into(),
        summary: cold.clone(),
        hot: false,
    });
    let gaps_json: serde_json::Map<_, _> = gaps
        .iter()
        .map(|(g, b)| (format!("{g}ms"), b.json()))
        .collect();
    let labelled: Vec<(String, &Batch)> = batches.iter().map(|(l, b)| (l.clone(), b)).collect();
    let groups = vec![zygote::cpu_group(
        "hello: ember CPU per invocation (emberd + sandboxes), back to back",
        &labelled,
    )];
    Ok(Section {
        report: json!({
            "iterations": s.iterations,
            "modes": modes,
            "gaps": gaps_json,
            "paused_memory": memory,
            "runc_run": { "summary": cold, "cold_ms": cold_ms },
        }),
        rows,
        groups,
        figures,
    })
}
