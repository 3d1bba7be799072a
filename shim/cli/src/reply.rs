//! emberd's replies, decoded into `ember_api`'s types: an error answer
//! into an error carrying the daemon's message and code, anything else
//! into what its endpoint answers (or a clear error saying it is not).

use anyhow::{bail, Result};
use ember_api::client::Answer;
use ember_api::{ErrorBody, Report};
use serde::de::DeserializeOwned;

/// A reply of emberd's that does not decode as what its endpoint answers.
#[derive(Debug, thiserror::Error)]
#[error("emberd's reply does not decode as {what}: {source}")]
pub struct BadReply {
    what: &'static str,
    source: serde_json::Error,
}

/// The reply's body as `T` (`what` names it in the error).
pub fn decode<T: DeserializeOwned>(a: &Answer, what: &'static str) -> Result<T, BadReply> {
    serde_json::from_slice(&a.body).map_err(|source| BadReply { what, source })
}

/// An error answer's body, when it is one of emberd's.
pub fn error_body(a: &Answer) -> Option<ErrorBody> {
    serde_json::from_slice(&a.body).ok()
}

/// Turn an error answer into an error carrying the daemon's message (the
/// raw body when it is not one of emberd's error bodies).
pub fn ok(a: Answer) -> Result<Answer> {
    if a.status.is_success() {
        return Ok(a);
    }
    let (message, code) = match error_body(&a) {
        Some(b) => (b.error.message, b.error.code.as_str()),
        None => (a.error_message(), "error"),
    };
    bail!("{message} ({code}, HTTP {})", a.status.as_u16())
}

/// An invocation's result as compact JSON (`null` when it has none).
pub fn result_json(report: &Report) -> Result<String> {
    Ok(match report.result.as_deref() {
        None => "null".to_string(),
        Some(raw) => serde_json::from_str::<serde_json::Value>(raw.get())?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.to_string().into(),
            retry_after: None,
        }
    }

    const REPORT: &str = r#"{"id":"i1","function":"f","sandbox":"s1","backend":"runc",
        "start":"warm","mode":"fork","profile":"default","outcome":"ok","limits_hit":[],
        "result":{"b": 1, "a": [1, 2]},"stdout":"","stderr":"","stdout_truncated":false,
        "stderr_truncated":false,"timings_us":{"queue":1,"create":0,"thaw":2,"inject":3,
        "run":4,"confine":5,"cleanup":6,"total":21}}"#;

    #[test]
    fn a_report_decodes_and_its_result_prints_as_before() {
        let a = answer(200, REPORT);
        let report: Report = decode(&a, "an invocation report").unwrap();
        let before = serde_json::to_string(&a.json()["result"]).unwrap();
        assert_eq!(result_json(&report).unwrap(), before);
        let none: Report =
            serde_json::from_str(&REPORT.replace(r#""result":{"b": 1, "a": [1, 2]},"#, ""))
                .unwrap();
        assert_eq!(result_json(&none).unwrap(), "null");
    }

    #[test]
    fn a_reply_that_does_not_decode_says_so() {
        let e = decode::<Report>(&answer(200, r#"{"id":"x"}"#), "an invocation report")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("emberd's reply does not decode as an invocation report: missing field"),
            "{e}"
        );
    }

    #[test]
    fn error_answers_carry_the_daemons_message_and_code() {
        let body =
            r#"{"error":{"code":"function_not_found","message":"function x is not deployed"}}"#;
        let e = ok(answer(404, body)).unwrap_err().to_string();
        assert_eq!(
            e,
            "function x is not deployed (function_not_found, HTTP 404)"
        );
        let e = ok(answer(502, "bad gateway")).unwrap_err().to_string();
        assert_eq!(e, "bad gateway (error, HTTP 502)");
    }
}
