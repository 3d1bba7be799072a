//! The ember side: a private emberd, one deployed handler, sequential
//! invocations over the Unix socket.

use anyhow::{bail, Context, Result};
use ember_api::client::{Client, Connection};
use ember_term as progress;
use hyper::Method;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Stops the private emberd (SIGTERM, then wait) even on error.
pub struct Emberd {
    child: Option<std::process::Child>,
    pub client: Client,
    dir: tempfile::TempDir,
    bin: PathBuf,
    args: Vec<String>,
    label: String,
}

/// How long a start took, as a client sees it.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// Until the API answered (state dir, registry, recovery of a previous
    /// run's leftovers).
    pub serving: Duration,
    /// Until every pool held its warm floor.
    pub warm: Duration,
}

impl Emberd {
    /// The run directory of daemon instance `tag` (emberd's default
    /// `--run-dir`): sandbox bundles and each backend's runtime root.
    pub fn run_dir(tag: &str) -> PathBuf {
        Path::new("/run/ember").join(tag)
    }

    /// The running daemon's process id (for its CPU counters).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The instance tag the daemon names its sandboxes' cgroup parent
    /// after (`/ember/<tag>`).
    pub async fn tag(&self) -> Result<String> {
        Ok(self.client.get("/v1/health").await?.json()["instance"]
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub async fn start(emberd: &Path, pool_size: usize, backend: &str) -> Result<Emberd> {
        Emberd::start_with(emberd, pool_size, backend, &[]).await
    }

    /// Start with extra emberd flags (python3 pools only unless they name
    /// `--runtimes`); returns once every pool is warm.
    pub async fn start_with(
        emberd: &Path,
        pool_size: usize,
        backend: &str,
        extra: &[&str],
    ) -> Result<Emberd> {
        Ok(Emberd::start_timed(emberd, pool_size, backend, extra)
            .await?
            .0)
    }

    /// [`Emberd::start_with`], and how long the start took.
    pub async fn start_timed(
        emberd: &Path,
        pool_size: usize,
        backend: &str,
        extra: &[&str],
    ) -> Result<(Emberd, Started)> {
        let dir = tempfile::Builder::new().prefix("ember-bench-").tempdir()?;
        let socket = dir.path().join("ember.sock");
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--state-dir".into(),
            dir.path().join("state").display().to_string(),
            "--pool-size".into(),
            pool_size.to_string(),
            "--backend".into(),
            backend.into(),
        ];
        if !extra.contains(&"--runtimes") {
            args.extend(["--runtimes".into(), "python3".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut e = Emberd {
            child: None,
            client: Client::new(&socket),
            dir,
            bin: emberd.to_path_buf(),
            args,
            label: backend.to_string(),
        };
        let started = e.spawn().await?;
        Ok((e, started))
    }

    /// Start emberd (again, on the same state dir) and wait for warm pools.
    pub async fn spawn(&mut self) -> Result<Started> {
        if self.child.is_some() {
            bail!("emberd is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("emberd.log"))?;
        let t = Instant::now();
        let child = std::process::Command::new(&self.bin)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let mut serving = None;
        let warming = progress::gauge(format!("{}: warming emberd's pools", self.label));
        loop {
            if let Ok(a) = self.client.get("/v1/pools").await {
                serving.get_or_insert(t.elapsed());
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
                    return Ok(Started {
                        serving: serving.unwrap_or_default(),
                        warm: t.elapsed(),
                    });
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("emberd exited with {status} while starting");
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("emberd's pool did not fill within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL: a crash, leaving every sandbox behind for the next start.
    pub fn crash(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for the exit; how long the drain and the removal
    /// of every sandbox took.
    pub fn stop(&mut self) -> Result<Duration> {
        let t = Instant::now();
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
        Ok(t.elapsed())
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
    /// The handler's result (not in the report: the samples would repeat it).
    #[serde(skip)]
    pub result: serde_json::Value,
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
            result: v["result"].clone(),
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
