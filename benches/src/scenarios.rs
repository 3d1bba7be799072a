//! Two scenarios beyond the per-backend hot-swap run:
//!
//! - **modes**: the same handler in Python fork mode (a fresh worker per
//!   invocation, code hot-swapped), Python specialized mode and Node.js
//!   (specialized: the sandbox keeps the function loaded), side by side in
//!   one emberd, against `runc run` cold starts of the Python and the
//!   JavaScript handler.
//! - **burst**: a rising concurrent load (waves of 1, 2, ... N concurrent
//!   invocations, a second apart) against a fixed pool and against a pool
//!   that follows demand; counts hot and cold starts of each.
//! - **lifecycle**: what an operator waits for: emberd's start on an empty
//!   state dir, its restart after a SIGKILL in the middle of an invocation
//!   (recovery removes the previous run's sandboxes first), and its stop on
//!   SIGTERM (drain, then every sandbox removed).

use crate::cold::{self, Lang};
use crate::hot::{self, Emberd, Sample};
use crate::stats::summarize;
use anyhow::{bail, Result};
use ember_term as progress;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const JS_HANDLER: &str =
    "exports.handler = async (event) => ({ hello: event.name || \"world\" });\n";
const SLEEPY_HANDLER: &str = "import time\ndef handler(event, context):\n    time.sleep(3)\n";
const SLOW_HANDLER: &str =
    "import time\ndef handler(event, context):\n    time.sleep(0.1)\n    return {\"hello\": \"bench\"}\n";

fn print_row(name: &str, samples: &[f64]) {
    let s = summarize(samples);
    crate::row(name, &s);
}

/// Python fork vs Python specialized vs Node.js, and both languages' cold
/// starts, on runc.
pub async fn modes(
    emberd_bin: &Path,
    py_code: &Path,
    iterations: usize,
    cold_iterations: usize,
    warmup: usize,
    gap_ms: u64,
    event: &str,
) -> Result<(serde_json::Value, Vec<crate::svg::Row>)> {
    let node = Path::new("/usr/bin/node").exists();
    let runtimes = if node { "python3,node" } else { "python3" };
    if !node {
        eprintln!("modes: /usr/bin/node not installed, Node.js skipped (apt-get install nodejs)");
    }
    let js_dir = tempfile::tempdir()?;
    std::fs::write(js_dir.path().join("index.js"), JS_HANDLER)?;
    let mut emberd = Emberd::start_with(emberd_bin, 2, "runc", &["--runtimes", runtimes]).await?;
    hot::deploy_with(&emberd, "py-fork", py_code, "mode=fork").await?;
    hot::deploy_with(&emberd, "py-specialized", py_code, "mode=specialized").await?;
    let mut names = vec!["py-fork", "py-specialized"];
    if node {
        hot::deploy_with(&emberd, "js", js_dir.path(), "runtime=node").await?;
        names.push("js");
    }
    println!();
    println!(
        "{:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "modes on runc (client ms)", "n", "p50", "p90", "p99", "mean"
    );
    let (mut out, mut chart, p50) =
        time_modes(&emberd, &names, iterations, warmup, gap_ms, event).await?;
    out.insert("paused_memory".into(), paused_memory(&emberd).await?);
    emberd.stop()?;
    let js = node.then(|| js_dir.path());
    let (cold, cold_rows) = mode_cold_starts(py_code, js, cold_iterations, event, &p50)?;
    out.extend(cold);
    chart.extend(cold_rows);
    crate::remove_bench_cgroups();
    Ok((serde_json::Value::Object(out), chart))
}

/// The deployed functions `names`, invoked in turn: their report
/// entries, chart rows and client p50s (ms).
async fn time_modes(
    emberd: &Emberd,
    names: &[&str],
    iterations: usize,
    warmup: usize,
    gap_ms: u64,
    event: &str,
) -> Result<(
    serde_json::Map<String, serde_json::Value>,
    Vec<crate::svg::Row>,
    std::collections::BTreeMap<String, f64>,
)> {
    let mut out = serde_json::Map::new();
    let mut chart = Vec::new();
    let mut p50 = std::collections::BTreeMap::new();
    for name in names {
        let phase = format!("modes: {name}, warm-up invocations");
        hot::invoke_n(emberd, phase, name, event, warmup, "bench", gap_ms).await?;
        let phase = format!("modes: {name}, invocations");
        let samples =
            hot::invoke_n(emberd, phase, name, event, iterations, "bench", gap_ms).await?;
        let ms: Vec<f64> = samples.iter().map(|s| s.client_ms).collect();
        let kinds = start_counts(&samples);
        print_row(&format!("ember {name} ({kinds})"), &ms);
        p50.insert(name.to_string(), summarize(&ms).p50_ms);
        chart.push(crate::svg::Row {
            label: format!("runc ember {name}"),
            summary: summarize(&ms),
            hot: true,
        });
        out.insert(
            name.to_string(),
            json!({ "client_ms": ms, "summary": summarize(&ms), "starts": kinds }),
        );
    }
    Ok((out, chart, p50))
}

/// Memory of the paused sandboxes, per runtime: bound ones hold their
/// loaded function.
async fn paused_memory(emberd: &Emberd) -> Result<serde_json::Value> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tag = emberd.client.get("/v1/health").await?.json()["instance"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let sandboxes = emberd.client.get("/v1/sandboxes").await?.json()["sandboxes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut memory = serde_json::Map::new();
    for (label, runtime, bound) in [
        ("python3 generic", "python3", false),
        ("python3 bound (py-specialized)", "python3", true),
        ("node bound (js)", "node", true),
        ("node generic", "node", false),
    ] {
        let ids: Vec<String> = sandboxes
            .iter()
            .filter(|s| s["state"] == "idle" && s["runtime"] == runtime)
            .filter(|s| s["bound_to"].is_string() == bound)
            .filter_map(|s| s["id"].as_str().map(String::from))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let m = crate::memory::measure(&tag, &ids);
        let n = m.len().max(1) as u64;
        let pss = m.iter().map(|x| x.pss_kib).sum::<u64>() / n;
        let rss = m.iter().map(|x| x.rss_kib).sum::<u64>() / n;
        println!(
            "  paused {label}: PSS {:.1} MiB, RSS {:.1} MiB (mean of {})",
            pss as f64 / 1024.0,
            rss as f64 / 1024.0,
            m.len()
        );
        memory.insert(
            label.to_string(),
            json!({ "pss_kib_mean": pss, "rss_kib_mean": rss, "n": m.len() }),
        );
    }
    Ok(serde_json::Value::Object(memory))
}

/// `runc run` cold starts of the Python handler and (with `js_code`) the
/// JavaScript one, against the specialized warm p50s: report entries and
/// chart rows.
fn mode_cold_starts(
    py_code: &Path,
    js_code: Option<&Path>,
    cold_iterations: usize,
    event: &str,
    p50: &std::collections::BTreeMap<String, f64>,
) -> Result<(
    serde_json::Map<String, serde_json::Value>,
    Vec<crate::svg::Row>,
)> {
    let mut out = serde_json::Map::new();
    let mut chart = Vec::new();
    let rt = cold::Runtime {
        binary: "runc".into(),
        global_args: Vec::new(),
    };
    let mut colds = vec![("python", Lang::Python, py_code.to_path_buf())];
    if let Some(js) = js_code {
        colds.push(("node", Lang::Node, js.to_path_buf()));
    }
    for (lang_name, lang, code) in colds {
        let phase = format!("modes: `runc run` {lang_name} cold starts");
        let ms = cold::run_lang(&rt, phase, &code, event, cold_iterations, "bench", lang)?;
        print_row(&format!("runc run, {lang_name} (cold start)"), &ms);
        let cold_p50 = summarize(&ms).p50_ms;
        chart.push(crate::svg::Row {
            label: format!("runc run {lang_name} (cold)"),
            summary: summarize(&ms),
            hot: false,
        });
        let warm = match lang {
            Lang::Python => p50.get("py-specialized"),
            Lang::Node => p50.get("js"),
        };
        if let Some(w) = warm {
            println!(
                "  {lang_name}: specialized warm p50 {w:.2} ms vs cold {cold_p50:.2} ms: {:.0}x",
                cold_p50 / w
            );
        }
        out.insert(
            format!("runc_run_{lang_name}"),
            json!({ "cold_ms": ms, "summary": summarize(&ms) }),
        );
    }
    Ok((out, chart))
}

/// `"180 warm, 20 hot"`: how many invocations started each way.
pub fn start_counts(samples: &[Sample]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for s in samples {
        *counts.entry(s.start.as_str()).or_insert(0usize) += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One invocation of the burst, as seen by the client.
struct BurstSample {
    wave: usize,
    start: String,
    client_ms: f64,
}

async fn run_waves(
    emberd: &Emberd,
    label: &str,
    waves: usize,
    spacing: Duration,
) -> Result<Vec<BurstSample>> {
    let mut out = Vec::new();
    let bar = progress::bar(waves as u64, format!("burst, {label}: waves"));
    for wave in 1..=waves {
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..wave {
            let client = emberd.client.clone();
            set.spawn(async move {
                let t = Instant::now();
                let a = client
                    .request(
                        hyper::Method::POST,
                        "/v1/functions/slow/invoke",
                        Some("application/json"),
                        "{}",
                    )
                    .await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if !a.status.is_success() {
                    bail!("burst invocation failed: {}", a.error_message());
                }
                Ok::<_, anyhow::Error>((a.json()["start"].as_str().unwrap_or("?").to_string(), ms))
            });
        }
        while let Some(r) = set.join_next().await {
            let (start, client_ms) = r??;
            out.push(BurstSample {
                wave,
                start,
                client_ms,
            });
        }
        bar.inc(1);
        tokio::time::sleep(spacing.saturating_sub(t.elapsed())).await;
    }
    Ok(out)
}

/// The same rising load against a fixed pool and a demand-following one.
pub async fn burst(emberd_bin: &Path, waves: usize, spacing_ms: u64) -> Result<serde_json::Value> {
    let code = tempfile::tempdir()?;
    std::fs::write(code.path().join("main.py"), SLOW_HANDLER)?;
    println!();
    println!(
        "burst: waves of 1..{waves} concurrent 100 ms invocations, {spacing_ms} ms apart, pool min 2 (runc)"
    );
    let mut out = serde_json::Map::new();
    let settings: [(&str, Vec<&str>); 2] = [
        // Exactly the warm floor; extras a burst creates are still kept
        // for --idle-trim-ms, as always.
        (
            "fixed pool",
            vec!["--pool-headroom", "0", "--pool-max-warm", "2"],
        ),
        (
            "demand-following pool",
            vec!["--pool-headroom", "1", "--pool-max-warm", "8"],
        ),
    ];
    for (label, flags) in settings {
        let mut args = vec!["--max-sandboxes", "10"];
        args.extend(flags.iter().copied());
        let mut emberd = Emberd::start_with(emberd_bin, 2, "runc", &args).await?;
        hot::deploy_with(&emberd, "slow", code.path(), "mode=fork").await?;
        let samples = run_waves(&emberd, label, waves, Duration::from_millis(spacing_ms)).await?;
        emberd.stop()?;
        let hot_n = samples.iter().filter(|s| s.start == "hot").count();
        let cold_n = samples.iter().filter(|s| s.start == "cold").count();
        let ms: Vec<f64> = samples.iter().map(|s| s.client_ms).collect();
        let per_wave: Vec<usize> = (1..=waves)
            .map(|w| {
                samples
                    .iter()
                    .filter(|s| s.wave == w && s.start == "cold")
                    .count()
            })
            .collect();
        print_row(&format!("{label}: {hot_n} hot, {cold_n} cold"), &ms);
        println!("  cold starts per wave: {per_wave:?}");
        out.insert(
            label.to_string(),
            json!({ "hot": hot_n, "cold": cold_n, "cold_per_wave": per_wave, "client_ms": ms, "summary": summarize(&ms) }),
        );
    }
    Ok(serde_json::Value::Object(out))
}

/// `ctr run --rm` of a one-line container under a private containerd,
/// through runc directly and through `ember-runtime` (no profile, and the
/// strict profile) under the runc v2 shim, and through ember's own shim
/// (`containerd-shim-ember-v1`) on runc and on runsc, interleaved: what the
/// wrapper and the shim cost a container start.
pub fn containerd(runs: usize) -> Result<Option<serde_json::Value>> {
    use ember_integration::containerd::{Containerd, Launch, IMAGE, TOOLS};
    if let Some((path, package)) = TOOLS.iter().find(|(p, _)| !Path::new(p).exists()) {
        eprintln!("containerd: {path} missing (apt-get install {package}), skipped");
        return Ok(None);
    }
    let runtime = crate::hot::default_emberd().with_file_name("ember-runtime");
    if !runtime.is_file() {
        eprintln!("containerd: {} missing, skipped", runtime.display());
        return Ok(None);
    }
    let shim = runtime.with_file_name("containerd-shim-ember-v1");
    // containerd finds a shim by name on its PATH.
    let path = format!(
        "{}:{}",
        runtime.parent().unwrap_or(Path::new(".")).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH".into(), path.into())];
    let ctrd = Containerd::launch(&Launch {
        env: &env,
        ..Launch::default()
    });
    ctrd.import_test_image();
    let variants = containerd_variants(&ctrd, &runtime, shim.is_file())?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let bar = progress::bar(
        (runs * variants.len()) as u64,
        "containerd: `ctr run --rm` through runc, ember-runtime, strict, ember's shim",
    );
    for i in 0..runs {
        for (v, (_, flags)) in variants.iter().enumerate() {
            let id = format!("bench-{v}-{i}");
            let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
            args.extend(flags.iter().cloned());
            args.extend([IMAGE, &id, "/bin/true"].map(String::from));
            let t = Instant::now();
            let out = ctrd.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if !out.status.success() {
                bail!(
                    "ctr run {}: {}",
                    flags.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            samples[v].push(ms);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    println!();
    println!(
        "{:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "containerd `ctr run --rm` (ms)", "n", "p50", "p90", "p99", "mean"
    );
    let mut out = serde_json::Map::new();
    for ((label, _), ms) in variants.iter().zip(&samples) {
        print_row(&format!("through {label}"), ms);
        out.insert(label.clone(), json!({ "ms": ms, "summary": summarize(ms) }));
    }
    let base = summarize(&samples[0]).p50_ms;
    println!(
        "  ember-runtime adds {:.1} ms at p50 ({:.1} ms with the strict profile)",
        summarize(&samples[1]).p50_ms - base,
        summarize(&samples[2]).p50_ms - base
    );
    if samples.len() > 3 {
        println!(
            "  ember's shim on runc: {:.2}x the runc v2 shim with ember-runtime at p50",
            summarize(&samples[3]).p50_ms / summarize(&samples[1]).p50_ms
        );
    }
    Ok(Some(serde_json::Value::Object(out)))
}

/// The `ctr run` flags of each variant of [`containerd`], labelled.
fn containerd_variants(
    ctrd: &ember_integration::containerd::Containerd,
    runtime: &Path,
    with_shim: bool,
) -> Result<Vec<(String, Vec<String>)>> {
    let runtime = runtime.to_string_lossy().into_owned();
    let strict = [
        "--annotation".to_string(),
        "dev.ember.profile=strict".into(),
    ];
    let mut variants = vec![
        ("runc".to_string(), ctrd.run_flags("runc")),
        ("ember-runtime".to_string(), ctrd.run_flags(&runtime)),
        (
            "ember-runtime, strict".to_string(),
            [ctrd.run_flags(&runtime), strict.to_vec()].concat(),
        ),
    ];
    if !with_shim {
        eprintln!("containerd: containerd-shim-ember-v1 missing, its rows skipped");
        return Ok(variants);
    }
    let fifo = ctrd.dir.path().join("fifo").to_string_lossy().into_owned();
    for kind in ["runc", "runsc"] {
        let config = ctrd.dir.path().join(format!("shim-{kind}.toml"));
        let root = ctrd.dir.path().join("shim-root");
        std::fs::write(
            &config,
            format!("runtime = {kind:?}\nember_runtime = {runtime:?}\nroot = {root:?}\n"),
        )?;
        let flags = vec![
            "--runtime".to_string(),
            "io.containerd.ember.v1".into(),
            "--runtime-config-path".into(),
            config.to_string_lossy().into_owned(),
            "--fifo-dir".into(),
            fifo.clone(),
        ];
        variants.push((format!("ember's shim, {kind}"), flags));
    }
    Ok(variants)
}

/// Start, restart after a crash, and stop of emberd with `pool` warm
/// sandboxes, `runs` times.
pub async fn lifecycle(emberd_bin: &Path, runs: usize, pool: usize) -> Result<serde_json::Value> {
    let code = tempfile::tempdir()?;
    std::fs::write(code.path().join("main.py"), SLEEPY_HANDLER)?;
    println!();
    println!(
        "lifecycle: emberd with a python3 pool of {pool} on runc, {runs} runs (ms until the API answers / until the pool is warm)"
    );
    let (mut clean_serving, mut clean_warm) = (Vec::new(), Vec::new());
    let (mut crash_serving, mut crash_warm) = (Vec::new(), Vec::new());
    let mut stop_ms = Vec::new();
    let bar = progress::bar(runs as u64, "lifecycle: start, crash, restart, stop");
    for _ in 0..runs {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (mut e, clean) = Emberd::start_timed(
            emberd_bin,
            pool,
            "runc",
            &["--pool-max-warm", &pool.to_string()],
        )
        .await?;
        hot::deploy_with(&e, "sleepy", code.path(), "mode=fork").await?;
        // An invocation in flight when the daemon dies: its sandbox is busy,
        // its code mounted (the journal has it from before that).
        let client = e.client.clone();
        let inflight = tokio::spawn(async move {
            let _ = client
                .request(
                    hyper::Method::POST,
                    "/v1/functions/sleepy/invoke",
                    Some("application/json"),
                    "{}",
                )
                .await;
        });
        let t = Instant::now();
        loop {
            let a = e.client.get("/v1/sandboxes").await?;
            let busy = a.json()["sandboxes"]
                .as_array()
                .is_some_and(|l| l.iter().any(|s| s["state"] == "busy"));
            if busy {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the invocation never started");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        e.crash()?;
        inflight.abort();
        let restarted = e.spawn().await?;
        let rec = e
            .client
            .get("/v1/invocations?function=sleepy&output=false")
            .await?
            .json();
        if rec["invocations"][0]["outcome"] != "interrupted" {
            bail!("the crashed invocation is not recorded as interrupted: {rec}");
        }
        stop_ms.push(ms(e.stop()?));
        clean_serving.push(ms(clean.serving));
        clean_warm.push(ms(clean.warm));
        crash_serving.push(ms(restarted.serving));
        crash_warm.push(ms(restarted.warm));
        bar.inc(1);
    }
    drop(bar);
    print_row("start, empty state dir: API answers", &clean_serving);
    print_row("start, empty state dir: pool warm", &clean_warm);
    print_row("restart after SIGKILL: API answers", &crash_serving);
    print_row("restart after SIGKILL: pool warm", &crash_warm);
    print_row("stop on SIGTERM (pool idle)", &stop_ms);
    let (c, r) = (summarize(&clean_warm), summarize(&crash_warm));
    println!(
        "  restart after a crash vs a clean start, until warm: {:.2}x at p50",
        r.p50_ms / c.p50_ms
    );
    Ok(json!({
        "pool": pool,
        "runs": runs,
        "clean_start_serving_ms": summarize(&clean_serving),
        "clean_start_warm_ms": c,
        "crash_restart_serving_ms": summarize(&crash_serving),
        "crash_restart_warm_ms": r,
        "sigterm_stop_ms": summarize(&stop_ms),
        "crash_vs_clean_warm_p50": r.p50_ms / c.p50_ms,
        "samples": {
            "clean_serving": clean_serving, "clean_warm": clean_warm,
            "crash_serving": crash_serving, "crash_warm": crash_warm, "stop": stop_ms,
        },
    }))
}
