//! The per-backend part of the report: the table printed for each
//! backend (hot-swap against cold start, phases, paused memory, freeze and
//! thaw), its chart rows and its `backends` entry.

use crate::stats::summarize;
use crate::{client_ms, phase_ms, row, scenarios, svg, BackendResult};
use serde_json::json;

/// Print the per-backend table; the report's `backends` and chart rows.
pub(crate) fn section(
    results: &[BackendResult],
) -> (serde_json::Map<String, serde_json::Value>, Vec<svg::Row>) {
    if !results.is_empty() {
        println!(
            "\n{:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
            "(milliseconds)", "n", "p50", "p90", "p99", "mean"
        );
    }
    let mut chart = Vec::new();
    let mut report_backends = serde_json::Map::new();
    for r in results {
        let (rows, report) = backend(r);
        chart.extend(rows);
        report_backends.insert(r.name.clone(), report);
    }
    (report_backends, chart)
}

/// One backend's lines of the table, chart rows and report entry.
fn backend(r: &BackendResult) -> (Vec<svg::Row>, serde_json::Value) {
    let mut chart = Vec::new();
    let hot = summarize(&client_ms(&r.hot));
    let daemon = summarize(&phase_ms(&r.hot, "total"));
    let cold = summarize(&r.cold_ms);
    println!();
    // Fork mode's default: a hot-swap first, then warm starts from the
    // function zygote; the start kinds line says which were timed.
    row(&format!("{}: ember invoke (client)", r.name), &hot);
    row(&format!("{}: ember invoke (daemon)", r.name), &daemon);
    let strict = (!r.strict.is_empty()).then(|| summarize(&client_ms(&r.strict)));
    if let Some(s) = &strict {
        row(&format!("{}: ember, strict profile (client)", r.name), s);
    }
    let cold_name = if r.name == "libcontainer" {
        "runc"
    } else {
        &r.name
    };
    row(&format!("{}: `{cold_name} run` cold start", r.name), &cold);
    println!(
        "{}: cold / ember = {:.1}x at p50, {:.1}x at p99; starts: {}",
        r.name,
        cold.p50_ms / hot.p50_ms,
        cold.p99_ms / hot.p99_ms,
        scenarios::start_counts(&r.hot)
    );
    let phases = ["queue", "thaw", "inject", "run", "confine", "cleanup"];
    let phase_p50: Vec<String> = phases
        .iter()
        .map(|p| format!("{p} {:.3}", summarize(&phase_ms(&r.hot, p)).p50_ms))
        .collect();
    println!("{}: phase p50 (ms): {}", r.name, phase_p50.join(", "));
    let n = r.memory.len().max(1) as u64;
    let pss = r.memory.iter().map(|m| m.pss_kib).sum::<u64>() / n;
    let rss = r.memory.iter().map(|m| m.rss_kib).sum::<u64>() / n;
    println!(
        "{}: paused sandbox memory: PSS {:.1} MiB, RSS {:.1} MiB (mean of {}, processes {:?})",
        r.name,
        pss as f64 / 1024.0,
        rss as f64 / 1024.0,
        r.memory.len(),
        r.memory.iter().map(|m| m.processes).collect::<Vec<_>>()
    );
    let pc = summarize(&r.pause_cgroup_ms);
    let pr = summarize(&r.pause_runtime_ms);
    println!(
        "{}: freeze+thaw p50: cgroup freezer {:.3} ms, `{} pause`+`resume` {:.3} ms",
        r.name, pc.p50_ms, r.name, pr.p50_ms
    );
    chart.push(svg::Row {
        label: format!("{} ember invoke", r.name),
        summary: hot.clone(),
        hot: true,
    });
    chart.push(svg::Row {
        label: format!("{} {cold_name} run (cold)", r.name),
        summary: cold.clone(),
        hot: false,
    });
    let report = json!({
        "summary": {
            "ember_client": hot,
            "ember_daemon_total": daemon,
            "ember_strict_client": strict,
            "confine_default": summarize(&phase_ms(&r.hot, "confine")),
            "confine_strict": summarize(&phase_ms(&r.strict, "confine")),
            "cold": cold,
            "ratio_p50": cold.p50_ms / hot.p50_ms,
            "ratio_p99": cold.p99_ms / hot.p99_ms,
            "phase_p50_ms": phases.iter().map(|p| (p.to_string(), json!(summarize(&phase_ms(&r.hot, p)).p50_ms))).collect::<serde_json::Map<_, _>>(),
            "memory_pss_kib_mean": pss,
            "memory_rss_kib_mean": rss,
            "pause_cgroup": pc,
            "pause_runtime": pr,
        },
        "memory": r.memory,
        "samples": {
            "ember": r.hot,
            "ember_strict": r.strict,
            "cold_ms": r.cold_ms,
            "pause_cgroup_ms": r.pause_cgroup_ms,
            "pause_runtime_ms": r.pause_runtime_ms,
        },
    });
    (chart, report)
}
