//! When to hedge: a fixed delay, or a quantile of recent attempt latencies kept in a small
//! ring. The ring holds the last [`WINDOW`] successful attempts of this client, so the delay
//! follows the cluster's current speed (a new model version, a busier hour) within a few
//! hundred calls, and costs one short lock per call.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::config::{HedgeConfig, HedgeDelay};

/// Latencies kept for the quantile.
pub(crate) const WINDOW: usize = 256;

/// The last [`WINDOW`] successful attempt latencies.
#[derive(Debug, Default)]
pub(crate) struct LatencyWindow {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    samples: Vec<Duration>,
    /// Where the next sample goes once the ring is full.
    next: usize,
}

impl LatencyWindow {
    pub(crate) fn record(&self, latency: Duration) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.samples.len() < WINDOW {
            ring.samples.push(latency);
        } else {
            let at = ring.next;
            ring.samples[at] = latency;
            ring.next = (at + 1) % WINDOW;
        }
    }

    /// The `quantile` (in (0, 1)) of the window, or `None` with fewer than `min_samples`
    /// (and always with none).
    pub(crate) fn quantile(&self, quantile: f64, min_samples: usize) -> Option<Duration> {
        let mut samples = {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            if ring.samples.is_empty() || ring.samples.len() < min_samples {
                return None;
            }
            ring.samples.clone()
        };
        // Nearest rank: the smallest sample with at least `quantile` of them at or below it.
        let rank = (quantile * samples.len() as f64).ceil() as usize;
        let index = rank.clamp(1, samples.len()) - 1;
        let (_, value, _) = samples.select_nth_unstable(index);
        Some(*value)
    }
}

/// How long after its start a call is hedged.
pub(crate) fn hedge_delay(config: &HedgeConfig, window: &LatencyWindow) -> Duration {
    match &config.delay {
        HedgeDelay::Fixed(delay) => *delay,
        HedgeDelay::Percentile {
            quantile,
            min_samples,
            fallback,
            floor,
        } => window
            .quantile(*quantile, *min_samples)
            .unwrap_or(*fallback)
            .max(*floor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let window = LatencyWindow::default();
        assert_eq!(window.quantile(0.95, 1), None);
        for n in (1..=100).rev() {
            window.record(ms(n));
        }
        assert_eq!(window.quantile(0.95, 1), Some(ms(95)));
        assert_eq!(window.quantile(0.5, 1), Some(ms(50)));
        assert_eq!(window.quantile(0.999, 1), Some(ms(100)));
        assert_eq!(window.quantile(0.001, 1), Some(ms(1)));
        assert_eq!(window.quantile(0.5, 101), None);
    }

    #[test]
    fn ring_keeps_only_the_latest_window() {
        let window = LatencyWindow::default();
        for _ in 0..WINDOW {
            window.record(ms(500));
        }
        for _ in 0..WINDOW {
            window.record(ms(2));
        }
        assert_eq!(window.quantile(0.99, 1), Some(ms(2)));
    }

    #[test]
    fn delay_uses_fallback_then_quantile_with_floor() {
        let config = HedgeConfig {
            delay: HedgeDelay::Percentile {
                quantile: 0.9,
                min_samples: 10,
                fallback: ms(40),
                floor: ms(3),
            },
        };
        let window = LatencyWindow::default();
        assert_eq!(hedge_delay(&config, &window), ms(40));
        for n in 1..=10 {
            window.record(ms(n * 10));
        }
        assert_eq!(hedge_delay(&config, &window), ms(90));

        let fast = LatencyWindow::default();
        for _ in 0..10 {
            fast.record(Duration::from_micros(200));
        }
        assert_eq!(hedge_delay(&config, &fast), ms(3));

        let fixed = HedgeConfig {
            delay: HedgeDelay::Fixed(ms(7)),
        };
        assert_eq!(hedge_delay(&fixed, &fast), ms(7));
    }
}
