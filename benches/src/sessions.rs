//! The sessions scenario, on runc: how long opening a session takes
//! (`POST /v1/functions/{name}/sessions`, the client's round trip) with
//! the pool warm (a paused sandbox waits: the open thaws it and injects the
//! code) and with it empty (an emberd with `--pool-size 0
//! --pool-headroom 0`: every open creates its sandbox, as a cold start
//! does), against `runc run` of the same handler; then the first and the
//! later calls of a session; then the memory each open session holds.
//!
//! The handler counts its calls in a module global, so every call also
//! checks that the session kept its state.

use crate::cold;
use crate::hot::Emberd;
use crate::stats::{summarize, Summary};
use anyhow::{bail, Context, Result};
use ember_api::client::Connection;
use ember_term as progress;
use hyper::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// Counts its calls: a session keeps `n` between them.
const COUNTER: &str = "n = 0\n\ndef handler(event, context):\n    global n\n    n += 1\n    \
                       return {\"hello\": event.get(\"name\", \"world\"), \"n\": n}\n";

/// Warm sandboxes of the warm emberd's pool.
const WARM_POOL: usize = 2;

pub struct Settings {
    /// Sessions opened (and closed) per pool state; also the `runc run`
    /// cold starts.
    pub runs: usize,
    /// Calls per session after its first.
    pub calls: usize,
    /// Sessions held open at once for the memory figure.
    pub memory_sessions: usize,
    pub event: String,
}

/// What one pool state's runs measured, client milliseconds.
#[derive(Default)]
struct Runs {
    open: Vec<f64>,
    first: Vec<f64>,
    later: Vec<f64>,
    close: Vec<f64>,
    /// Opens that found no idle sandbox although the pool was meant to
    /// have one (warm), or found one although it was meant to be empty.
    off_state: usize,
}

/// One call of session `id` over `conn`: its client time; fails unless
/// the handler answered call number `n` (the session's state was kept).
async fn call(conn: &mut Connection, id: &str, event: &str, n: u64) -> Result<f64> {
    let t = Instant::now();
    let a = conn
        .request(
            Method::POST,
            &format!("/v1/sessions/{id}/invoke"),
            Some("application/json"),
            event.to_string(),
        )
        .await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let v = a.json();
    if !a.status.is_success() || v["result"]["n"] != json!(n) {
        bail!(
            "call {n} of session {id}: {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
    }
    Ok(ms)
}

/// Open a session of `name`: its id and the client time.
async fn open(conn: &mut Connection, name: &str) -> Result<(String, f64)> {
    let t = Instant::now();
    let a = conn
        .request(
            Method::POST,
            &format!("/v1/functions/{name}/sessions"),
            None,
            "",
        )
        .await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if a.status.as_u16() != 201 {
        bail!("opening a session of {name}: {}", a.error_message());
    }
    let id = a.json()["id"]
        .as_str()
        .context("a session without an id")?
        .to_string();
    Ok((id, ms))
}

async fn close(conn: &mut Connection, id: &str) -> Result<f64> {
    let t = Instant::now();
    let a = conn
        .request(Method::DELETE, &format!("/v1/sessions/{id}"), None, "")
        .await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !a.status.is_success() {
        bail!("closing session {id}: {}", a.error_message());
    }
    Ok(ms)
}

/// Idle sandboxes of the python3 pool.
async fn idle(e: &Emberd) -> Result<u64> {
    let pools = e.client.get("/v1/pools").await?.json();
    Ok(pools["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["runtime"] == "python3"))
        .and_then(|p| p["idle"].as_u64())
        .unwrap_or(0))
}

/// Wait (up to 30 s) until the pool holds `n` idle sandboxes again.
async fn wait_idle(e: &Emberd, n: u64) -> Result<()> {
    let t = Instant::now();
    while idle(e).await? < n {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the pool did not refill to {n} idle sandboxes within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// `s.runs` sessions of `name` in turn: open (the pool refilled first
/// when `warm`), first call, later calls, close.
async fn time_runs(e: &Emberd, name: &str, warm: bool, s: &Settings) -> Result<Runs> {
    let label = if warm { "pool warm" } else { "pool empty" };
    let bar = progress::bar(
        s.runs as u64,
        format!("sessions, {label}: open, call, close"),
    );
    let mut conn = Connection::open(e.client.socket()).await?;
    let mut r = Runs::default();
    for _ in 0..s.runs {
        if warm {
            wait_idle(e, WARM_POOL as u64).await?;
        }
        if (idle(e).await? > 0) != warm {
            r.off_state += 1;
        }
        let (id, ms) = open(&mut conn, name).await?;
        r.open.push(ms);
        r.first.push(call(&mut conn, &id, &s.event, 1).await?);
        for k in 0..s.calls {
            r.later
                .push(call(&mut conn, &id, &s.event, 2 + k as u64).await?);
        }
        r.close.push(close(&mut conn, &id).await?);
        bar.inc(1);
    }
    Ok(r)
}

/// `n` sessions open at once, each called once: per session, the memory
/// its sandbox's cgroup uses (`memory_bytes`) and the PSS and RSS of its
/// processes; and the same PSS/RSS of the idle generic sandboxes, for
/// comparison. Closes them after.
async fn memory(e: &Emberd, name: &str, n: usize, event: &str) -> Result<serde_json::Value> {
    let mut conn = Connection::open(e.client.socket()).await?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let (id, _) = open(&mut conn, name).await?;
        call(&mut conn, &id, event, 1).await?;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tag = e.tag().await?;
    let list = e
        .client
        .get(&format!("/v1/sessions?function={name}"))
        .await?;
    let sessions = list.json()["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cgroup: Vec<u64> = sessions
        .iter()
        .filter_map(|s| s["memory_bytes"].as_u64())
        .collect();
    let sandboxes: Vec<String> = sessions
        .iter()
        .filter_map(|s| s["sandbox"].as_str().map(String::from))
        .collect();
    let held = crate::memory::measure(&tag, &sandboxes);
    let generic: Vec<String> = e.client.get("/v1/sandboxes").await?.json()["sandboxes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|s| s["state"] == "idle" && s["bound_to"].is_null())
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect();
    let paused = crate::memory::measure(&tag, &generic);
    for id in &ids {
        close(&mut conn, id).await?;
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let session_cgroup = mean(&cgroup) / (1024.0 * 1024.0);
    let pss = |m: &[crate::memory::SandboxMemory]| {
        mib(m.iter().map(|x| x.pss_kib).sum::<u64>()) / m.len().max(1) as f64
    };
    let rss = |m: &[crate::memory::SandboxMemory]| {
        mib(m.iter().map(|x| x.rss_kib).sum::<u64>()) / m.len().max(1) as f64
    };
    println!(
        "  memory per open session ({} open, each called once): cgroup {session_cgroup:.1} MiB, \
         PSS {:.1} MiB, RSS {:.1} MiB",
        cgroup.len(),
        pss(&held),
        rss(&held)
    );
    println!(
        "  a paused generic sandbox of the same pool: PSS {:.1} MiB, RSS {:.1} MiB (mean of {})",
        pss(&paused),
        rss(&paused),
        paused.len()
    );
    Ok(json!({
        "sessions": cgroup.len(),
        "cgroup_mib_per_session": session_cgroup,
        "pss_mib_per_session": pss(&held),
        "rss_mib_per_session": rss(&held),
        "cgroup_bytes": cgroup,
        "per_session": held,
        "paused_generic": {
            "n": paused.len(), "pss_mib": pss(&paused), "rss_mib": rss(&paused),
        },
    }))
}

fn runs_json(r: &Runs) -> serde_json::Value {
    json!({
        "open": { "summary": summarize(&r.open), "client_ms": r.open },
        "first_call": { "summary": summarize(&r.first), "client_ms": r.first },
        "later_calls": { "summary": summarize(&r.later), "client_ms": r.later },
        "close": { "summary": summarize(&r.close), "client_ms": r.close },
        "off_state_opens": r.off_state,
    })
}

fn print_runs(label: &str, r: &Runs) {
    crate::row(&format!("open, {label}"), &summarize(&r.open));
    crate::row(&format!("  first call, {label}"), &summarize(&r.first));
    crate::row(&format!("  later calls, {label}"), &summarize(&r.later));
    crate::row(&format!("  close, {label}"), &summarize(&r.close));
    if r.off_state > 0 {
        println!(
            "  ({} of {} opens did not find the pool as meant)",
            r.off_state,
            r.open.len()
        );
    }
}

/// `cold` over `ember` at p50, as `25.3x`.
fn ratio(cold: &Summary, ember: &Summary) -> String {
    format!("{:.1}x", cold.p50_ms / ember.p50_ms)
}

/// Run on runc: the report section and its chart rows.
pub async fn run(
    emberd_bin: &Path,
    s: &Settings,
) -> Result<(serde_json::Value, Vec<crate::svg::Row>)> {
    let code = crate::code_dir("bench-session-", COUNTER)?;
    println!();
    println!(
        "{:<44} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "sessions on runc (client ms)", "n", "p50", "p90", "p99", "mean"
    );
    // Room for the sessions held open at once, beyond the warm ones.
    let max = (s.memory_sessions + WARM_POOL + 2).to_string();
    let mut warm = Emberd::start_with(
        emberd_bin,
        WARM_POOL,
        "runc",
        &["--max-sandboxes", &max, "--max-sessions", &max],
    )
    .await?;
    crate::hot::deploy_with(&warm, "counter", code.path(), "mode=fork").await?;
    let warm_runs = time_runs(&warm, "counter", true, s).await?;
    print_runs("pool warm", &warm_runs);
    let memory = if s.memory_sessions > 0 {
        wait_idle(&warm, WARM_POOL as u64).await?;
        Some(memory(&warm, "counter", s.memory_sessions, &s.event).await?)
    } else {
        None
    };
    warm.stop()?;

    let mut empty = Emberd::start_with(
        emberd_bin,
        0,
        "runc",
        &["--pool-headroom", "0", "--pool-max-warm", "0"],
    )
    .await?;
    crate::hot::deploy_with(&empty, "counter", code.path(), "mode=fork").await?;
    let empty_runs = time_runs(&empty, "counter", false, s).await?;
    print_runs("pool empty", &empty_runs);
    empty.stop()?;

    let rt = cold::Runtime {
        binary: "runc".into(),
        global_args: Vec::new(),
    };
    let phase = "sessions: `runc run` cold starts".to_string();
    let cold_ms = cold::run(&rt, phase, code.path(), &s.event, s.runs, "bench")?;
    crate::remove_bench_cgroups();
    let cold = summarize(&cold_ms);
    crate::row("`runc run` of the same handler (cold start)", &cold);
    let (ow, oe) = (summarize(&warm_runs.open), summarize(&empty_runs.open));
    let open_first: Vec<f64> = warm_runs
        .open
        .iter()
        .zip(&warm_runs.first)
        .map(|(o, f)| o + f)
        .collect();
    let of = summarize(&open_first);
    println!(
        "  pool warm: {WARM_POOL} paused sandboxes, refilled before each open; pool empty: \
         --pool-size 0 --pool-headroom 0, each open creates its sandbox"
    );
    println!(
        "  `runc run` / open at p50: {} (pool warm), {} (pool empty); / open + first call, pool warm: {}",
        ratio(&cold, &ow),
        ratio(&cold, &oe),
        ratio(&cold, &of)
    );
    let rows = vec![
        crate::svg::Row {
            label: "session open, pool warm".into(),
            summary: ow.clone(),
            hot: true,
        },
        crate::svg::Row {
            label: "session open, pool empty".into(),
            summary: oe.clone(),
            hot: false,
        },
        crate::svg::Row {
            label: "session later calls".into(),
            summary: summarize(&warm_runs.later),
            hot: true,
        },
        crate::svg::Row {
            label: "session handler runc run (cold)".into(),
            summary: cold.clone(),
            hot: false,
        },
    ];
    Ok((
        json!({
            "runs": s.runs,
            "calls_per_session": s.calls,
            "pool_warm": runs_json(&warm_runs),
            "pool_empty": runs_json(&empty_runs),
            "open_plus_first_call_pool_warm": of,
            "memory": memory,
            "runc_run": { "summary": cold, "cold_ms": cold_ms },
            "ratios_p50": {
                "runc_run_over_open_warm": cold.p50_ms / ow.p50_ms,
                "runc_run_over_open_empty": cold.p50_ms / oe.p50_ms,
                "runc_run_over_open_and_first_call_warm": cold.p50_ms / of.p50_ms,
            },
        }),
        rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_at_the_median() {
        let cold = summarize(&[40.0, 50.0, 60.0]);
        let open = summarize(&[1.0, 2.0, 30.0]);
        assert_eq!(ratio(&cold, &open), "25.0x");
    }
}
