//! Figures the bench derives from measurements: ratios against the floor.
//! (The histograms themselves are [`pinlock::latency`].)

pub use pinlock::latency::{CurvePoint, Hist, Latency};

/// The order the sides (pinlock, floor, fenced floor) take turns in `round`:
/// each round starts with the next side, so the machine's drifting load
/// lands on all of them.
pub fn turns(round: usize, sides: usize) -> impl Iterator<Item = usize> {
    (0..sides).map(move |turn| (round + turn) % sides)
}

/// `pinlock / floor`, or `None` when the floor is zero.
pub fn ratio(pinlock: f64, floor: f64) -> Option<f64> {
    (floor > 0.0).then(|| pinlock / floor)
}
