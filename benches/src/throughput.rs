//! Throughput: the hello handler in fork mode (with a function zygote) and
//! in specialized mode, under 1, 4, 8 ... concurrent clients. Each client
//! holds one kept-alive HTTP/1.1 connection over the Unix socket and sends
//! its next invocation as soon as the last one is answered (a closed
//! loop), for a fixed time; invocations per second, the latency under
//! that load and the CPU per invocation.
//!
//! emberd keeps as many generic sandboxes warm as the most clients, and
//! may hold as many bound ones besides, so no invocation waits for a
//! sandbox to be created once the warm-up is over.

use crate::cpu;
use crate::hot::{Emberd, Sample};
use crate::stats::summarize;
use crate::zygote::{self, Mode, Section};
use anyhow::{bail, Result};
use ember_api::client::Connection;
use hyper::Method;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Untimed load before each measurement: long enough for emberd to bind
/// zygotes and specialized sandboxes for every client.
const WARMUP: Duration = Duration::from_secs(1);

const MODES: [Mode; 2] = [Mode::ForkZygote, Mode::Specialized];

pub struct Settings {
    pub clients: Vec<usize>,
    pub seconds: f64,
    pub event: String,
}

/// Invocations per second per (mode, clients), for the targets.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub rates: Vec<(Mode, usize, f64)>,
}

impl Figures {
    pub fn rate(&self, mode: Mode, clients: usize) -> Option<f64> {
        self.rates
            .iter()
            .find(|(m, c, _)| *m == mode && *c == clients)
            .map(|(_, _, r)| *r)
    }
}

fn clients_label(n: usize) -> String {
    if n == 1 {
        "1 client".into()
    } else {
        format!("{n} clients")
    }
}

/// One client: invoke until `deadline`, on one connection.
async fn client_loop(
    socket: PathBuf,
    path: String,
    event: String,
    deadline: Instant,
) -> Result<Vec<Sample>> {
    let mut conn = Connection::open(&socket).await?;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        let a = conn
            .request(Method::POST, &path, Some("application/json"), event.clone())
            .await?;
        let client_ms = t.elapsed().as_secs_f64() * 1000.0;
        let v = a.json();
        if !a.status.is_success() {
            bail!("invocation failed under load: {}", a.error_message());
        }
        out.push(Sample {
            client_ms,
            start: v["start"].as_str().unwrap_or("?").to_string(),
            timings_us: v["timings_us"].clone(),
            result: serde_json::Value::Null,
        });
    }
    Ok(out)
}

/// `clients` closed loops for `duration`; every sample and the time until
/// the last answer.
async fn closed_loop(
    e: &Emberd,
    name: &str,
    event: &str,
    clients: usize,
    duration: Duration,
) -> Result<(Vec<Sample>, Duration)> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        set.spawn(client_loop(
            e.client.socket().to_path_buf(),
            format!("/v1/functions/{name}/invoke"),
            event.to_string(),
            deadline,
        ));
    }
    let mut samples = Vec::new();
    while let Some(r) = set.join_next().await {
        samples.extend(r??);
    }
    Ok((samples, start.elapsed()))
}

async fn measure(
    e: &Emberd,
    mode: Mode,
    clients: usize,
    s: &Settings,
) -> Result<(serde_json::Value, f64)> {
    let name = mode.function("tp");
    closed_loop(e, &name, &s.event, clients, WARMUP).await?;
    let tag = e.tag().await?;
    let before = e.pid().map(|pid| cpu::Snapshot::take(pid, &tag));
    let duration = Duration::from_secs_f64(s.seconds);
    let (samples, elapsed) = closed_loop(e, &name, &s.event, clients, duration).await?;
    let cpu = before.zip(e.pid()).map(|(b, pid)| {
        cpu::Snapshot::take(pid, &tag)
            .since(&b)
            .per_invocation(samples.len())
    });
    let rate = samples.len() as f64 / elapsed.as_secs_f64();
    let client = summarize(&zygote::client_ms(&samples));
    let daemon = summarize(&zygote::daemon_ms(&samples));
    let starts = crate::scenarios::start_counts(&samples);
    println!(
        "{:<22} {:>10}: {rate:>7.0} inv/s; client p50 {:.2} p99 {:.2} ms, daemon p50 {:.2} p99 {:.2} ms ({starts})",
        mode.label(),
        clients_label(clients),
        client.p50_ms,
        client.p99_ms,
        daemon.p50_ms,
        daemon.p99_ms
    );
    if let Some(c) = &cpu {
        println!("  {}", c.line());
    }
    let report = json!({
        "clients": clients,
        "invocations": samples.len(),
        "seconds": elapsed.as_secs_f64(),
        "invocations_per_second": rate,
        "client": client,
        "daemon_total": daemon,
        "starts": starts,
        "cpu_per_invocation_us": cpu,
    });
    Ok((report, rate))
}

/// Run on runc.
pub async fn run(emberd_bin: &Path, code: &Path, s: &Settings) -> Result<Section<Figures>> {
    let most = s.clients.iter().copied().max().unwrap_or(1);
    // A sandbox is bound (function zygote, specialized) only while its pool
    // is below its maximum: room for one bound sandbox per client next to
    // the generic warm ones.
    let cap = (2 * most + 2).to_string();
    let flags = [
        "--max-sandboxes",
        cap.as_str(),
        "--pool-max-warm",
        cap.as_str(),
    ];
    println!();
    println!(
        "throughput on runc: hello, closed loops of kept-alive clients, {} s each, pool of {most}",
        s.seconds
    );
    let mut emberd = Emberd::start_with(emberd_bin, most, "runc", &flags).await?;
    let mut report = serde_json::Map::new();
    let mut bars = Vec::new();
    let mut figures = Figures::default();
    for mode in MODES {
        let setting = zygote::deploy(&emberd, &mode.function("tp"), code, mode).await?;
        let mut rows = Vec::new();
        for &clients in &s.clients {
            let (r, rate) = measure(&emberd, mode, clients, s).await?;
            rows.push(r);
            bars.push(crate::svg::Bar {
                label: format!("{}, {}", mode.label(), clients_label(clients)),
                value: rate,
            });
            figures.rates.push((mode, clients, rate));
        }
        report.insert(
            mode.key().to_string(),
            json!({ "zygote_setting": setting, "runs": rows }),
        );
    }
    emberd.stop()?;
    let groups = vec![crate::svg::BarGroup {
        title: format!("throughput, hello on runc, closed loops of {} s", s.seconds),
        unit: "inv/s".into(),
        bars,
    }];
    Ok(Section {
        report: serde_json::Value::Object(report),
        rows: Vec::new(),
        groups,
        figures,
    })
}
