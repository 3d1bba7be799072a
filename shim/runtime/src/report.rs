//! Error reporting where the caller looks for it: stderr, and the `--log`
//! file in the `--log-format` the shim parses (runc writes JSON lines with
//! `level`, `msg`, `time`; containerd reports the last error line).

/// Write `message` to stderr and to the `--log` file, if any.
pub fn report_error(global: &liboci_cli::GlobalOpts, message: &str) {
    eprintln!("ember-runtime: {message}");
    let Some(log) = &global.log else { return };
    let line = if global.log_format.as_deref() == Some("json") {
        serde_json::json!({
            "level": "error",
            "msg": format!("ember-runtime: {message}"),
            "time": now_rfc3339(),
        })
        .to_string()
    } else {
        format!("level=error msg={:?}", format!("ember-runtime: {message}"))
    };
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_dated() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
