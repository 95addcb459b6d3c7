//! A circuit breaker: after `threshold` failures in a row, stop asking Redis for `cool_down`, so that a node
//! whose Redis is down or slow works local-only at local speed. Then one call at a time may probe; its success
//! closes the breaker again, its failure opens it for another `cool_down`. Time is passed in, so that tests can
//! drive it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down is over.
    Open,
    /// One probe is out; other calls are refused until it reports.
    Probing,
}

impl State {
    /// As `info/1` names it.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::Probing => "probing",
        }
    }
}

pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    failures: u32,
    opened_at: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: 0,
                opened_at: None,
            }),
        }
    }

    /// Whether a call may go to Redis at `now`. An open breaker whose cool-down is over lets this one call through
    /// as its probe.
    pub fn allow(&self, now: Instant) -> bool {
        let mut inner = crate::locked(&self.inner);
        match inner.state {
            State::Closed => true,
            State::Probing => false,
            State::Open => {
                let over = inner
                    .opened_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.cool_down);
                if over {
                    inner.state = State::Probing;
                }
                over
            }
        }
    }

    /// A call that was allowed succeeded.
    pub fn success(&self) {
        let mut inner = crate::locked(&self.inner);
        inner.state = State::Closed;
        inner.failures = 0;
        inner.opened_at = None;
    }

    /// A call that was allowed failed at `now`.
    pub fn failure(&self, now: Instant) {
        let mut inner = crate::locked(&self.inner);
        inner.failures = inner.failures.saturating_add(1);
        if inner.state == State::Probing || inner.failures >= self.threshold {
            inner.state = State::Open;
            inner.opened_at = Some(now);
        }
    }

    pub fn state(&self) -> State {
        crate::locked(&self.inner).state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_the_threshold_and_probes_once_after_the_cool_down() {
        let breaker = Breaker::new(3, Duration::from_millis(100));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(breaker.allow(t0));
            breaker.failure(t0);
        }
        assert_eq!(breaker.state(), State::Closed);
        assert!(breaker.allow(t0));
        breaker.failure(t0);
        assert_eq!(breaker.state(), State::Open);
        assert!(!breaker.allow(t0 + Duration::from_millis(99)));
        // The cool-down is over: one probe, and no other call while it is out.
        assert!(breaker.allow(t0 + Duration::from_millis(100)));
        assert_eq!(breaker.state(), State::Probing);
        assert!(!breaker.allow(t0 + Duration::from_millis(100)));
        // A failed probe opens it again for a whole cool-down.
        breaker.failure(t0 + Duration::from_millis(110));
        assert_eq!(breaker.state(), State::Open);
        assert!(!breaker.allow(t0 + Duration::from_millis(150)));
        assert!(breaker.allow(t0 + Duration::from_millis(210)));
        // A successful one closes it, and failures count from zero.
        breaker.success();
        assert_eq!(breaker.state(), State::Closed);
        breaker.failure(t0 + Duration::from_millis(220));
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn a_success_resets_the_count_of_failures() {
        let breaker = Breaker::new(2, Duration::from_secs(1));
        let now = Instant::now();
        breaker.failure(now);
        breaker.success();
        breaker.failure(now);
        assert_eq!(breaker.state(), State::Closed);
    }
}
