//! `ember logs`: a function's invocation records, oldest first, once or
//! followed.

use crate::reply::{decode, ok};
use crate::terminal::{shown, Stream};
use anyhow::Result;
use ember_api::client::Client;
use ember_api::records::InvocationList;
use ember_api::InvocationRecord;

/// An age `--since` cannot read.
#[derive(Debug, thiserror::Error)]
#[error("invalid age {0:?}: use e.g. 30s, 10m, 2h, 1d")]
pub struct BadAge(String);

/// `30s`, `10m`, `2h`, `1d` (or plain seconds) as milliseconds.
pub fn parse_age(text: &str) -> std::result::Result<u64, BadAge> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num.parse().map_err(|_| BadAge(text.to_string()))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(BadAge(text.to_string())),
    };
    Ok(n * secs * 1000)
}

pub async fn logs(
    client: &Client,
    name: &str,
    follow: bool,
    since_ms: Option<u64>,
    limit: usize,
) -> Result<()> {
    let mut since = since_ms.map(|age| now_ms() - age as i64);
    let mut seen = std::collections::HashSet::new();
    loop {
        let path = match since {
            Some(s) => format!("/v1/functions/{name}/logs?limit={limit}&since={s}"),
            None => format!("/v1/functions/{name}/logs?limit={limit}"),
        };
        let list: InvocationList = decode(&ok(client.get(&path).await?)?, "invocation records")?;
        for inv in &list.invocations {
            // A running invocation is shown once it has finished.
            if inv.outcome == "running" || !seen.insert(inv.id.clone()) {
                continue;
            }
            print_record(inv);
        }
        if !follow {
            return Ok(());
        }
        // Later polls only need what started in the last minute or since
        // the first shown (a long invocation finishes late).
        since = Some(now_ms() - 60_000);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// One record: a `===` head line, then its output line by line.
fn print_record(inv: &InvocationRecord) {
    let total = inv
        .timings_us
        .as_ref()
        .and_then(|t| t.get("total"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as f64
        / 1000.0;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let head = format!(
        "=== {} {} {} start {} sandbox {} total {total:.2} ms{}",
        inv.id,
        fmt_ms(inv.started_at),
        inv.outcome,
        dash(&inv.start),
        dash(&inv.sandbox),
        inv.error
            .as_deref()
            .map(|e| format!(" | {e}"))
            .unwrap_or_default()
    );
    println!("{}", shown(&head, Stream::Stdout));
    for (stream, text) in [("stdout", &inv.stdout), ("stderr", &inv.stderr)] {
        for line in text.lines() {
            println!("{stream}: {}", shown(line, Stream::Stdout));
        }
    }
}

/// Unix milliseconds as `HH:MM:SS.mmm` UTC.
fn fmt_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        day / 3600,
        day % 3600 / 60,
        day % 60,
        ms.rem_euclid(1000)
    )
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
