//! Golden answers: the wire types serialize to exactly the strings and
//! JSON shapes emberd has always sent (docs/api.md). A change here is a
//! change of the API that clients see.

use ember_api::error::{ErrorBody, ErrorCode};
use ember_api::function::{FunctionInfo, FunctionLimits, FunctionRecord, ZygoteState};
use ember_api::health::HealthStatus;
use ember_api::invocation::{HandlerErrorInfo, LimitHit, Outcome, Report, StartKind, Timings};
use ember_api::kinds::{Backend, Language, Mode};
use ember_api::pool::{PoolStatus, SandboxState, SandboxStatus};
use serde::Serialize;
use serde_json::value::RawValue;

/// `value` serialized, compared with `expected` as text.
fn golden<T: Serialize>(value: &T, expected: &str) {
    assert_eq!(serde_json::to_string(value).unwrap(), expected);
}

#[test]
fn outcomes() {
    let names = [
        (Outcome::Ok, "ok"),
        (Outcome::HandlerError, "handler_error"),
        (Outcome::Timeout, "timeout"),
        (Outcome::Crashed, "crashed"),
        (Outcome::ResultTooLarge, "result_too_large"),
        (Outcome::Oom, "oom"),
        (Outcome::Pids, "pids"),
        (Outcome::Killed, "killed"),
        (Outcome::Interrupted, "interrupted"),
    ];
    assert_eq!(names.len(), Outcome::ALL.len());
    for (o, name) in names {
        golden(&o, &format!("\"{name}\""));
        assert_eq!(o.as_str(), name);
    }
}

#[test]
fn start_kinds_and_limits() {
    for (s, name) in [
        (StartKind::Warm, "warm"),
        (StartKind::Hot, "hot"),
        (StartKind::Cold, "cold"),
    ] {
        golden(&s, &format!("\"{name}\""));
        assert_eq!(s.as_str(), name);
    }
    for (l, name) in [
        (LimitHit::Oom, "oom"),
        (LimitHit::Pids, "pids"),
        (LimitHit::Timeout, "timeout"),
        (LimitHit::OutputTruncated, "output_truncated"),
        (LimitHit::ResultTooLarge, "result_too_large"),
    ] {
        golden(&l, &format!("\"{name}\""));
    }
}

#[test]
fn modes_languages_backends() {
    golden(&Mode::Fork, "\"fork\"");
    golden(&Mode::Specialized, "\"specialized\"");
    golden(&Language::Python, "\"python3\"");
    golden(&Language::Node, "\"node\"");
    for (b, name) in [
        (Backend::Runc, "runc"),
        (Backend::Crun, "crun"),
        (Backend::Runsc, "runsc"),
        (Backend::Libcontainer, "libcontainer"),
        (Backend::External, "external"),
    ] {
        golden(&b, &format!("\"{name}\""));
    }
}

#[test]
fn sandbox_and_health_states() {
    golden(&SandboxState::Idle, "\"idle\"");
    golden(&SandboxState::Busy, "\"busy\"");
    golden(&SandboxState::Returning, "\"returning\"");
    golden(&SandboxState::Session, "\"session\"");
    golden(&HealthStatus::Ok, "\"ok\"");
    golden(&HealthStatus::Draining, "\"draining\"");
    golden(&HealthStatus::Degraded, "\"degraded\"");
    golden(&ember_api::health::HistoryState::Degraded, "\"degraded\"");
}

#[test]
fn error_codes() {
    let names = [
        "invalid_request",
        "invalid_json",
        "invalid_event",
        "invalid_code",
        "invalid_requirements",
        "build_failed",
        "build_timeout",
        "build_oom",
        "build_pids",
        "build_disk_full",
        "host_path_forbidden",
        "git_unreachable",
        "git_ref_not_found",
        "git_subdir_not_found",
        "git_failed",
        "rebuild_required",
        "not_found",
        "function_not_found",
        "pool_not_found",
        "sandbox_not_found",
        "sandbox_exists",
        "version_mismatch",
        "not_running",
        "killed",
        "unauthorized",
        "method_not_allowed",
        "payload_too_large",
        "unsupported_media_type",
        "handler_error",
        "crashed",
        "result_too_large",
        "oom",
        "pids",
        "pool_exhausted",
        "function_paused",
        "session_not_found",
        "session_ended",
        "session_limit",
        "session_busy",
        "overloaded",
        "history_full",
        "backend_unavailable",
        "shutting_down",
        "interrupted",
        "timeout",
        "sandbox_failed",
        "internal",
    ];
    assert_eq!(ErrorCode::ALL.len(), names.len());
    for (code, name) in ErrorCode::ALL.iter().zip(names) {
        golden(code, &format!("\"{name}\""));
        let back: ErrorCode = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(back, *code);
    }
}

fn report(outcome: Outcome) -> Report {
    Report {
        id: "1a203ceaa5b00000".into(),
        function: "hello".into(),
        sandbox: "ember-1da3a9bb-bd4f-python-runc-000000".into(),
        backend: Backend::Runc,
        start: StartKind::Hot,
        mode: Mode::Fork,
        profile: "default".into(),
        outcome,
        limits_hit: vec![],
        result: None,
        error: None,
        stdout: "hi\n".into(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        exit_code: None,
        signal: None,
        timings_us: Timings {
            queue: 3,
            create: 0,
            thaw: 58,
            inject: 157,
            run: 1044,
            confine: 6,
            cleanup: 6,
            total: 1430,
        },
        session: None,
        memory_mb: 256,
        pids: 64,
    }
}

const TIMINGS: &str = r#"{"queue":3,"create":0,"thaw":58,"inject":157,"run":1044,"confine":6,"cleanup":6,"total":1430}"#;

#[test]
fn a_successful_report() {
    let mut r = report(Outcome::Ok);
    r.result = Some(RawValue::from_string(r#"{"hello":"Ada"}"#.into()).unwrap());
    r.limits_hit = vec![LimitHit::OutputTruncated];
    r.stdout_truncated = true;
    golden(
        &r,
        &format!(
            concat!(
                r#"{{"id":"1a203ceaa5b00000","function":"hello","sandbox":"ember-1da3a9bb-bd4f-python-runc-000000","#,
                r#""backend":"runc","start":"hot","mode":"fork","profile":"default","outcome":"ok","#,
                r#""limits_hit":["output_truncated"],"result":{{"hello":"Ada"}},"stdout":"hi\n","stderr":"","#,
                r#""stdout_truncated":true,"stderr_truncated":false,"timings_us":{}}}"#
            ),
            TIMINGS
        ),
    );
}

#[test]
fn a_crashed_report_has_exit_code_and_signal_and_no_limits_in_force() {
    let mut r = report(Outcome::Crashed);
    r.exit_code = Some(-1);
    r.signal = Some(9);
    r.stdout = String::new();
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.contains(r#""stderr_truncated":false,"exit_code":-1,"signal":9,"timings_us":"#),
        "{json}"
    );
    assert!(!json.contains("\"result\""), "{json}");
    assert!(!json.contains("\"error\""), "{json}");
    // The limits in force are for messages only, never on the wire.
    assert!(!json.contains("memory_mb"), "{json}");
    assert!(!json.contains("\"pids\""), "{json}");
}

#[test]
fn an_error_body_of_a_failed_invocation() {
    let mut r = report(Outcome::HandlerError);
    r.stdout = String::new();
    r.error = Some(HandlerErrorInfo {
        kind: "ValueError".into(),
        message: "bad input".into(),
        traceback: "Traceback (most recent call last):\nValueError: bad input\n".into(),
    });
    let body = ErrorBody::failed(
        ErrorCode::HandlerError,
        "ValueError: bad input",
        Box::new(r),
    );
    golden(
        &body,
        &format!(
            concat!(
                r#"{{"error":{{"code":"handler_error","message":"ValueError: bad input","type":"ValueError","#,
                r#""traceback":"Traceback (most recent call last):\nValueError: bad input\n","#,
                r#""invocation_id":"1a203ceaa5b00000"}},"#,
                r#""invocation":{{"id":"1a203ceaa5b00000","function":"hello","sandbox":"ember-1da3a9bb-bd4f-python-runc-000000","#,
                r#""backend":"runc","start":"hot","mode":"fork","profile":"default","outcome":"handler_error","#,
                r#""limits_hit":[],"error":{{"type":"ValueError","message":"bad input","#,
                r#""traceback":"Traceback (most recent call last):\nValueError: bad input\n"}},"#,
                r#""stdout":"","stderr":"","stdout_truncated":false,"stderr_truncated":false,"timings_us":{}}}}}"#
            ),
            TIMINGS
        ),
    );
}

#[test]
fn a_plain_error_body() {
    golden(
        &ErrorBody::new(ErrorCode::PoolNotFound, "no pool for runtime \"ruby\""),
        r#"{"error":{"code":"pool_not_found","message":"no pool for runtime \"ruby\""}}"#,
    );
}

#[test]
fn zygote_states_are_tagged_by_state() {
    golden(&ZygoteState::Pending, r#"{"state":"pending"}"#);
    golden(
        &ZygoteState::Ready { init_us: 152340 },
        r#"{"state":"ready","init_us":152340}"#,
    );
    golden(
        &ZygoteState::Fallback {
            outcome: "init_unsafe".into(),
            reason: "module init started 1 threads".into(),
        },
        r#"{"state":"fallback","outcome":"init_unsafe","reason":"module init started 1 threads"}"#,
    );
    golden(&ZygoteState::Off, r#"{"state":"off"}"#);
}

fn record(backend: Option<Backend>) -> FunctionRecord {
    FunctionRecord {
        name: "hello".into(),
        runtime: Language::Python,
        handler: "main.handler".into(),
        timeout_ms: 5000,
        profile: "default".into(),
        backend,
        mode: Mode::Fork,
        zygote: true,
        limits: FunctionLimits::default(),
        concurrency: Default::default(),
        sessions: Default::default(),
        source: None,
        digest: "e5f0dc".into(),
        created_at: 1795360205362,
        updated_at: 1795360205382,
        paused: false,
        paused_at: None,
    }
}

const LIMITS: &str = r#"{"memory_mb":256,"pids":64,"cpu_shares":1024,"max_output_bytes":1048576,"max_event_bytes":6291456}"#;

#[test]
fn a_function_record_omits_a_default_backend() {
    golden(
        &record(None),
        &format!(
            concat!(
                r#"{{"name":"hello","runtime":"python3","handler":"main.handler","timeout_ms":5000,"#,
                r#""profile":"default","mode":"fork","zygote":true,"limits":{},"#,
                r#""digest":"e5f0dc","created_at":1795360205362,"updated_at":1795360205382,"#,
                r#""paused":false}}"#
            ),
            LIMITS
        ),
    );
}

#[test]
fn a_function_record_shows_its_own_concurrency_limit() {
    let mut r = record(None);
    r.concurrency.max_concurrency = Some(2);
    r.concurrency.max_queue = Some(0);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        (v["max_concurrency"].as_u64(), v["max_queue"].as_u64()),
        (Some(2), Some(0))
    );
    // Rows from before admission control have neither.
    let mut old = v.clone();
    let map = old.as_object_mut().unwrap();
    map.remove("max_concurrency");
    map.remove("max_queue");
    let back: FunctionRecord = serde_json::from_value(old).unwrap();
    assert_eq!(back.concurrency, Default::default());
}

#[test]
fn a_paused_function_record_says_since_when() {
    let mut r = record(None);
    r.paused = true;
    r.paused_at = Some(1795360209000);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        (v["paused"].as_bool(), v["paused_at"].as_i64()),
        (Some(true), Some(1795360209000))
    );
    // Records from before pausing existed read as not paused.
    let mut old = v.clone();
    let map = old.as_object_mut().unwrap();
    map.remove("paused");
    map.remove("paused_at");
    let back: FunctionRecord = serde_json::from_value(old).unwrap();
    assert_eq!((back.paused, back.paused_at), (false, None));
}

#[test]
fn function_info_flattens_the_record() {
    let info = FunctionInfo {
        record: record(Some(Backend::Crun)),
        zygote_state: ZygoteState::Ready { init_us: 7 },
    };
    golden(
        &info,
        &format!(
            concat!(
                r#"{{"name":"hello","runtime":"python3","handler":"main.handler","timeout_ms":5000,"#,
                r#""profile":"default","backend":"crun","mode":"fork","zygote":true,"limits":{},"#,
                r#""digest":"e5f0dc","created_at":1795360205362,"updated_at":1795360205382,"#,
                r#""paused":false,"zygote_state":{{"state":"ready","init_us":7}}}}"#
            ),
            LIMITS
        ),
    );
}

#[test]
fn a_pool_status() {
    let p = PoolStatus {
        runtime: Language::Python,
        backend: Backend::Runc,
        target: 2,
        min_warm: 2,
        max_warm: 6,
        headroom: 1,
        max: 8,
        idle: 2,
        bound: 0,
        busy: 0,
        creating: 0,
        queued: 0,
        max_queue: 32,
        created_total: 2,
        destroyed_total: 0,
        create_failures_total: 0,
        warm_starts_total: 0,
        hot_starts_total: 2,
        cold_starts_total: 0,
        recycled_total: 0,
        adopted_total: 1,
        refused_total: 0,
    };
    golden(
        &p,
        concat!(
            r#"{"runtime":"python3","backend":"runc","target":2,"min_warm":2,"max_warm":6,"headroom":1,"max":8,"#,
            r#""idle":2,"bound":0,"busy":0,"creating":0,"queued":0,"max_queue":32,"created_total":2,"destroyed_total":0,"create_failures_total":0,"#,
            r#""warm_starts_total":0,"hot_starts_total":2,"cold_starts_total":0,"recycled_total":0,"adopted_total":1,"refused_total":0}"#
        ),
    );
}

#[test]
fn sandbox_statuses_omit_what_they_lack() {
    let mut s = SandboxStatus {
        id: "ember-1da3a9bb-bd4f-python-runc-000000".into(),
        runtime: Language::Python,
        backend: Backend::Runc,
        state: SandboxState::Idle,
        pid: 6505,
        age_ms: 1581,
        invocations: 1,
        bound_to: None,
        function: None,
        invocation: None,
        busy_ms: None,
    };
    golden(
        &s,
        concat!(
            r#"{"id":"ember-1da3a9bb-bd4f-python-runc-000000","runtime":"python3","backend":"runc","#,
            r#""state":"idle","pid":6505,"age_ms":1581,"invocations":1}"#
        ),
    );
    s.state = SandboxState::Busy;
    s.bound_to = Some("counter".into());
    s.function = Some("counter".into());
    s.invocation = Some("1a203ceaa5b00000".into());
    s.busy_ms = Some(12);
    golden(
        &s,
        concat!(
            r#"{"id":"ember-1da3a9bb-bd4f-python-runc-000000","runtime":"python3","backend":"runc","#,
            r#""state":"busy","pid":6505,"age_ms":1581,"invocations":1,"bound_to":"counter","#,
            r#""function":"counter","invocation":"1a203ceaa5b00000","busy_ms":12}"#
        ),
    );
}

#[test]
fn a_git_deploy_records_its_commit_as_source() {
    use ember_api::function::{CodeOrigin, GitCode, GitOrigin};
    let origin = CodeOrigin::Git(GitOrigin {
        repo: "/srv/repo".into(),
        reference: "v1".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        subdir: Some("fn".into()),
    });
    golden(
        &origin,
        r#"{"git":{"repo":"/srv/repo","ref":"v1","commit":"0123456789abcdef0123456789abcdef01234567","subdir":"fn"}}"#,
    );
    let mut r = record(None);
    r.source = Some(origin);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["source"]["git"]["ref"], "v1");
    assert!(serde_json::to_value(record(None))
        .unwrap()
        .get("source")
        .is_none());
    // The request side: `ref` by that name, unknown keys refused.
    let code: GitCode = serde_json::from_str(r#"{"repo":"/r","ref":"main","subdir":"a"}"#).unwrap();
    assert_eq!(code.reference.as_deref(), Some("main"));
    assert!(serde_json::from_str::<GitCode>(r#"{"repo":"/r","branch":"main"}"#).is_err());
}
