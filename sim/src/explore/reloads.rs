//! Generated config reloads: a case's gateway config replaced while its traffic runs (as
//! `serve` does on SIGHUP or `POST /admin/reload`).
//!
//! Owns: the strategy for one case's [`Reload`] (1 case in 4 gets one) and applying it to a
//! generated scenario: the same config again, other retries, another cooldown time, the
//! deployments listed in the reverse order (so their catalog indices change, not their
//! ids), or keys that lose their fallbacks. Every change keeps the config valid. The draw
//! is made apart, after every other draw of a case, so that it changes no earlier draw of a
//! seed. Does not own when a reload is applied or which config a request runs with (the
//! world and the engine), nor how the judge compares runs across a reload (`oracle`).

use proptest::prelude::*;

use crate::scenario::{self, Scenario};

/// The latest instant a reload is drawn at: after a case's bursts (0–400 ms) and its second
/// request (2,000 ms), so that some reloads fall between two requests and some after all.
pub const LATEST_RELOAD_MS: u64 = 2_500;

/// Until when 3 reloads in 4 are drawn: the bursts' arrivals and their first attempts, where
/// a reload meets requests in flight (drawn over the whole range, 1 in 8 did).
const BUSY_UNTIL_MS: u64 = 450;

/// What a reload changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Nothing: the same config again must change no answer and no decision.
    Same,
    /// The gateway's `num_retries`.
    Retries(u32),
    /// The gateway's `cooldown_time`, seconds.
    CooldownTime(f64),
    /// The deployments in the reverse order: the same ids at other catalog indices.
    ReversedDeployments,
    /// Every key's own `fallbacks` removed (the team's and the gateway's still apply).
    KeysWithoutFallbacks,
}

impl Change {
    fn describe(self) -> String {
        match self {
            Change::Same => "the same config".into(),
            Change::Retries(n) => format!("num_retries {n}"),
            Change::CooldownTime(s) => format!("cooldown_time {s}"),
            Change::ReversedDeployments => "deployments reversed".into(),
            Change::KeysWithoutFallbacks => "keys without fallbacks".into(),
        }
    }
}

/// One case's reload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reload {
    /// Never 0: the gateway is not serving before the world's first step, and a reload of
    /// a gateway that does not serve yet is the harness's error, not the engine's.
    pub at_ms: u64,
    pub change: Change,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::Same),
        (0u32..=3).prop_map(Change::Retries),
        proptest::sample::select(vec![0.0, 0.05, 1.0, 30.0]).prop_map(Change::CooldownTime),
        Just(Change::ReversedDeployments),
        Just(Change::KeysWithoutFallbacks),
    ]
}

/// A reload for 1 case in 4.
pub fn reload() -> impl Strategy<Value = Option<Reload>> {
    proptest::option::weighted(
        0.25,
        (
            prop_oneof![3 => 1..=BUSY_UNTIL_MS, 1 => BUSY_UNTIL_MS + 1..=LATEST_RELOAD_MS],
            change(),
        )
            .prop_map(|(at_ms, change)| Reload { at_ms, change }),
    )
}

impl Reload {
    /// Adds the reload to `scenario`, built from its (final) gateway config.
    pub fn apply(&self, scenario: &mut Scenario) {
        assert!(self.at_ms > 0, "a reload at 0 ms precedes the gateway");
        let mut gateway = scenario.gateway.clone();
        match self.change {
            Change::Same => {}
            Change::Retries(n) => gateway.router_settings.num_retries = Some(n),
            Change::CooldownTime(s) => gateway.router_settings.cooldown_time = Some(s),
            Change::ReversedDeployments => gateway.model_list.reverse(),
            Change::KeysWithoutFallbacks => {
                for key in &mut gateway.keys {
                    key.router_settings.fallbacks = None;
                }
            }
        }
        scenario.reloads.push(scenario::Reload {
            at_ms: self.at_ms,
            gateway,
        });
    }

    /// For the case's description.
    pub fn describe(&self) -> String {
        format!(", reload at {} ms: {}", self.at_ms, self.change.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::{Concurrency, rng};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn about_one_case_in_four_reloads_and_never_at_zero() {
        let mut runner = TestRunner::new_with_rng(crate::explore::runner_config(), rng(7));
        let mut drawn = 0;
        for _ in 0..400 {
            if let Some(r) = reload().new_tree(&mut runner).unwrap().current() {
                assert!((1..=LATEST_RELOAD_MS).contains(&r.at_ms), "{r:?}");
                drawn += 1;
            }
        }
        assert!((60..=140).contains(&drawn), "{drawn} of 400 cases reload");
    }

    #[test]
    fn every_change_leaves_a_valid_config() {
        let base = crate::explore::case_with(3, Concurrency::Always);
        for change in [
            Change::Same,
            Change::Retries(2),
            Change::CooldownTime(0.05),
            Change::ReversedDeployments,
            Change::KeysWithoutFallbacks,
        ] {
            let mut s = base.clone();
            s.reloads.clear();
            Reload { at_ms: 10, change }.apply(&mut s);
            assert_eq!(s.reloads.len(), 1);
            if let Err((at, e)) = s.check() {
                panic!("{change:?} made an invalid scenario at {at:?}: {e}");
            }
        }
    }
}
