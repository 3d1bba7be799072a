//! The ember side: a private emberd, one deployed handler, sequential
//! invocations over the Unix socket.

use anyhow::{bail, Context, Result};
use ember_shim::client::{Client, Connection};
use ember_shim::progress;
use hyper::Method;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Stops the private emberd (SIGTERM, then wait) even on error.
pub struct Emberd {
    child: Option<std::process::Child>,
    pub client: Client,
    dir: tempfile::TempDir,
}

impl Emberd {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub async fn start(emberd: &Path, pool_size: usize, backend: &str) -> Result<Emberd> {
        Emberd::start_with(emberd, pool_size, backend, &[]).await
    }

    /// Start with more emberd flags (python3 pools only unless they say
    /// `--runtimes`); returns once every pool has its warm sandboxes.
    pub async fn start_with(
        emberd: &Path,
        pool_size: usize,
        backend: &str,
        extra: &[&str],
    ) -> Result<Emberd> {
        let dir = tempfile::Builder::new().prefix("ember-bench-").tempdir()?;
        let socket = dir.path().join("ember.sock");
        let log = std::fs::File::create(dir.path().join("emberd.log"))?;
        let child = std::process::Command::new(emberd)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--pool-size")
            .arg(pool_size.to_string())
            .arg("--backend")
            .arg(backend)
            .args(
                (!extra.contains(&"--runtimes"))
                    .then_some(["--runtimes", "python3"])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", emberd.display()))?;
        let e = Emberd {
            child: Some(child),
            client: Client::new(&socket),
            dir,
        };
        let t = Instant::now();
        let warming = progress::gauge(format!("{backend}: warming emberd's pools"));
        loop {
            if let Ok(a) = e.client.get("/v1/pools").await {
                let pools = a.json()["pools"].as_array().cloned().unwrap_or_default();
                let count = |p: &serde_json::Value, k: &str| p[k].as_u64().unwrap_or(0);
                let warm = |p: &serde_json::Value| count(p, "idle") >= count(p, "min_warm");
                let target = pools.iter().map(|p| count(p, "min_warm")).sum();
                if target > 0 {
                    warming.set_length(target);
                }
                warming.set_position(
                    pools
                        .iter()
                        .map(|p| count(p, "idle").min(count(p, "min_warm")))
                        .sum(),
                );
                if !pools.is_empty() && pools.iter().all(warm) {
                    return Ok(e);
                }
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("emberd's pool did not fill within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            let status = c.wait()?;
            if !status.success() {
                bail!("emberd exited with {status}");
            }
        }
        Ok(())
    }
}

impl Drop for Emberd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

pub fn tar_gz(dir: &Path) -> Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    t.append_dir_all(".", dir)?;
    Ok(t.into_inner()?.finish()?)
}

/// One invocation as the bench saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub client_ms: f64,
    pub start: String,
    pub timings_us: serde_json::Value,
}

pub async fn deploy(e: &Emberd, name: &str, code: &Path, profile: &str) -> Result<()> {
    deploy_with(e, name, code, &format!("profile={profile}")).await
}

/// Deploy with any settings, as a query string (`runtime=node&mode=...`).
pub async fn deploy_with(e: &Emberd, name: &str, code: &Path, settings: &str) -> Result<()> {
    let a = e
        .client
        .request(
            Method::PUT,
            &format!("/v1/functions/{name}?timeout_ms=5000&{settings}"),
            Some("application/gzip"),
            tar_gz(code)?,
        )
        .await?;
    if !a.status.is_success() {
        bail!("deploy failed: {}", a.error_message());
    }
    Ok(())
}

/// `n` sequential invocations of `name`, with a progress bar saying
/// `phase` (on a terminal).
pub async fn invoke_n(
    e: &Emberd,
    phase: String,
    name: &str,
    event: &str,
    n: usize,
    expect: &str,
    gap_ms: u64,
) -> Result<Vec<Sample>> {
    let mut out = Vec::with_capacity(n);
    let bar = progress::bar(n as u64, phase);
    let path = format!("/v1/functions/{name}/invoke");
    // One kept-alive connection, as an orchestrator would hold.
    let mut conn = Connection::open(e.client.socket()).await?;
    for i in 0..n {
        if gap_ms > 0 {
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        }
        let t = Instant::now();
        let a = conn
            .request(
                Method::POST,
                &path,
                Some("application/json"),
                event.to_string(),
            )
            .await?;
        let client_ms = t.elapsed().as_secs_f64() * 1000.0;
        let v = a.json();
        if !a.status.is_success() || !v["result"].to_string().contains(expect) {
            bail!(
                "invocation {i} failed: {}",
                String::from_utf8_lossy(&a.body)
            );
        }
        out.push(Sample {
            client_ms,
            start: v["start"].as_str().unwrap_or("?").to_string(),
            timings_us: v["timings_us"].clone(),
        });
        bar.inc(1);
    }
    Ok(out)
}

pub fn default_emberd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("emberd")))
        .unwrap_or_else(|| PathBuf::from("emberd"))
}
