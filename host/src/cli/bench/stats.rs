//! Figures the bench derives from measurements: ratios against the floor.
//! (The histograms themselves are [`pinlock::latency`].)

pub use pinlock::latency::{CurvePoint, Hist, Latency};

/// `pinlock / floor`, or `None` when the floor is zero.
pub fn ratio(pinlock: f64, floor: f64) -> Option<f64> {
    (floor > 0.0).then(|| pinlock / floor)
}
