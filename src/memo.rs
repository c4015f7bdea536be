//! Answers of one run, by key: the first to ask asks, whoever asks at the same moment waits
//! for that answer instead of asking again, and the run forgets them all when it starts and
//! whenever it changed something (`Host::forget_observations`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

#[derive(Debug)]
pub struct Memo<T>(Mutex<HashMap<String, Arc<OnceLock<T>>>>);

impl<T> Default for Memo<T> {
    fn default() -> Memo<T> {
        Memo(Mutex::default())
    }
}

impl<T: Clone> Memo<T> {
    pub fn forget(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Forgets the answers `failed` says are failures: a failure is no fact about the host
    /// (an engine that was busy when asked), and is asked again after any change.
    pub fn forget_failures(&self, failed: impl Fn(&T) -> bool) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, cell| !cell.get().is_some_and(&failed));
    }

    pub fn get(&self, key: &str, ask: impl FnOnce() -> T) -> T {
        let cell = self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(key.to_string()).or_default().clone();
        cell.get_or_init(ask).clone()
    }
}
