//! `ember-bench`: ember hot-swap invocations against `runc run` cold starts
//! of the same handler, side by side in one run on one machine.
//!
//! ```sh
//! cargo build --release --workspace --bins && scripts/build-agent
//! cargo run --release -p ember-benches -- --iterations 200
//! ```
//!
//! Needs root and runc; emberd is taken from next to this binary (it finds
//! the static agent next to itself or in the build tree). It starts a
//! private emberd (temp socket and state dir), deploys a hello handler,
//! warms up, then times N sequential invocations (client round trip over
//! the Unix socket, plus the daemon's own phase timings), and N `runc run`
//! cold starts of the same handler in a fresh container with the same lean
//! root filesystem. It prints p50/p90/p99 and the ratios, and writes raw
//! samples and the summary as JSON (`benches/report/latest.json`).

mod cold;
mod hot;
mod stats;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use stats::{summarize, Summary};
use std::path::PathBuf;

const HANDLER: &str =
    "def handler(event, context):\n    return {\"hello\": event.get(\"name\", \"world\")}\n";
const EVENT: &str = r#"{"name":"bench"}"#;

#[derive(Debug, Parser)]
#[command(
    name = "ember-bench",
    about = "ember hot-swap vs runc cold start, in one run"
)]
struct Args {
    /// Invocations through emberd.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// `runc run` cold starts (default: --iterations).
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
    /// OCI runtime for the cold-start baseline.
    #[arg(long, default_value = "runc")]
    runtime_binary: PathBuf,
    /// Where to write the JSON report.
    /// Also measure the same handler under the `strict` profile (its
    /// worker installs a longer seccomp filter on the hot path).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    strict: bool,
    #[arg(long, default_value = "benches/report/latest.json")]
    out: PathBuf,
}

fn row(name: &str, s: &Summary) {
    println!(
        "{name:<40} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let code = tempfile::Builder::new().prefix("bench-fn-").tempdir()?;
    std::fs::write(code.path().join("main.py"), HANDLER)?;
    // The cold container runs as an unprivileged user: it must read the code.
    std::fs::set_permissions(
        code.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;

    let emberd_bin = args.emberd.clone().unwrap_or_else(hot::default_emberd);
    eprintln!(
        "ember: starting {} (pool size {})",
        emberd_bin.display(),
        args.pool_size
    );
    let mut emberd = hot::Emberd::start(&emberd_bin, args.pool_size).await?;
    hot::deploy(&emberd, "hello", code.path(), "default").await?;
    hot::deploy(&emberd, "hello-strict", code.path(), "strict").await?;
    hot::invoke_n(&emberd, "hello", EVENT, args.warmup, "bench", args.gap_ms).await?;
    eprintln!(
        "ember: {} invocations, {} ms apart",
        args.iterations, args.gap_ms
    );
    let samples = hot::invoke_n(
        &emberd,
        "hello",
        EVENT,
        args.iterations,
        "bench",
        args.gap_ms,
    )
    .await?;
    let strict_samples = if args.strict {
        hot::invoke_n(
            &emberd,
            "hello-strict",
            EVENT,
            args.warmup,
            "bench",
            args.gap_ms,
        )
        .await?;
        eprintln!(
            "ember: {} invocations under the strict profile",
            args.iterations
        );
        hot::invoke_n(
            &emberd,
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
    emberd.stop()?;

    let cold_n = args.cold_iterations.unwrap_or(args.iterations);
    eprintln!("runc: {cold_n} cold starts");
    let cold = cold::run(&args.runtime_binary, code.path(), EVENT, cold_n, "bench");
    remove_bench_cgroups();
    let cold = cold?;

    let client: Vec<f64> = samples.iter().map(|s| s.client_ms).collect();
    let phase = |k: &str| -> Vec<f64> {
        samples
            .iter()
            .map(|s| s.timings_us[k].as_f64().unwrap_or(f64::NAN) / 1000.0)
            .collect()
    };
    let hot_client = summarize(&client);
    let hot_server = summarize(&phase("total"));
    let cold_sum = summarize(&cold);
    let hot_count = samples.iter().filter(|s| s.start == "hot").count();

    println!(
        "\n{:<40} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "(milliseconds)", "n", "p50", "p90", "p99", "mean"
    );
    row("ember hot-swap invoke (client round trip)", &hot_client);
    row("ember hot-swap invoke (daemon total)", &hot_server);
    row("runc run cold start", &cold_sum);
    println!(
        "\nrunc cold / ember hot: {:.1}x at p50, {:.1}x at p99",
        cold_sum.p50_ms / hot_client.p50_ms,
        cold_sum.p99_ms / hot_client.p99_ms
    );
    let strict = (!strict_samples.is_empty()).then(|| {
        let client: Vec<f64> = strict_samples.iter().map(|s| s.client_ms).collect();
        let run: Vec<f64> = strict_samples
            .iter()
            .map(|s| s.timings_us["run"].as_f64().unwrap_or(f64::NAN) / 1000.0)
            .collect();
        let confine: Vec<f64> = strict_samples
            .iter()
            .map(|s| s.timings_us["confine"].as_f64().unwrap_or(f64::NAN) / 1000.0)
            .collect();
        (summarize(&client), summarize(&run), summarize(&confine))
    });
    if let Some((sc, sr, scf)) = &strict {
        let dr = summarize(&phase("run"));
        let dcf = summarize(&phase("confine"));
        println!();
        row("ember invoke, default profile (client)", &hot_client);
        row("ember invoke, strict profile (client)", sc);
        println!(
            "strict - default: {:+.3} ms at p50, {:+.3} ms at p99 (client); run phase p50 {:+.3} ms",
            sc.p50_ms - hot_client.p50_ms,
            sc.p99_ms - hot_client.p99_ms,
            sr.p50_ms - dr.p50_ms
        );
        println!(
            "seccomp filter install in the worker (part of run): default p50 {:.3} / p99 {:.3} ms, strict p50 {:.3} / p99 {:.3} ms",
            dcf.p50_ms, dcf.p99_ms, scf.p50_ms, scf.p99_ms
        );
    }
    println!(
        "ember starts: {hot_count} hot, {} cold",
        samples.len() - hot_count
    );
    let phases = ["queue", "thaw", "inject", "run", "cleanup"];
    let phase_p50: Vec<String> = phases
        .iter()
        .map(|p| format!("{p} {:.3}", summarize(&phase(p)).p50_ms))
        .collect();
    println!("ember phase p50 (ms): {}", phase_p50.join(", "));

    let report = json!({
        "date": first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "machine": {
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": first_line("uname", &["-r"]),
            "runtime": first_line(&args.runtime_binary.to_string_lossy(), &["--version"]),
        },
        "settings": { "gap_ms": args.gap_ms, "iterations": args.iterations, "cold_iterations": cold_n, "warmup": args.warmup, "pool_size": args.pool_size },
        "summary": {
            "ember_client": hot_client,
            "ember_daemon_total": hot_server,
            "runc_cold": cold_sum,
            "ratio_p50": cold_sum.p50_ms / hot_client.p50_ms,
            "ratio_p99": cold_sum.p99_ms / hot_client.p99_ms,
            "phase_p50_ms": phases.iter().map(|p| (p.to_string(), json!(summarize(&phase(p)).p50_ms))).collect::<serde_json::Map<_, _>>(),
            "strict_client": strict.as_ref().map(|s| json!(s.0)),
            "strict_run": strict.as_ref().map(|s| json!(s.1)),
            "strict_confine": strict.as_ref().map(|s| json!(s.2)),
            "default_confine": summarize(&phase("confine")),
            "default_run": summarize(&phase("run")),
            "hot": hot_count,
            "cold": samples.len() - hot_count,
        },
        "samples": { "ember": samples, "ember_strict": strict_samples, "runc_cold_ms": cold },
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}
