//! `ember-bench`: for each backend (runc, crun, runsc, libcontainer), ember
//! invocations (fork mode, as deployed by default: hot-swapped into a
//! generic sandbox the first time, then forked from the function's zygote)
//! against `<runtime> run` cold starts of the same handler, side by side in
//! one run on one machine.
//!
//! ```sh
//! cargo build --release --workspace --bins && scripts/build-agent
//! cargo run --release -p ember-benches -- --iterations 300 --cold-iterations 50 --gap-ms 5
//! ```
//!
//! Needs root and the runtimes (a missing one is skipped with a message);
//! emberd is taken from next to this binary. Per backend it starts a
//! private emberd (temp socket and state dir), deploys a hello handler
//! (and the same under the `strict` profile), warms up, times N sequential
//! invocations (client round trip over the Unix socket, plus the daemon's
//! own phase timings), measures the memory of the paused sandboxes and the
//! cost of pausing one (cgroup freezer vs the runtime's own pause), then
//! times M `<runtime> run` cold starts of the same handler in a fresh
//! container with the same lean root filesystem. Then, on runc, the
//! scenarios of `scenarios.rs`: Python fork vs specialized vs Node.js, a
//! rising burst against a fixed and a demand-following pool, and container
//! starts under containerd through runc and through `ember-runtime`. Then
//! the function-zygote scenarios, on runc: a heavy-init handler (numpy and
//! 150 ms at import) in fork mode with its zygote off and on, specialized
//! and under `runc run`; the hello handler per mode with the CPU an
//! invocation costs, at gaps of 0, 5 and 20 ms; throughput with 1, 4 and
//! 8 concurrent clients; and the targets reached. Then sessions, on runc:
//! the time to open one with the pool warm and with it empty, against
//! `runc run` of the same handler, its first and later calls, and the
//! memory each open session holds. It prints
//! p50/p90/p99 and the ratios, and writes the samples and summary as JSON
//! (`benches/report/latest.json`) and a chart (`benches/report/latest.svg`).
//!
//! A quick run of the function-zygote scenarios only:
//!
//! ```sh
//! ember-bench --zygote-only --iterations 100 --heavy-iterations 20 \
//!     --zygote-cold-iterations 5 --throughput-seconds 1 --gaps 0,5
//! ```
//!
//! The sessions scenario alone:
//!
//! ```sh
//! ember-bench --sessions-only --session-runs 30
//! ```
//!
//! On a terminal, each long phase shows a progress bar on stderr
//! (`ember_term`); without one nothing is drawn.

mod cold;
mod cpu;
mod heavy;
mod hello;
mod hot;
mod memory;
mod per_backend;
mod scenarios;
mod sessions;
mod stats;
mod svg;
mod targets;
mod throughput;
mod zygote;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use stats::{summarize, Summary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HANDLER: &str =
    "def handler(event, context):\n    return {\"hello\": event.get(\"name\", \"world\")}\n";
const EVENT: &str = r#"{"name":"bench"}"#;

#[derive(Debug, Parser)]
#[command(
    name = "ember-bench",
    version,
    about = "ember hot-swap vs cold start, per backend, in one run"
)]
struct Args {
    /// Invocations through emberd, per backend and profile.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Cold starts per backend (default: --iterations).
    #[arg(long)]
    cold_iterations: Option<usize>,
    /// Untimed invocations first.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Pause between ember invocations (0: back to back, a closed loop that
    /// also measures how fast sandboxes return to the pool).
    #[arg(long, default_value_t = 0)]
    gap_ms: u64,
    /// emberd's --pool-size.
    #[arg(long, default_value_t = 2)]
    pool_size: usize,
    /// emberd binary (default: next to ember-bench).
    #[arg(long)]
    emberd: Option<PathBuf>,
    /// Backends to measure, comma-separated; one not installed is skipped.
    /// libcontainer runs inside emberd: it has no CLI of its own, so its
    /// cold start is measured with `runc run` (the same bundle).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "runc,crun,runsc,libcontainer"
    )]
    backends: Vec<String>,
    /// gVisor platform for runsc (as emberd's --runsc-platform).
    #[arg(long, default_value = "ptrace")]
    runsc_platform: String,
    /// Also measure the same handler under the `strict` profile (its
    /// worker installs a longer seccomp filter on the hot path).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    strict: bool,
    /// Freeze/thaw cycles timed per pause mechanism.
    #[arg(long, default_value_t = 50)]
    pause_iterations: usize,
    /// Also compare Python fork, Python specialized and Node.js (runc).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    modes: bool,
    /// Waves of the burst scenario (wave k runs k concurrent invocations),
    /// against a fixed and a demand-following pool; 0 skips it.
    #[arg(long, default_value_t = 6)]
    burst_waves: usize,
    /// Time between the starts of two waves.
    #[arg(long, default_value_t = 1000)]
    burst_spacing_ms: u64,
    /// Container starts per variant under a private containerd (runc,
    /// ember-runtime, ember-runtime with the strict profile); 0 skips it.
    #[arg(long, default_value_t = 30)]
    containerd_runs: usize,
    /// Runs of the lifecycle scenario (emberd's start, restart after a
    /// SIGKILL mid-invocation, stop on SIGTERM); 0 skips it.
    #[arg(long, default_value_t = 5)]
    lifecycle_runs: usize,
    /// Skip the per-backend hot-swap vs cold start runs (scenarios only).
    #[arg(long)]
    scenarios_only: bool,
    /// Only the function-zygote scenarios (heavy-init, hello per mode and
    /// gaps, throughput) and the targets: skips the per-backend runs and
    /// every other scenario.
    #[arg(long)]
    zygote_only: bool,
    /// Timed invocations per mode of the heavy-init handler (numpy and a
    /// 150 ms sleep at import); 0 skips the scenario.
    #[arg(long, default_value_t = 50)]
    heavy_iterations: usize,
    /// `runc run` cold starts of the heavy-init and of the hello handler in
    /// the function-zygote scenarios.
    #[arg(long, default_value_t = 20)]
    zygote_cold_iterations: usize,
    /// Gaps (ms) between invocations of hello in fork mode with a function
    /// zygote, one run of --iterations each; `--gaps` alone runs none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "0,5,20")]
    gaps: Vec<u64>,
    /// Seconds of closed-loop load per mode and client count; 0 skips the
    /// throughput scenario.
    #[arg(long, default_value_t = 3.0)]
    throughput_seconds: f64,
    /// Concurrent clients of the throughput scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    throughput_clients: Vec<usize>,
    /// Sessions opened, called and closed per pool state (warm, empty) in
    /// the sessions scenario, and `runc run` cold starts of its handler;
    /// 0 skips the scenario.
    #[arg(long, default_value_t = 30)]
    session_runs: usize,
    /// Calls of each of those sessions after its first.
    #[arg(long, default_value_t = 5)]
    session_calls: usize,
    /// Sessions held open at once for the memory per session; 0 skips it.
    #[arg(long, default_value_t = 8)]
    session_memory_count: usize,
    /// Only the sessions scenario: skips the per-backend runs and every
    /// other scenario.
    #[arg(long)]
    sessions_only: bool,
    /// Where to write the JSON report; the SVG chart goes next to it.
    #[arg(long, default_value = "benches/report/latest.json")]
    out: PathBuf,
}

fn row(name: &str, s: &Summary) {
    println!(
        "{name:<44} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        s.n, s.p50_ms, s.p90_ms, s.p99_ms, s.mean_ms
    );
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// runc leaves the parent of the cgroups it created; remove it.
fn remove_bench_cgroups() {
    for root in ember_runtimes::cgroup::CgroupLayout::detect().all {
        let _ = std::fs::remove_dir(root.join("bench"));
    }
}

fn installed(binary: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn runtime_for(backend: &str, platform: &str) -> cold::Runtime {
    let global_args = if backend == "runsc" {
        vec![
            format!("--platform={platform}"),
            "--network=none".into(),
            "--overlay2=none".into(),
        ]
    } else {
        vec![]
    };
    cold::Runtime {
        binary: PathBuf::from(backend),
        global_args,
    }
}

fn client_ms(samples: &[hot::Sample]) -> Vec<f64> {
    samples.iter().map(|s| s.client_ms).collect()
}

fn phase_ms(samples: &[hot::Sample], k: &str) -> Vec<f64> {
    samples
        .iter()
        .map(|s| s.timings_us[k].as_f64().unwrap_or(f64::NAN) / 1000.0)
        .collect()
}

/// Time `n` freeze+thaw cycles of a paused sandbox through its cgroup
/// freezer (waiting for FROZEN, as `pause` does) and through the
/// runtime's own `pause`/`resume`. Leaves the sandbox frozen, as found.
fn pause_costs(
    rt: &cold::Runtime,
    backend: &str,
    tag: &str,
    id: &str,
    n: usize,
    with_runtime: bool,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let layout = ember_runtimes::cgroup::CgroupLayout::detect();
    let freezer = layout.freezer(&format!("/ember/{tag}/{id}"))?;
    let mut cgroup = Vec::with_capacity(n);
    let mut runtime = Vec::with_capacity(n);
    let cycles = if with_runtime { 2 * n } else { n };
    let bar = ember_term::bar(cycles as u64, format!("{backend}: freeze+thaw cycles"));
    for _ in 0..n {
        freezer.thaw()?;
        let t = Instant::now();
        freezer.freeze()?;
        freezer.thaw()?;
        cgroup.push(t.elapsed().as_secs_f64() * 1000.0);
        bar.inc(1);
    }
    freezer.thaw()?;
    // emberd gives each backend a runtime root of its own.
    let root = hot::Emberd::run_dir(tag).join(backend);
    for _ in 0..if with_runtime { n } else { 0 } {
        let t = Instant::now();
        for op in ["pause", "resume"] {
            let out = rt
                .command()
                .arg("--root")
                .arg(&root)
                .args([op, id])
                .output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "{} {op} {id}: {}",
                    rt.binary.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        runtime.push(t.elapsed().as_secs_f64() * 1000.0);
        bar.inc(1);
    }
    freezer.freeze()?;
    Ok((cgroup, runtime))
}

struct BackendResult {
    name: String,
    hot: Vec<hot::Sample>,
    strict: Vec<hot::Sample>,
    cold_ms: Vec<f64>,
    memory: Vec<memory::SandboxMemory>,
    pause_cgroup_ms: Vec<f64>,
    pause_runtime_ms: Vec<f64>,
}

async fn measure(args: &Args, backend: &str, code: &Path) -> Result<BackendResult> {
    let emberd_bin = args.emberd.clone().unwrap_or_else(hot::default_emberd);
    eprintln!(
        "{backend}: starting {} (pool size {})",
        emberd_bin.display(),
        args.pool_size
    );
    let mut emberd = hot::Emberd::start(&emberd_bin, args.pool_size, backend).await?;
    hot::deploy(&emberd, "hello", code, "default").await?;
    hot::deploy(&emberd, "hello-strict", code, "strict").await?;
    let warmup = format!("{backend}: warm-up invocations");
    hot::invoke_n(
        &emberd,
        warmup,
        "hello",
        EVENT,
        args.warmup,
        "bench",
        args.gap_ms,
    )
    .await?;
    eprintln!(
        "{backend}: {} invocations, {} ms apart",
        args.iterations, args.gap_ms
    );
    let hot_samples = hot::invoke_n(
        &emberd,
        format!("{backend}: hot-swap invocations"),
        "hello",
        EVENT,
        args.iterations,
        "bench",
        args.gap_ms,
    )
    .await?;
    let strict = if args.strict {
        hot::invoke_n(
            &emberd,
            format!("{backend}: strict profile, warm-up invocations"),
            "hello-strict",
            EVENT,
            args.warmup,
            "bench",
            args.gap_ms,
        )
        .await?;
        hot::invoke_n(
            &emberd,
            format!("{backend}: strict profile, hot-swap invocations"),
            "hello-strict",
            EVENT,
            args.iterations,
            "bench",
            args.gap_ms,
        )
        .await?
    } else {
        Vec::new()
    };
    // Let every sandbox settle back into the pool, frozen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tag = emberd.client.get("/v1/health").await?.json()["instance"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let idle: Vec<String> = emberd.client.get("/v1/sandboxes").await?.json()["sandboxes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|s| s["state"] == "idle")
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect();
    let memory = memory::measure(&tag, &idle);
    // libcontainer has no CLI: its pause is a library call inside emberd
    // (not measured), its cold start baseline is `runc run`.
    let cold_backend = if backend == "libcontainer" {
        "runc"
    } else {
        backend
    };
    let rt = runtime_for(cold_backend, &args.runsc_platform);
    let (pause_cgroup_ms, pause_runtime_ms) = match idle.first() {
        Some(id) if backend == "libcontainer" => {
            let (c, _) = pause_costs(&rt, backend, &tag, id, args.pause_iterations, false)
                .with_context(|| format!("{backend}: timing pause"))?;
            (c, Vec::new())
        }
        Some(id) => pause_costs(&rt, backend, &tag, id, args.pause_iterations, true)
            .with_context(|| format!("{backend}: timing pause"))?,
        None => (Vec::new(), Vec::new()),
    };
    emberd.stop()?;

    let cold_n = args.cold_iterations.unwrap_or(args.iterations);
    eprintln!("{backend}: {cold_n} cold starts");
    let phase = format!("{backend}: `{cold_backend} run` cold starts");
    let cold_ms = cold::run(&rt, phase, code, EVENT, cold_n, "bench");
    remove_bench_cgroups();
    Ok(BackendResult {
        name: backend.to_string(),
        hot: hot_samples,
        strict,
        cold_ms: cold_ms?,
        memory,
        pause_cgroup_ms,
        pause_runtime_ms,
    })
}

/// The function-zygote scenarios on runc and the targets they are held
/// against: the report section, chart rows and bar groups.
async fn zygote_scenarios(
    args: &Args,
    emberd_bin: &Path,
    code: &Path,
    runsc_hot_cold_p50: Option<(f64, f64)>,
) -> Result<(serde_json::Value, Vec<svg::Row>, Vec<svg::BarGroup>)> {
    let mut report = serde_json::Map::new();
    let (mut rows, mut groups) = (Vec::new(), Vec::new());
    let mut figures = targets::Figures {
        runsc_hot_cold_p50,
        ..Default::default()
    };
    if args.heavy_iterations > 0 && heavy::numpy_available("/usr/bin/python3") {
        let s = heavy::Settings {
            iterations: args.heavy_iterations,
            warmup: args.warmup.min(5),
            cold_iterations: args.zygote_cold_iterations,
            event: EVENT.to_string(),
        };
        let section = heavy::run(emberd_bin, &s).await?;
        report.insert("heavy_init".into(), section.report);
        rows.extend(section.rows);
        groups.extend(section.groups);
        figures.heavy = section.figures;
    } else if args.heavy_iterations > 0 {
        eprintln!("heavy-init: numpy does not import in /usr/bin/python3 (apt-get install python3-numpy), skipped");
    }
    let s = hello::Settings {
        iterations: args.iterations,
        warmup: args.warmup,
        gaps: args.gaps.clone(),
        cold_iterations: args.zygote_cold_iterations,
        event: EVENT.to_string(),
    };
    let section = hello::run(emberd_bin, code, &s).await?;
    report.insert("hello".into(), section.report);
    rows.extend(section.rows);
    groups.extend(section.groups);
    figures.hello = section.figures;
    if args.throughput_seconds > 0.0 && !args.throughput_clients.is_empty() {
        let s = throughput::Settings {
            clients: args.throughput_clients.clone(),
            seconds: args.throughput_seconds,
            event: EVENT.to_string(),
        };
        let section = throughput::run(emberd_bin, code, &s).await?;
        report.insert("throughput".into(), section.report);
        groups.extend(section.groups);
        figures.throughput = section.figures;
    }
    let reached = targets::evaluate(&figures);
    targets::print(&reached);
    report.insert("targets".into(), json!(reached));
    Ok((serde_json::Value::Object(report), rows, groups))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let code = bench_code()?;
    let results = measure_backends(&args, code.path()).await?;
    let (report_backends, mut chart) = per_backend::section(&results);
    let emberd_bin = args.emberd.clone().unwrap_or_else(hot::default_emberd);
    let s = scenarios_section(&args, &emberd_bin, code.path(), &results, &mut chart).await?;
    let report = full_report(&args, &results, report_backends, s.report);
    write_report(&args, &report, &chart, &s.groups)
}

/// The benchmark's handler in a directory of its own.
fn bench_code() -> Result<tempfile::TempDir> {
    code_dir("bench-fn-", HANDLER)
}

/// `handler` as `main.py` in a directory of its own (named `prefix`...).
pub(crate) fn code_dir(prefix: &str, handler: &str) -> Result<tempfile::TempDir> {
    let code = tempfile::Builder::new().prefix(prefix).tempdir()?;
    std::fs::write(code.path().join("main.py"), handler)?;
    // The cold container runs as an unprivileged user: it must read the code.
    std::fs::set_permissions(
        code.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    Ok(code)
}

/// Hot-swap and cold starts on each installed backend (none with
/// `--scenarios-only` or `--zygote-only`).
async fn measure_backends(args: &Args, code: &Path) -> Result<Vec<BackendResult>> {
    let mut results = Vec::new();
    let per_backend = !args.scenarios_only && !args.zygote_only && !args.sessions_only;
    for backend in args.backends.iter().filter(|_| per_backend) {
        if backend != "libcontainer" && !installed(backend) {
            eprintln!("{backend}: not installed, skipped (apt-get install {backend})");
            continue;
        }
        results.push(measure(args, backend, code).await?);
    }
    anyhow::ensure!(
        !per_backend || !results.is_empty(),
        "no backend could be measured"
    );
    Ok(results)
}

/// What the scenarios beyond the per-backend run add: their report
/// entries, and the bar groups of the chart.
struct ScenarioSection {
    report: serde_json::Map<String, serde_json::Value>,
    groups: Vec<svg::BarGroup>,
}

/// Modes, burst, lifecycle, containerd and function-zygote scenarios, as
/// the flags ask; their rows are added to `chart`.
async fn scenarios_section(
    args: &Args,
    emberd_bin: &Path,
    code: &Path,
    results: &[BackendResult],
    chart: &mut Vec<svg::Row>,
) -> Result<ScenarioSection> {
    let cold_n = args.cold_iterations.unwrap_or(args.iterations);
    let others = !args.zygote_only && !args.sessions_only && installed("runc");
    let modes = if args.modes && others {
        let (report, rows) = scenarios::modes(
            emberd_bin,
            code,
            args.iterations,
            cold_n,
            args.warmup,
            args.gap_ms,
            EVENT,
        )
        .await?;
        chart.extend(rows);
        Some(report)
    } else {
        None
    };
    let burst = if args.burst_waves > 0 && others {
        Some(scenarios::burst(emberd_bin, args.burst_waves, args.burst_spacing_ms).await?)
    } else {
        None
    };

    let lifecycle = if args.lifecycle_runs > 0 && others {
        Some(scenarios::lifecycle(emberd_bin, args.lifecycle_runs, args.pool_size.max(1)).await?)
    } else {
        None
    };

    let containerd = if args.containerd_runs > 0 && !args.zygote_only && !args.sessions_only {
        scenarios::containerd(args.containerd_runs)?
    } else {
        None
    };

    let runsc = results.iter().find(|r| r.name == "runsc").map(|r| {
        let hot = summarize(&client_ms(&r.hot)).p50_ms;
        (hot, summarize(&r.cold_ms).p50_ms)
    });
    let (zygote, groups) = if args.sessions_only {
        (None, Vec::new())
    } else if installed("runc") {
        let (report, rows, groups) = zygote_scenarios(args, emberd_bin, code, runsc).await?;
        chart.extend(rows);
        (Some(report), groups)
    } else {
        eprintln!("function-zygote scenarios: runc not installed, skipped");
        (None, Vec::new())
    };

    let sessions = if args.session_runs > 0 && !args.zygote_only && installed("runc") {
        let s = sessions::Settings {
            runs: args.session_runs,
            calls: args.session_calls,
            memory_sessions: args.session_memory_count,
            event: EVENT.to_string(),
        };
        let (report, rows) = sessions::run(emberd_bin, &s).await?;
        chart.extend(rows);
        Some(report)
    } else {
        if args.session_runs > 0 && !args.zygote_only {
            eprintln!("sessions: runc not installed, skipped");
        }
        None
    };

    let mut report = serde_json::Map::new();
    report.insert("modes".into(), json!(modes));
    report.insert("burst".into(), json!(burst));
    report.insert("lifecycle".into(), json!(lifecycle));
    report.insert("containerd".into(), json!(containerd));
    report.insert("zygote".into(), json!(zygote));
    report.insert("sessions".into(), json!(sessions));
    Ok(ScenarioSection { report, groups })
}

/// The whole report: date, machine, settings, backends and scenarios.
fn full_report(
    args: &Args,
    results: &[BackendResult],
    report_backends: serde_json::Map<String, serde_json::Value>,
    scenarios: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut report = json!({
        "date": first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "machine": {
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": first_line("uname", &["-r"]),
            "runtimes": results.iter().map(|r| (r.name.clone(), json!(first_line(&r.name, &["--version"])))).collect::<serde_json::Map<_, _>>(),
        },
        "settings": {
            "gap_ms": args.gap_ms, "iterations": args.iterations,
            "cold_iterations": args.cold_iterations.unwrap_or(args.iterations),
            "warmup": args.warmup, "pool_size": args.pool_size,
            "runsc_platform": args.runsc_platform,
            "heavy_iterations": args.heavy_iterations,
            "zygote_cold_iterations": args.zygote_cold_iterations,
            "gaps_ms": args.gaps,
            "throughput_seconds": args.throughput_seconds,
            "throughput_clients": args.throughput_clients,
            "session_runs": args.session_runs,
            "session_calls": args.session_calls,
            "session_memory_count": args.session_memory_count,
        },
        "backends": report_backends,
    });
    if let Some(map) = report.as_object_mut() {
        map.extend(scenarios);
    }
    report
}

/// The report as JSON at `--out`, and its chart next to it (`.svg`).
fn write_report(
    args: &Args,
    report: &serde_json::Value,
    chart: &[svg::Row],
    groups: &[svg::BarGroup],
) -> Result<()> {
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let svg_path = args.out.with_extension("svg");
    let title = format!(
        "ember invoke vs cold start, per backend and mode ({} invocations, {} ms apart; heavy-init and hello rows back to back)",
        args.iterations, args.gap_ms
    );
    std::fs::write(&svg_path, svg::render(&title, chart, groups))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    eprintln!(
        "report written to {} and {}",
        args.out.display(),
        svg_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_parse_and_gaps_alone_runs_none() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["ember-bench"]).unwrap();
        assert_eq!(a.gaps, [0, 5, 20]);
        assert_eq!(a.throughput_clients, [1, 4, 8]);
        let a = Args::try_parse_from(["ember-bench", "--gaps", "--zygote-only"]).unwrap();
        assert!(a.gaps.is_empty() && a.zygote_only);
        let a = Args::try_parse_from(["ember-bench", "--gaps", "0,5"]).unwrap();
        assert_eq!(a.gaps, [0, 5]);
        let a = Args::try_parse_from(["ember-bench", "--sessions-only", "--session-runs", "5"])
            .unwrap();
        assert!(a.sessions_only && !a.zygote_only);
        assert_eq!((a.session_runs, a.session_calls), (5, 5));
    }
}
