//! What the daemon knows of each fork-mode function's zygote: whether its
//! sandboxes may be bound (a function zygote imports the handler once and
//! forks every worker from there), or why the function falls back to
//! fresh imports.
//!
//! Kept per deploy (`function@deploy` key, as bound sandboxes are): a
//! redeploy starts over. Kept in memory: a restarted emberd tries again.

pub use ember_api::ZygoteState;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct ZygoteBook {
    states: Mutex<HashMap<String, ZygoteState>>,
}

impl ZygoteBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ZygoteState>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a sandbox that served `key` should be bound to it.
    pub fn may_bind(&self, key: &str) -> bool {
        !matches!(self.lock().get(key), Some(ZygoteState::Fallback { .. }))
    }

    pub fn ready(&self, key: &str, init_us: u64) {
        self.lock()
            .insert(key.to_string(), ZygoteState::Ready { init_us });
    }

    /// The function's init cannot make a zygote: its sandboxes stay
    /// generic. Returns whether this is news (to log it once).
    pub fn fall_back(&self, key: &str, outcome: &str, reason: &str) -> bool {
        let state = ZygoteState::Fallback {
            outcome: outcome.to_string(),
            reason: reason.to_string(),
        };
        self.lock().insert(key.to_string(), state.clone()) != Some(state)
    }

    pub fn state(&self, key: &str) -> ZygoteState {
        self.lock()
            .get(key)
            .cloned()
            .unwrap_or(ZygoteState::Pending)
    }

    /// The sandboxes bound to `function` were released (it was paused):
    /// none holds its zygote now. Fallbacks are kept, so a resumed
    /// function does not try an init already known to fail.
    pub fn released(&self, function: &str) {
        let prefix = format!("{function}@");
        self.lock()
            .retain(|k, s| !k.starts_with(&prefix) || matches!(s, ZygoteState::Fallback { .. }));
    }

    /// Forget every deploy of `function` but `keep` (a redeploy or delete).
    pub fn forget(&self, function: &str, keep: Option<&str>) {
        let prefix = format!("{function}@");
        self.lock()
            .retain(|k, _| !k.starts_with(&prefix) || Some(k.as_str()) == keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_is_per_deploy_and_blocks_binding() {
        let book = ZygoteBook::default();
        assert!(book.may_bind("f@1-a"));
        assert_eq!(book.state("f@1-a"), ZygoteState::Pending);
        assert!(book.fall_back("f@1-a", "init_unsafe", "threads"));
        assert!(!book.fall_back("f@1-a", "init_unsafe", "threads"));
        assert!(!book.may_bind("f@1-a"));
        assert!(book.may_bind("f@2-b"));
        book.ready("g@1-c", 1500);
        assert_eq!(book.state("g@1-c"), ZygoteState::Ready { init_us: 1500 });
        book.ready("f@2-b", 900);
        book.released("f");
        assert!(!book.may_bind("f@1-a"), "a pause keeps the fallback");
        assert_eq!(book.state("f@2-b"), ZygoteState::Pending);
        book.forget("f", None);
        assert!(book.may_bind("f@1-a"));
        assert_eq!(book.state("g@1-c"), ZygoteState::Ready { init_us: 1500 });
    }

    #[test]
    fn states_serialize_with_a_state_tag() {
        let v = serde_json::to_value(ZygoteState::Fallback {
            outcome: "init_error".into(),
            reason: "boom".into(),
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"state": "fallback", "outcome": "init_error", "reason": "boom"})
        );
        assert_eq!(
            serde_json::to_value(ZygoteState::Off).unwrap(),
            serde_json::json!({"state": "off"})
        );
    }
}
