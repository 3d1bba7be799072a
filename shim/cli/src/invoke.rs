//! `ember invoke`, and how an invocation's answer is shown (by `invoke`
//! and `test`): the result on stdout; the function's output and the
//! timings on stderr.

use crate::reply::{decode, error_body, ok, result_json};
use crate::terminal::{shown, Stream};
use anyhow::{Context, Result};
use ember_api::client::{Answer, Client};
use ember_api::Report;
use hyper::Method;

/// Longest wait between retries, whatever Retry-After says: the CLI is
/// interactive.
const MAX_RETRY_WAIT_S: u64 = 60;

pub async fn invoke(
    client: &Client,
    name: &str,
    data: Option<String>,
    verbose: bool,
    retries: u32,
    session: Option<&str>,
) -> Result<()> {
    let body = read_data(data)?;
    let path = match session {
        // Refused here, before the call, if it is another function's
        // session or has ended: `NAME` says what the caller means to run.
        Some(id) => {
            crate::sessions::check(client, id, name).await?;
            format!("/v1/sessions/{id}/invoke")
        }
        None => format!("/v1/functions/{name}/invoke"),
    };
    let mut tries = 0;
    loop {
        let a = client
            .request(Method::POST, &path, Some("application/json"), body.clone())
            .await?;
        match retry_wait(&a, tries, retries) {
            Some(wait) => {
                tries += 1;
                eprintln!(
                    "emberd is overloaded (429): retrying in {wait} s ({tries} of {retries})"
                );
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            }
            None => return show_invocation(a, verbose),
        }
    }
}

/// How long to wait before retrying `a`, if it is a refusal worth
/// retrying and `tries` of `retries` are not used up: its Retry-After
/// (1 s without one), at most [`MAX_RETRY_WAIT_S`].
fn retry_wait(a: &Answer, tries: u32, retries: u32) -> Option<u64> {
    if a.status != hyper::StatusCode::TOO_MANY_REQUESTS || tries >= retries {
        return None;
    }
    Some(a.retry_after.unwrap_or(1).clamp(1, MAX_RETRY_WAIT_S))
}

/// The event: `--data` as JSON text, `@FILE` read from a file, `-` from
/// stdin; `{}` without it.
pub fn read_data(data: Option<String>) -> Result<Vec<u8>> {
    match data.as_deref() {
        None => Ok(b"{}".to_vec()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("reading event from stdin")?;
            Ok(buf)
        }
        Some(s) if s.starts_with('@') => {
            std::fs::read(&s[1..]).with_context(|| format!("reading event file {}", &s[1..]))
        }
        Some(s) => Ok(s.as_bytes().to_vec()),
    }
}

/// Print an invocation's answer: the result on stdout; with `verbose` (or
/// on failure) its output, and timings, on stderr.
pub fn show_invocation(a: Answer, verbose: bool) -> Result<()> {
    if a.status.is_success() {
        let report: Report = decode(&a, "an invocation report")?;
        if verbose {
            print_function_output(&report);
            print_timings(&report);
        }
        println!("{}", result_json(&report)?);
        return Ok(());
    }
    if let Some(body) = error_body(&a) {
        if let Some(inv) = &body.invocation {
            print_function_output(inv);
            if verbose {
                print_timings(inv);
            }
        }
        if let Some(tb) = body.error.traceback.as_deref().filter(|t| !t.is_empty()) {
            eprint!("{}", shown(tb, Stream::Stderr));
            if !tb.ends_with('\n') {
                eprintln!();
            }
        }
    }
    ok(a).map(|_| ())
}

fn print_function_output(inv: &Report) {
    for (stream, text, truncated) in [
        ("stdout", &inv.stdout, inv.stdout_truncated),
        ("stderr", &inv.stderr, inv.stderr_truncated),
    ] {
        if text.is_empty() {
            continue;
        }
        eprintln!(
            "--- function {stream}{} ---",
            if truncated { " (truncated)" } else { "" }
        );
        eprint!("{}", shown(text, Stream::Stderr));
        if !text.ends_with('\n') {
            eprintln!();
        }
    }
}

fn print_timings(inv: &Report) {
    let t = &inv.timings_us;
    let ms = |us: u64| us as f64 / 1000.0;
    eprintln!(
        "{} start in {} | total {:.2} ms = queue {:.2} + create {:.2} + thaw {:.2} + inject {:.2} + run {:.2} + cleanup {:.2}",
        inv.start.as_str(),
        inv.sandbox,
        ms(t.total),
        ms(t.queue),
        ms(t.create),
        ms(t.thaw),
        ms(t.inject),
        ms(t.run),
        ms(t.cleanup),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    fn answer(status: u16, retry_after: Option<u64>) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: bytes::Bytes::new(),
            retry_after,
        }
    }

    #[test]
    fn only_a_429_is_retried_after_its_retry_after_a_bounded_number_of_times() {
        assert_eq!(retry_wait(&answer(429, Some(4)), 0, 3), Some(4));
        assert_eq!(retry_wait(&answer(429, Some(4)), 2, 3), Some(4));
        assert_eq!(retry_wait(&answer(429, Some(4)), 3, 3), None);
        assert_eq!(retry_wait(&answer(429, None), 0, 3), Some(1));
        assert_eq!(retry_wait(&answer(429, Some(0)), 0, 3), Some(1));
        assert_eq!(retry_wait(&answer(429, Some(3600)), 0, 3), Some(60));
        assert_eq!(retry_wait(&answer(429, Some(2)), 0, 0), None);
        assert_eq!(retry_wait(&answer(503, Some(2)), 0, 3), None);
        assert_eq!(retry_wait(&answer(200, None), 0, 3), None);
    }
}
