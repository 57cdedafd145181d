//! Retry backoff: exponential, capped, with full jitter drawn from the injected RNG.
//!
//! Owns only the delay formula. Retry-After and deadlines are combined in `route`.

use std::time::Duration;

use rand::Rng;

/// A delay drawn uniformly from `[0, min(max, base * 2^retry)]` ("full jitter"), so retries
/// from many requests spread out instead of arriving together.
pub fn full_jitter(
    retry: u32,
    base: Duration,
    max: Duration,
    rng: &mut (impl Rng + ?Sized),
) -> Duration {
    let ceiling = base.saturating_mul(1u32 << retry.min(20)).min(max);
    let micros = ceiling.as_micros() as u64;
    if micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rng.random_range(0..=micros))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn grows_then_caps_and_stays_in_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(700);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for retry in 0..40 {
            let ceiling = (base * 2u32.pow(retry.min(20))).min(max);
            for _ in 0..50 {
                assert!(full_jitter(retry, base, max, &mut rng) <= ceiling);
            }
        }
        let late: Vec<Duration> = (0..200)
            .map(|_| full_jitter(10, base, max, &mut rng))
            .collect();
        assert!(
            late.iter().any(|d| *d > Duration::from_millis(400)),
            "the cap, not the base, bounds late retries"
        );
    }

    #[test]
    fn same_seed_same_delays() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..10)
                .map(|i| {
                    full_jitter(
                        i,
                        Duration::from_millis(50),
                        Duration::from_secs(1),
                        &mut rng,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn zero_base_means_no_wait() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            full_jitter(3, Duration::ZERO, Duration::from_secs(1), &mut rng),
            Duration::ZERO
        );
    }
}
