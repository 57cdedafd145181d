//! Per-deployment health shared by all requests: failure counts and cooldowns.
//!
//! Owns: when a deployment is cooled (at once for rate limits and auth errors, after
//! `allowed_fails` consecutive failures for transient ones), for how long (Retry-After, else
//! `cooldown_time`), and when it is healthy again. A success resets the count. Time is a
//! parameter; the book itself is plain data kept behind a lock by the engine.

use std::time::Duration;

use tokio::time::Instant;

use crate::catalog::{DeploymentId, GatewaySettings};
use crate::classify::{CoolDown, Failure};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Health {
    consecutive_fails: u32,
    cooled_until: Option<Instant>,
}

/// A deployment was just cooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooled {
    pub deployment: DeploymentId,
    pub until: Instant,
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CooldownBook {
    health: Vec<Health>,
}

impl CooldownBook {
    pub fn new(deployments: usize) -> CooldownBook {
        CooldownBook {
            health: vec![Health::default(); deployments],
        }
    }

    /// The instant `d` is healthy again, if it is cooling at `now`.
    pub fn cooling_until(&self, d: DeploymentId, now: Instant) -> Option<Instant> {
        self.health[d.0 as usize]
            .cooled_until
            .filter(|until| *until > now)
    }

    pub fn is_cooling(&self, d: DeploymentId, now: Instant) -> bool {
        self.cooling_until(d, now).is_some()
    }

    pub fn record_success(&mut self, d: DeploymentId) {
        self.health[d.0 as usize].consecutive_fails = 0;
    }

    /// Applies the decision table's cool-down column. Mocked failures must not be recorded
    /// (they say nothing about the deployment); the caller ensures that.
    pub fn record_failure(
        &mut self,
        d: DeploymentId,
        failure: &Failure,
        now: Instant,
        settings: &GatewaySettings,
    ) -> Option<Cooled> {
        let h = &mut self.health[d.0 as usize];
        let duration = match failure
            .class
            .actions(settings.fallback_on_bad_request)
            .cool_down
        {
            CoolDown::Never => return None,
            CoolDown::Immediately => failure.retry_after.unwrap_or(settings.cooldown_time),
            CoolDown::AfterAllowedFails => {
                h.consecutive_fails += 1;
                if h.consecutive_fails <= settings.allowed_fails {
                    return None;
                }
                settings.cooldown_time
            }
        };
        h.consecutive_fails = 0;
        if duration.is_zero() {
            return None;
        }
        let until = now + duration;
        // A later cooldown never shortens an earlier, longer one.
        let until = h.cooled_until.map_or(until, |u| u.max(until));
        h.cooled_until = Some(until);
        Some(Cooled {
            deployment: d,
            until,
            duration,
        })
    }

    /// Remaining cooldown of every deployment at `now` (zero when healthy), in id order:
    /// what the equivalence check compares after a run.
    pub fn remaining(&self, now: Instant) -> Vec<Duration> {
        self.health
            .iter()
            .map(|h| {
                h.cooled_until
                    .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::FailureClass;

    fn settings(allowed_fails: u32, cooldown: u64) -> GatewaySettings {
        GatewaySettings {
            allowed_fails,
            cooldown_time: Duration::from_secs(cooldown),
            ..GatewaySettings::default()
        }
    }

    #[test]
    fn rate_limit_cools_at_once_for_retry_after_then_expires() {
        let mut book = CooldownBook::new(1);
        let d = DeploymentId(0);
        let now = Instant::now();
        let mut f = Failure::new(FailureClass::RateLimited, "x");
        f.retry_after = Some(Duration::from_secs(2));
        let cooled = book.record_failure(d, &f, now, &settings(3, 60)).unwrap();
        assert_eq!(cooled.duration, Duration::from_secs(2));
        assert!(book.is_cooling(d, now + Duration::from_millis(1999)));
        assert!(
            !book.is_cooling(d, now + Duration::from_secs(2)),
            "cooldown expires exactly at its end"
        );
        // Without Retry-After, cooldown_time applies.
        f.retry_after = None;
        let cooled = book.record_failure(d, &f, now, &settings(3, 60)).unwrap();
        assert_eq!(cooled.duration, Duration::from_secs(60));
    }

    #[test]
    fn transient_failures_cool_after_allowed_fails() {
        let mut book = CooldownBook::new(1);
        let d = DeploymentId(0);
        let now = Instant::now();
        let s = settings(2, 10);
        let f = Failure::new(FailureClass::Transient, "x");
        assert!(book.record_failure(d, &f, now, &s).is_none());
        assert!(book.record_failure(d, &f, now, &s).is_none());
        assert!(
            book.record_failure(d, &f, now, &s).is_some(),
            "the third failure is over allowed_fails = 2"
        );
        // A success in between resets the count.
        let mut book = CooldownBook::new(1);
        book.record_failure(d, &f, now, &s);
        book.record_failure(d, &f, now, &s);
        book.record_success(d);
        assert!(book.record_failure(d, &f, now, &s).is_none());
    }

    #[test]
    fn client_side_classes_never_cool() {
        let mut book = CooldownBook::new(1);
        for class in [
            FailureClass::ContextWindow,
            FailureClass::ContentPolicy,
            FailureClass::BadRequest,
        ] {
            assert!(
                book.record_failure(
                    DeploymentId(0),
                    &Failure::new(class, "x"),
                    Instant::now(),
                    &settings(0, 10)
                )
                .is_none()
            );
        }
        let auth = Failure::new(FailureClass::Auth, "x");
        assert!(
            book.record_failure(DeploymentId(0), &auth, Instant::now(), &settings(0, 10))
                .is_some()
        );
    }

    #[test]
    fn zero_cooldown_time_disables_cooling() {
        let mut book = CooldownBook::new(1);
        let f = Failure::new(FailureClass::Auth, "x");
        assert!(
            book.record_failure(DeploymentId(0), &f, Instant::now(), &settings(0, 0))
                .is_none()
        );
    }
}
