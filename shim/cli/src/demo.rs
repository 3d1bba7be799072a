//! `ember demo`: a self-contained tour. Starts a private emberd (own socket
//! and state dir under a temp dir), deploys a sample function, invokes it,
//! prints results and latency percentiles; then deploys a function whose
//! import takes 100 ms and shows its first invocation (which imports it)
//! against the following ones (forked from its function zygote, which
//! imported it once); and stops the daemon, which removes its sandboxes.

use crate::reply::{decode, result_json};
use anyhow::{bail, Context, Result};
use ember_api::client::Client;
use ember_api::function::FunctionInfo;
use ember_api::pool::PoolList;
use ember_api::{Report, ZygoteState};
use ember_term as progress;
use hyper::Method;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SAMPLE: &str = r#"import json

def handler(event, context):
    items = event.get("items", [])
    return {"count": len(items), "total": sum(items), "echo": event.get("msg")}
"#;

/// A function with a slow import. The sleep stands in for heavy imports
/// (numpy, a model): the demo must run where only python3 is installed.
const SLOW_IMPORT_SAMPLE: &str = r#"import time

time.sleep(0.1)  # stands in for heavy imports


def handler(event, context):
    return {"ok": True}
"#;

/// Invocations after the first one of the slow-import function: enough
/// for a p50, few enough to stay about a second where every one imports.
const SLOW_IMPORT_INVOCATIONS: usize = 10;

/// The sample function's runtime: the pool the demo waits for.
const DEMO_RUNTIME: &str = "python3";

/// Idle sandboxes and target of `runtime`'s pool in a `GET /v1/pools`
/// answer (zeros until it is listed). Pools are listed by runtime name,
/// so the first one may be another runtime's (node).
fn pool_fill(pools: &PoolList, runtime: &str) -> (u64, u64) {
    pools
        .pools
        .iter()
        .find(|p| p.runtime.runtime_name() == runtime)
        .map_or((0, 0), |p| (p.idle as u64, p.target as u64))
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
            let (idle, target) = if a.status.is_success() {
                pool_fill(&decode(&a, "a pool list")?, DEMO_RUNTIME)
            } else {
                (0, 0)
            };
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

    deploy(&client, "demo", &tmp.path().join("demo-fn"), SAMPLE).await?;
    eprintln!("deployed function demo");

    sample_invocations(&client, invocations).await?;
    slow_import_tour(&client, tmp.path()).await?;
    println!(
        "compare with `runc run` cold starts: cargo run --release -p ember-benches -- --iterations 300 --gap-ms 5"
    );
    guard.stop()?;
    eprintln!("emberd stopped; sandboxes removed");
    Ok(())
}

/// Invoke the sample function `invocations` times (at least once): its
/// first result, and latency percentiles, daemon-side and round trip.
async fn sample_invocations(client: &Client, invocations: usize) -> Result<()> {
    let mut totals = Vec::new();
    let mut client_ms = Vec::new();
    let mut starts = Vec::new();
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
        let report: Report = decode(&a, "an invocation report")?;
        if i == 0 {
            println!("result: {}", result_json(&report)?);
        }
        starts.push(report.start.as_str().to_string());
        totals.push(report.timings_us.total as f64 / 1000.0);
    }
    totals.sort_by(f64::total_cmp);
    client_ms.sort_by(f64::total_cmp);
    println!(
        "{} invocations ({}): daemon-side p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; \
client round trip p50 {:.2} ms, p99 {:.2} ms",
        totals.len(),
        start_kinds(&starts),
        percentile(&totals, 50.0),
        percentile(&totals, 90.0),
        percentile(&totals, 99.0),
        percentile(&client_ms, 50.0),
        percentile(&client_ms, 99.0),
    );
    Ok(())
}

async fn deploy(client: &Client, name: &str, dir: &Path, source: &str) -> Result<()> {
    std::fs::create_dir(dir)?;
    std::fs::write(dir.join("main.py"), source)?;
    let a = client
        .request(
            Method::PUT,
            &format!("/v1/functions/{name}?timeout_ms=2000"),
            Some("application/gzip"),
            crate::pack::tar_gz(dir)?,
        )
        .await?;
    if !a.status.is_success() {
        bail!("deploy of {name} failed: {}", a.error_message());
    }
    Ok(())
}

/// One invocation: its start kind and emberd's own time for it (ms).
async fn invoke_timed(client: &Client, name: &str) -> Result<(String, f64)> {
    let a = client
        .request(
            Method::POST,
            &format!("/v1/functions/{name}/invoke"),
            Some("application/json"),
            "{}",
        )
        .await?;
    if !a.status.is_success() {
        bail!("invocation of {name} failed: {}", a.error_message());
    }
    let report: Report = decode(&a, "an invocation report")?;
    Ok((
        report.start.as_str().to_string(),
        report.timings_us.total as f64 / 1000.0,
    ))
}

/// emberd binds a function zygote after the first invocation, in the
/// background: wait (at most 3 s) while it is `pending`. Its state, or
/// `None` from an emberd without function zygotes (whose answer has no
/// `zygote_state`, so is no [`FunctionInfo`]).
async fn zygote_after_first(client: &Client, name: &str) -> Result<Option<ZygoteState>> {
    let t = Instant::now();
    loop {
        let a = client.get(&format!("/v1/functions/{name}")).await?;
        let z = serde_json::from_slice::<FunctionInfo>(&a.body)
            .ok()
            .map(|f| f.zygote_state);
        if z != Some(ZygoteState::Pending) || t.elapsed() > Duration::from_secs(3) {
            return Ok(z);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `"9 warm, 1 hot"`, most frequent first.
fn start_kinds(starts: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in starts {
        match counts.iter_mut().find(|(k, _)| k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s.clone(), 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    parts.join(", ")
}

/// What the slow-import part of the demo prints.
fn slow_import_lines(
    first: &(String, f64),
    rest: &[(String, f64)],
    zygote: Option<&ZygoteState>,
) -> Vec<String> {
    let mut daemon: Vec<f64> = rest.iter().map(|r| r.1).collect();
    daemon.sort_by(f64::total_cmp);
    let p50 = percentile(&daemon, 50.0);
    let starts: Vec<String> = rest.iter().map(|r| r.0.clone()).collect();
    let state = match zygote.map(zygote_state_name) {
        Some(s) => format!("function zygote {s}"),
        None => "this emberd has no function zygotes: every invocation imports".into(),
    };
    let ratio = first.1 / p50.max(0.001);
    let versus = if ratio >= 2.0 {
        format!("{ratio:.0}x below the first")
    } else {
        "no faster than the first".to_string()
    };
    vec![
        format!(
            "function with a 100 ms import: first invocation {} start, daemon-side {:.1} ms ({state})",
            first.0, first.1
        ),
        format!(
            "  next {} ({}): daemon-side p50 {p50:.2} ms, {versus}",
            rest.len(),
            start_kinds(&starts),
        ),
    ]
}

/// A function zygote's state as the API spells it.
fn zygote_state_name(z: &ZygoteState) -> &'static str {
    match z {
        ZygoteState::Pending => "pending",
        ZygoteState::Ready { .. } => "ready",
        ZygoteState::Fallback { .. } => "fallback",
        ZygoteState::Off => "off",
    }
}

/// Deploy the slow-import function; its first invocation against the
/// following ones.
async fn slow_import_tour(client: &Client, tmp: &Path) -> Result<()> {
    let name = "demo-slow-import";
    deploy(client, name, &tmp.join(name), SLOW_IMPORT_SAMPLE).await?;
    let first = invoke_timed(client, name).await?;
    let zygote = zygote_after_first(client, name).await?;
    let mut rest = Vec::with_capacity(SLOW_IMPORT_INVOCATIONS);
    for _ in 0..SLOW_IMPORT_INVOCATIONS {
        rest.push(invoke_timed(client, name).await?);
    }
    for line in slow_import_lines(&first, &rest, zygote.as_ref()) {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_fill_reads_the_named_runtime_pool() {
        let pool = |runtime: &str, idle: u64, target: u64| {
            let mut p = serde_json::json!({ "runtime": runtime, "backend": "runc" });
            for k in [
                "target",
                "min_warm",
                "max_warm",
                "headroom",
                "max",
                "idle",
                "bound",
                "busy",
                "creating",
                "created_total",
                "destroyed_total",
                "create_failures_total",
                "warm_starts_total",
                "hot_starts_total",
                "cold_starts_total",
                "recycled_total",
                "adopted_total",
            ] {
                p[k] = serde_json::json!(0);
            }
            p["idle"] = serde_json::json!(idle);
            p["target"] = serde_json::json!(target);
            p
        };
        let pools: PoolList = serde_json::from_value(serde_json::json!({ "pools": [
            pool("node", 2, 2),
            pool("python3", 1, 3),
        ]}))
        .unwrap();
        assert_eq!(pool_fill(&pools, "python3"), (1, 3));
        assert_eq!(pool_fill(&pools, "node"), (2, 2));
        let none = PoolList { pools: Vec::new() };
        assert_eq!(pool_fill(&none, "python3"), (0, 0));
    }

    #[test]
    fn zygote_states_are_spelt_as_the_api_does() {
        for z in [
            ZygoteState::Pending,
            ZygoteState::Ready { init_us: 1 },
            ZygoteState::Fallback {
                outcome: "crashed".into(),
                reason: "r".into(),
            },
            ZygoteState::Off,
        ] {
            assert_eq!(
                serde_json::to_value(&z).unwrap()["state"],
                zygote_state_name(&z)
            );
        }
    }

    #[test]
    fn slow_import_lines_compare_the_first_invocation_with_the_rest() {
        let first = ("hot".to_string(), 104.0);
        let mut rest = vec![("warm".to_string(), 0.5); 9];
        rest.push(("hot".to_string(), 103.0));
        let z = ZygoteState::Ready { init_us: 100_000 };
        let lines = slow_import_lines(&first, &rest, Some(&z));
        assert_eq!(
            lines[0],
            "function with a 100 ms import: first invocation hot start, daemon-side 104.0 ms (function zygote ready)"
        );
        assert_eq!(
            lines[1],
            "  next 10 (9 warm, 1 hot): daemon-side p50 0.50 ms, 208x below the first"
        );
        let every = vec![("hot".to_string(), 103.0); 10];
        let old = slow_import_lines(&first, &every, None);
        assert!(old[0].ends_with("(this emberd has no function zygotes: every invocation imports)"));
        assert_eq!(
            old[1],
            "  next 10 (10 hot): daemon-side p50 103.00 ms, no faster than the first"
        );
    }
}
