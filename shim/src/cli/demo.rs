//! `ember demo`: a self-contained tour. Starts a private emberd (own socket
//! and state dir under a temp dir), deploys a sample function, invokes it,
//! prints results and latency percentiles, and stops the daemon, which
//! removes its sandboxes.

use crate::client::Client;
use crate::progress;
use anyhow::{bail, Context, Result};
use hyper::Method;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SAMPLE: &str = r#"import json

def handler(event, context):
    items = event.get("items", [])
    return {"count": len(items), "total": sum(items), "echo": event.get("msg")}
"#;

/// The sample function's runtime: the pool the demo waits for.
const DEMO_RUNTIME: &str = "python3";

/// Idle sandboxes and target of `runtime`'s pool in a `GET /v1/pools`
/// answer (zeros until it is listed). Pools are listed by runtime name,
/// so the first one may be another runtime's (node).
fn pool_fill(pools: &serde_json::Value, runtime: &str) -> (u64, u64) {
    let pool = pools["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["runtime"] == runtime));
    let field = |k: &str| pool.and_then(|p| p[k].as_u64()).unwrap_or(0);
    (field("idle"), field("target"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Kills the demo daemon if the demo fails half-way.
struct DaemonGuard(Option<std::process::Child>);

impl DaemonGuard {
    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.0.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            let status = child.wait()?;
            if !status.success() {
                bail!("emberd exited with {status}");
            }
        }
        Ok(())
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

pub async fn run(invocations: usize, emberd: Option<PathBuf>) -> Result<()> {
    let emberd = match emberd {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("emberd"),
    };
    if !emberd.is_file() {
        bail!("emberd not found at {} (pass --emberd)", emberd.display());
    }
    let tmp = tempfile::Builder::new().prefix("ember-demo-").tempdir()?;
    let socket = tmp.path().join("ember.sock");
    let state = tmp.path().join("state");
    let log = std::fs::File::create(tmp.path().join("emberd.log"))?;
    eprintln!(
        "starting {} (state in {})",
        emberd.display(),
        state.display()
    );
    let child = std::process::Command::new(&emberd)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", emberd.display()))?;
    let mut guard = DaemonGuard(Some(child));
    let client = Client::new(&socket);

    // Wait for the API, then for a warm sandbox.
    let started = Instant::now();
    let warming = progress::gauge(format!("warming the {DEMO_RUNTIME} pool"));
    loop {
        if let Ok(a) = client.get("/v1/pools").await {
            let (idle, target) = pool_fill(&a.json(), DEMO_RUNTIME);
            if target > 0 {
                warming.set_length(target);
            }
            warming.set_position(idle);
            if idle > 0 {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            warming.finish_and_clear();
            let log = std::fs::read_to_string(tmp.path().join("emberd.log")).unwrap_or_default();
            bail!("emberd did not get a warm sandbox within 30 s; its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    warming.finish_and_clear();
    eprintln!(
        "warm pool ready after {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    let code = tmp.path().join("demo-fn");
    std::fs::create_dir(&code)?;
    std::fs::write(code.join("main.py"), SAMPLE)?;
    let archive = super::pack::tar_gz(&code)?;
    let a = client
        .request(
            Method::PUT,
            "/v1/functions/demo?timeout_ms=2000",
            Some("application/gzip"),
            archive,
        )
        .await?;
    if !a.status.is_success() {
        bail!("deploy failed: {}", a.error_message());
    }
    eprintln!("deployed function demo");

    let mut totals = Vec::new();
    let mut client_ms = Vec::new();
    let mut hot = 0;
    for i in 0..invocations.max(1) {
        let event = serde_json::json!({ "items": [i, 1, 2], "msg": format!("hello #{i}") });
        let t = Instant::now();
        let a = client
            .request(
                Method::POST,
                "/v1/functions/demo/invoke",
                Some("application/json"),
                serde_json::to_vec(&event)?,
            )
            .await?;
        client_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if !a.status.is_success() {
            bail!("invocation {i} failed: {}", a.error_message());
        }
        let v = a.json();
        if i == 0 {
            println!("result: {}", v["result"]);
        }
        if v["start"] == "hot" {
            hot += 1;
        }
        totals.push(v["timings_us"]["total"].as_u64().unwrap_or(0) as f64 / 1000.0);
    }
    totals.sort_by(f64::total_cmp);
    client_ms.sort_by(f64::total_cmp);
    println!(
        "{} invocations ({} hot): daemon-side p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; \
client round trip p50 {:.2} ms, p99 {:.2} ms",
        totals.len(),
        hot,
        percentile(&totals, 50.0),
        percentile(&totals, 90.0),
        percentile(&totals, 99.0),
        percentile(&client_ms, 50.0),
        percentile(&client_ms, 99.0),
    );
    println!(
        "compare with `runc run` cold starts: cargo run --release -p ember-benches -- --iterations 300 --gap-ms 5"
    );
    guard.stop()?;
    eprintln!("emberd stopped; sandboxes removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_fill_reads_the_named_runtime_pool() {
        let pools = serde_json::json!({ "pools": [
            { "runtime": "node", "idle": 2, "target": 2 },
            { "runtime": "python3", "idle": 1, "target": 3 },
        ]});
        assert_eq!(pool_fill(&pools, "python3"), (1, 3));
        assert_eq!(pool_fill(&pools, "node"), (2, 2));
        assert_eq!(pool_fill(&serde_json::json!({}), "python3"), (0, 0));
    }
}
