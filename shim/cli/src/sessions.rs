//! `ember session open|list|show|close`, and the check `ember invoke
//! --session` makes before calling a session: a session is a sandbox
//! bound to one function and one session alone, keeping the handler's
//! state between its calls (docs/api.md, Sessions).

use crate::reply::{decode, ok};
use crate::table::table;
use anyhow::Result;
use ember_api::client::Client;
use ember_api::{SessionInfo, SessionList};
use hyper::Method;

/// `ember session open NAME`: the id alone on stdout (so
/// `S=$(ember session open f)` works), what it is on stderr; with `json`
/// emberd's reply on stdout instead.
pub async fn open(client: &Client, name: &str, json: bool) -> Result<()> {
    let a = ok(client
        .request(
            Method::POST,
            &format!("/v1/functions/{name}/sessions"),
            None,
            "",
        )
        .await?)?;
    let s: SessionInfo = decode(&a, "a session")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a.json())?);
        return Ok(());
    }
    println!("{}", s.id);
    eprintln!("{}", opened_line(&s));
    Ok(())
}

/// What `ember session open` says on stderr.
fn opened_line(s: &SessionInfo) -> String {
    format!(
        "opened a session of {} in sandbox {} (ends after {} unused, or {} after opening; \
         call it with `ember invoke {} --session {}`)",
        s.function,
        s.sandbox.as_deref().unwrap_or("-"),
        duration(s.idle_timeout_s as i64 * 1000),
        duration(s.max_lifetime_s as i64 * 1000),
        s.function,
        s.id,
    )
}

/// `ember session list`: open sessions (of `function`), with `ended` also
/// the most recently ended ones.
pub async fn list(client: &Client, function: Option<&str>, ended: bool, json: bool) -> Result<()> {
    let a = ok(client.get(&list_path(function, ended)).await?)?;
    let list: SessionList = decode(&a, "a session list")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a.json())?);
        return Ok(());
    }
    let now = now_ms();
    table(
        &[
            "ID",
            "FUNCTION",
            "STATE",
            "INVOCATIONS",
            "IDLE FOR",
            "MEMORY",
            "EXPIRES IN",
        ],
        list.sessions.iter().map(|s| session_row(s, now)).collect(),
    );
    Ok(())
}

/// `GET /v1/sessions` with its query.
fn list_path(function: Option<&str>, ended: bool) -> String {
    let mut q = Vec::new();
    if let Some(f) = function {
        q.push(format!("function={f}"));
    }
    if ended {
        q.push("ended=true".to_string());
    }
    match q.is_empty() {
        true => "/v1/sessions".to_string(),
        false => format!("/v1/sessions?{}", q.join("&")),
    }
}

/// One line of `ember session list`, `now` in Unix milliseconds.
fn session_row(s: &SessionInfo, now: i64) -> Vec<String> {
    let idle_for = match (s.open, s.busy) {
        (true, true) => "running".to_string(),
        (true, false) => duration(now - s.last_used_at),
        (false, _) => "-".to_string(),
    };
    vec![
        s.id.clone(),
        s.function.clone(),
        state(s),
        s.invocations.to_string(),
        idle_for,
        s.memory_bytes.map(mib).unwrap_or_else(|| "-".into()),
        s.expires_at
            .filter(|_| s.open)
            .map(|t| duration(t - now))
            .unwrap_or_else(|| "-".into()),
    ]
}

/// `open`, `busy` (a call is running), or `ended (REASON)`.
fn state(s: &SessionInfo) -> String {
    match (s.open, s.busy, s.end_reason) {
        (true, true, _) => "busy".into(),
        (true, false, _) => "open".into(),
        (false, _, Some(r)) => format!("ended ({r})"),
        (false, _, None) => "ended".into(),
    }
}

/// `ember session show ID`: one session, open or ended, field by field
/// (or emberd's reply with `json`).
pub async fn show(client: &Client, id: &str, json: bool) -> Result<()> {
    let a = ok(client.get(&format!("/v1/sessions/{id}")).await?)?;
    let s: SessionInfo = decode(&a, "a session")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a.json())?);
        return Ok(());
    }
    for (k, v) in details(&s, now_ms()) {
        println!("{k:<14}{v}");
    }
    Ok(())
}

/// `ember session show`'s lines, `now` in Unix milliseconds.
fn details(s: &SessionInfo, now: i64) -> Vec<(&'static str, String)> {
    let ago = |t: i64| format!("{} ago", duration(now - t));
    let mut v = vec![
        ("id", s.id.clone()),
        ("function", s.function.clone()),
        ("state", state(s)),
        (
            "code",
            format!("sha256:{}", &s.digest[..12.min(s.digest.len())]),
        ),
    ];
    if let Some(sb) = &s.sandbox {
        v.push(("sandbox", sb.clone()));
    }
    v.push(("opened", ago(s.created_at)));
    v.push(("last used", ago(s.last_used_at)));
    v.push(("invocations", s.invocations.to_string()));
    if let Some(m) = s.memory_bytes {
        v.push(("memory", mib(m)));
    }
    v.push(("idle timeout", duration(s.idle_timeout_s as i64 * 1000)));
    v.push(("max lifetime", duration(s.max_lifetime_s as i64 * 1000)));
    if let Some(t) = s.expires_at.filter(|_| s.open) {
        v.push(("expires in", duration(t - now)));
    }
    if let Some(t) = s.ended_at {
        v.push(("ended", ago(t)));
    }
    if let Some(m) = s.end_message.as_deref().filter(|m| !m.is_empty()) {
        v.push(("why", m.to_string()));
    }
    v
}

/// `ember session close ID`: end it and destroy its sandbox.
pub async fn close(client: &Client, id: &str) -> Result<()> {
    let a = ok(client
        .request(Method::DELETE, &format!("/v1/sessions/{id}"), None, "")
        .await?)?;
    let s: SessionInfo = decode(&a, "a session")?;
    eprintln!(
        "closed session {} of {} after {} invocation{}",
        s.id,
        s.function,
        s.invocations,
        if s.invocations == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Why `ember invoke NAME --session ID` must not call session `s`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NotCallable {
    #[error("session {id} is a session of function {owner}, not of {asked}: invoke {owner} with it, or open a session of {asked} with `ember session open {asked}`")]
    OtherFunction {
        id: String,
        owner: String,
        asked: String,
    },
    #[error("session {id} of {function} has ended ({reason}){why}: open a new one with `ember session open {function}`")]
    Ended {
        id: String,
        function: String,
        reason: String,
        why: String,
    },
}

/// Session `s` may be called as function `name`'s: it is one of `name`'s
/// and still open.
pub fn callable(s: &SessionInfo, name: &str) -> Result<(), NotCallable> {
    if s.function != name {
        return Err(NotCallable::OtherFunction {
            id: s.id.clone(),
            owner: s.function.clone(),
            asked: name.to_string(),
        });
    }
    if !s.open {
        return Err(NotCallable::Ended {
            id: s.id.clone(),
            function: s.function.clone(),
            reason: s
                .end_reason
                .map(|r| r.to_string())
                .unwrap_or_else(|| "closed".into()),
            why: s
                .end_message
                .as_deref()
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default(),
        });
    }
    Ok(())
}

/// Session `id` as `ember invoke NAME --session ID` checks it first.
pub async fn check(client: &Client, id: &str, name: &str) -> Result<()> {
    let a = ok(client.get(&format!("/v1/sessions/{id}")).await?)?;
    let s: SessionInfo = decode(&a, "a session")?;
    Ok(callable(&s, name)?)
}

/// Milliseconds as `850ms`, `42s`, `4m05s`, `2h03m`, `3d04h`; a negative
/// span (a past deadline, clocks apart) reads `0s`.
pub fn duration(ms: i64) -> String {
    if ms < 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Bytes as MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_api::SessionEnd;

    fn open_session() -> SessionInfo {
        serde_json::from_str(
            r#"{"id":"0123456789abcdef0123456789abcdef","function":"counter",
            "digest":"abcdef0123456789abcdef","sandbox":"py-7","open":true,
            "created_at":1000000,"last_used_at":1060000,"invocations":3,"busy":false,
            "memory_bytes":12582912,"idle_timeout_s":300,"max_lifetime_s":3600,
            "expires_at":1360000}"#,
        )
        .unwrap()
    }

    fn ended(s: SessionInfo, reason: SessionEnd, message: &str) -> SessionInfo {
        SessionInfo {
            open: false,
            sandbox: None,
            memory_bytes: None,
            expires_at: None,
            ended_at: Some(1_070_000),
            end_reason: Some(reason),
            end_message: Some(message.into()),
            ..s
        }
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(-5), "0s");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(42_000), "42s");
        assert_eq!(duration(245_000), "4m05s");
        assert_eq!(duration(300_000), "5m00s");
        assert_eq!(duration(7_380_000), "2h03m");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn a_list_row_says_idle_for_memory_and_expiry() {
        let s = open_session();
        assert_eq!(
            session_row(&s, 1_100_000),
            vec![
                "0123456789abcdef0123456789abcdef",
                "counter",
                "open",
                "3",
                "40s",
                "12.0 MiB",
                "4m20s"
            ]
        );
        let busy = SessionInfo {
            busy: true,
            memory_bytes: None,
            ..open_session()
        };
        let row = session_row(&busy, 1_100_000);
        assert_eq!(
            (&row[2][..], &row[4][..], &row[5][..]),
            ("busy", "running", "-")
        );
        let row = session_row(&ended(s, SessionEnd::Idle, ""), 1_100_000);
        assert_eq!(row[2], "ended (idle)");
        assert_eq!((&row[4][..], &row[5][..], &row[6][..]), ("-", "-", "-"));
    }

    #[test]
    fn the_list_query_carries_the_filters() {
        assert_eq!(list_path(None, false), "/v1/sessions");
        assert_eq!(list_path(Some("f"), false), "/v1/sessions?function=f");
        assert_eq!(list_path(None, true), "/v1/sessions?ended=true");
        assert_eq!(
            list_path(Some("f"), true),
            "/v1/sessions?function=f&ended=true"
        );
    }

    #[test]
    fn show_lists_an_ended_sessions_reason() {
        let s = ended(
            open_session(),
            SessionEnd::Failed,
            "call i9 ran out of memory",
        );
        let d = details(&s, 1_100_000);
        let get = |k: &str| d.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
        assert_eq!(get("state").as_deref(), Some("ended (failed)"));
        assert_eq!(get("ended").as_deref(), Some("30s ago"));
        assert_eq!(get("why").as_deref(), Some("call i9 ran out of memory"));
        assert_eq!(get("code").as_deref(), Some("sha256:abcdef012345"));
        assert_eq!(get("expires in"), None);
        assert_eq!(get("sandbox"), None);
        let d = details(&open_session(), 1_100_000);
        assert_eq!(
            d.iter().find(|(k, _)| *k == "expires in").unwrap().1,
            "4m20s"
        );
    }

    #[test]
    fn only_an_open_session_of_the_named_function_is_called() {
        let s = open_session();
        assert_eq!(callable(&s, "counter"), Ok(()));
        let e = callable(&s, "other").unwrap_err().to_string();
        assert!(
            e.starts_with("session 0123456789abcdef0123456789abcdef is a session of function counter, not of other"),
            "{e}"
        );
        let e = callable(&ended(s, SessionEnd::Idle, "unused for 300 s"), "counter")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "session 0123456789abcdef0123456789abcdef of counter has ended (idle): unused for 300 s: \
             open a new one with `ember session open counter`"
        );
    }

    #[test]
    fn opening_says_how_to_call_it() {
        let line = opened_line(&open_session());
        assert!(line.contains("in sandbox py-7"), "{line}");
        assert!(
            line.contains("ends after 5m00s unused, or 1h00m after opening"),
            "{line}"
        );
        assert!(
            line.contains("ember invoke counter --session 0123456789abcdef"),
            "{line}"
        );
    }
}
