//! The page's time axis: simulated milliseconds to pixels, with idle stretches shortened.
//!
//! Owns: the mapping shared by every mode of a page. A run often has its events in bursts
//! with long quiet waits between them (a cooldown, a Retry-After, a timeout); drawn to one
//! linear scale, the bursts would shrink to a line. So a gap of more than [`IDLE_MS`] between
//! two consecutive instants where something happens is drawn [`IDLE_SHOWN_MS`] wide and
//! marked as a break on the axis (with its real length); everything else is linear. Both
//! modes use one scale, so the same instant is at the same x in both.

use std::collections::BTreeSet;

/// A gap longer than this, with nothing happening, is shortened.
pub const IDLE_MS: u64 = 100;
/// How wide (in simulated milliseconds of the linear parts) a shortened gap is drawn.
pub const IDLE_SHOWN_MS: f64 = 40.0;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Piece {
    from: u64,
    to: u64,
    /// Where it starts on the drawn axis, in drawn milliseconds.
    drawn_from: f64,
    idle: bool,
}

/// Simulated time to x.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pieces: Vec<Piece>,
    drawn_end: f64,
    end: u64,
    left: f64,
    width: f64,
}

impl Scale {
    /// A scale from 0 to `end` over `width` pixels starting at `left`, shortening the idle
    /// gaps between `instants`.
    pub fn new(instants: &BTreeSet<u64>, end: u64, left: f64, width: f64) -> Scale {
        let end = end.max(1);
        let mut points: Vec<u64> = instants.iter().copied().filter(|t| *t <= end).collect();
        points.push(0);
        points.push(end);
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut drawn = 0.0;
        for pair in points.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            let idle = to - from > IDLE_MS;
            pieces.push(Piece {
                from,
                to,
                drawn_from: drawn,
                idle,
            });
            drawn += if idle {
                IDLE_SHOWN_MS
            } else {
                (to - from) as f64
            };
        }
        Scale {
            pieces,
            drawn_end: drawn.max(1.0),
            end,
            left,
            width,
        }
    }

    /// The x of simulated instant `t` (clamped to the axis).
    pub fn x(&self, t: u64) -> f64 {
        let t = t.min(self.end);
        let i = self.pieces.partition_point(|p| p.to < t);
        let drawn = match self.pieces.get(i) {
            None => self.drawn_end,
            Some(p) => {
                let into = (t - p.from) as f64;
                let len = (p.to - p.from).max(1) as f64;
                p.drawn_from
                    + if p.idle {
                        into / len * IDLE_SHOWN_MS
                    } else {
                        into
                    }
            }
        };
        self.left + drawn * self.width / self.drawn_end
    }

    /// The shortened gaps, as (from, to) in simulated milliseconds.
    pub fn idle_gaps(&self) -> Vec<(u64, u64)> {
        self.pieces
            .iter()
            .filter(|p| p.idle)
            .map(|p| (p.from, p.to))
            .collect()
    }

    /// Whether `t` falls strictly inside a shortened gap.
    pub fn in_idle_gap(&self, t: u64) -> bool {
        self.pieces.iter().any(|p| p.idle && t > p.from && t < p.to)
    }

    /// Milliseconds drawn in all (the linear parts plus the shortened gaps).
    pub fn drawn_ms(&self) -> f64 {
        self.drawn_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_runs_are_linear() {
        let s = Scale::new(&[0, 20, 40, 60].into_iter().collect(), 100, 0.0, 100.0);
        assert!(s.idle_gaps().is_empty());
        assert_eq!(s.x(50), 50.0);
        assert_eq!(s.x(100), 100.0);
    }

    #[test]
    fn a_long_wait_is_shortened_and_order_is_kept() {
        let s = Scale::new(
            &[0, 10, 20, 5020, 5030].into_iter().collect(),
            5030,
            0.0,
            100.0,
        );
        assert_eq!(s.idle_gaps(), vec![(20, 5020)]);
        assert_eq!(s.drawn_ms(), 20.0 + IDLE_SHOWN_MS + 10.0);
        let xs: Vec<f64> = [0, 10, 20, 2000, 5020, 5030]
            .iter()
            .map(|t| s.x(*t))
            .collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
        assert!(s.in_idle_gap(3000) && !s.in_idle_gap(20) && !s.in_idle_gap(5020));
    }
}
