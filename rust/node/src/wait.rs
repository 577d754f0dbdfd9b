//! What a pipeline thread does when it has nothing to do.
//!
//! Every stage runs the same loop: poll its input rings, and when they are all empty, call
//! [`Idle::wait`]; when it found work, call [`Idle::reset`]:
//!
//! ```
//! use bourse_node::ring::{ring_with_doorbell, Doorbell};
//! use bourse_node::wait::{Idle, WaitStrategy};
//!
//! let doorbell = Doorbell::new();
//! let (mut tx, mut rx) = ring_with_doorbell::<u64>(1024, &doorbell);
//! std::thread::scope(|s| {
//!     s.spawn(move || (0..1000).for_each(|i| while tx.push(i).is_err() {}));
//!     let mut idle = Idle::new(WaitStrategy::default(), &doorbell);
//!     let mut sum = 0;
//!     loop {
//!         if let Some(v) = rx.pop() {
//!             sum += v;
//!             idle.reset();
//!         } else if rx.is_abandoned() && rx.is_empty() {
//!             break;
//!         } else {
//!             idle.wait();
//!         }
//!     }
//!     assert_eq!(sum, 999 * 1000 / 2);
//! });
//! ```
//!
//! # Which strategy
//!
//! | strategy | wake-up latency | CPU when idle | use it when |
//! |---|---|---|---|
//! | [`WaitStrategy::BusySpin`] | ~100 ns (a cache-line transfer) | one full core, always | the thread has a dedicated, isolated core (pinned with [`crate::affinity`], `isolcpus`/`nohz_full`) and latency is the product |
//! | [`WaitStrategy::Yield`] | ~1 µs, more under load | a full core unless others want it | more runnable threads than cores, but still latency-sensitive; a poor fit for a laptop battery |
//! | [`WaitStrategy::SpinThenPark`] | spin window: as busy-spin; parked: a futex wake, ~5–50 µs | ~0 after the spin window | small machines (this 2-core box), CI, development, any stage that is idle most of the time. The default |
//!
//! Never busy-spin more threads than there are free cores: a spinning thread that shares a
//! core with the thread it waits for burns that thread's time slice, and latency goes *up*
//! by milliseconds (the scheduler's quantum).
//!
//! `SpinThenPark` spins for `spins` polls, then yields for a few more, then parks on the
//! [`Doorbell`] its producers ring, with `park_timeout_us` as a safety net. Parking is
//! two-phase so that no wake-up is lost: the first `wait` after the yield phase only *arms* the
//! doorbell and returns so that the caller polls once more; the next `wait` (nothing found)
//! parks. See [`crate::ring`] for the argument.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ring::Doorbell;

/// How many `yield_now` calls [`WaitStrategy::SpinThenPark`] makes between spinning and parking.
const YIELDS_BEFORE_PARK: u32 = 8;

/// How an idle pipeline thread waits for work. Configured per stage (`busy_spin`, `yield`,
/// or `{ spin_then_park = { spins = .., park_timeout_us = .. } }`), or parsed from a command
/// line flag with [`FromStr`] (`busy-spin`, `yield`, `spin-then-park[:SPINS:TIMEOUT_US]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WaitStrategy {
    /// Poll continuously with [`std::hint::spin_loop`]. For dedicated cores only.
    BusySpin,
    /// Poll, and [`std::thread::yield_now`] between empty polls.
    Yield,
    /// Spin `spins` times, yield a few times, then park on the doorbell for at most
    /// `park_timeout_us` microseconds at a time.
    SpinThenPark {
        /// Empty polls answered with a spin-loop hint before yielding.
        spins: u32,
        /// Upper bound of one park, in microseconds: a safety net, since producers unpark.
        park_timeout_us: u32,
    },
}

impl WaitStrategy {
    /// `SpinThenPark` with the default spin count and park timeout.
    pub const SPIN_THEN_PARK: Self = Self::SpinThenPark { spins: 200, park_timeout_us: 1_000 };
}

impl Default for WaitStrategy {
    /// `SpinThenPark { spins: 200, park_timeout_us: 1000 }`: safe on any machine; on a small,
    /// shared one a long spin only steals the core from the thread that has the work.
    fn default() -> Self {
        Self::SPIN_THEN_PARK
    }
}

/// A wait strategy name that [`WaitStrategy::from_str`] does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown wait strategy {0:?}: expected busy-spin, yield, spin-then-park \
     or spin-then-park:SPINS:PARK_TIMEOUT_US"
)]
pub struct ParseWaitStrategyError(String);

impl FromStr for WaitStrategy {
    type Err = ParseWaitStrategyError;

    /// Parses `busy-spin`, `yield`, `spin-then-park` (defaults) or
    /// `spin-then-park:SPINS:PARK_TIMEOUT_US`; `_` is accepted for `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseWaitStrategyError(s.to_owned());
        let normalized = s.trim().to_ascii_lowercase().replace('_', "-");
        let mut parts = normalized.split(':');
        let strategy = match parts.next().unwrap_or_default() {
            "busy-spin" => Self::BusySpin,
            "yield" => Self::Yield,
            "spin-then-park" => match (parts.next(), parts.next()) {
                (None, _) => Self::SPIN_THEN_PARK,
                (Some(spins), Some(timeout)) => Self::SpinThenPark {
                    spins: spins.parse().map_err(|_| err())?,
                    park_timeout_us: timeout.parse().map_err(|_| err())?,
                },
                (Some(_), None) => return Err(err()),
            },
            _ => return Err(err()),
        };
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(strategy)
    }
}

impl fmt::Display for WaitStrategy {
    /// The [`FromStr`] form, so that the two round-trip.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BusySpin => f.write_str("busy-spin"),
            Self::Yield => f.write_str("yield"),
            Self::SpinThenPark { spins, park_timeout_us } => {
                write!(f, "spin-then-park:{spins}:{park_timeout_us}")
            }
        }
    }
}

/// The idle state of one polling loop: call [`Idle::wait`] after a poll that found nothing,
/// [`Idle::reset`] after one that found work. Cheap to reset (a store to a local, plus one
/// store to the doorbell if it was armed).
///
/// The doorbell must be the one the loop's producers ring (built with
/// [`crate::ring::ring_with_doorbell`], or rung with [`Doorbell::notify`]); with `BusySpin`
/// and `Yield` it is never used.
#[derive(Debug)]
pub struct Idle<'a> {
    strategy: WaitStrategy,
    doorbell: &'a Doorbell,
    /// Consecutive empty polls since the last reset.
    streak: u32,
    /// Whether we armed the doorbell and owe the caller one re-poll before parking.
    armed: bool,
}

impl<'a> Idle<'a> {
    /// Starts a fresh idle state.
    pub fn new(strategy: WaitStrategy, doorbell: &'a Doorbell) -> Self {
        Self { strategy, doorbell, streak: 0, armed: false }
    }

    /// The strategy in use.
    pub fn strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// The last poll found work: start the next idle period from the beginning.
    #[inline]
    pub fn reset(&mut self) {
        self.streak = 0;
        if self.armed {
            self.armed = false;
            self.doorbell.disarm();
        }
    }

    /// The last poll found nothing: wait a little, according to the strategy. Returns
    /// quickly in every case (at most one park timeout); the caller polls again after it.
    #[inline]
    pub fn wait(&mut self) {
        match self.strategy {
            WaitStrategy::BusySpin => std::hint::spin_loop(),
            WaitStrategy::Yield => std::thread::yield_now(),
            WaitStrategy::SpinThenPark { spins, park_timeout_us } => {
                if self.streak < spins {
                    self.streak += 1;
                    std::hint::spin_loop();
                } else if self.streak < spins.saturating_add(YIELDS_BEFORE_PARK) {
                    self.streak += 1;
                    std::thread::yield_now();
                } else if !self.armed {
                    // Phase one: announce, and let the caller poll once more. A producer that
                    // publishes after this poll's loads sees the flag and unparks us.
                    self.doorbell.arm();
                    self.armed = true;
                } else {
                    // Phase two: the re-poll after arming found nothing; park. Comes back
                    // disarmed, so the next empty poll arms again before parking again.
                    self.doorbell.park_timeout(Duration::from_micros(u64::from(park_timeout_us)));
                    self.armed = false;
                }
            }
        }
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        // Leave no announcement behind: producers would keep trying to unpark us.
        self.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_round_trips_display() {
        assert_eq!("busy-spin".parse(), Ok(WaitStrategy::BusySpin));
        assert_eq!("busy_spin".parse(), Ok(WaitStrategy::BusySpin));
        assert_eq!("Yield".parse(), Ok(WaitStrategy::Yield));
        assert_eq!("spin-then-park".parse(), Ok(WaitStrategy::default()));
        let custom = WaitStrategy::SpinThenPark { spins: 10, park_timeout_us: 250 };
        assert_eq!("spin-then-park:10:250".parse(), Ok(custom));
        for s in [WaitStrategy::BusySpin, WaitStrategy::Yield, custom] {
            assert_eq!(s.to_string().parse(), Ok(s));
        }
        for bad in ["", "spin", "spin-then-park:10", "spin-then-park:a:b", "yield:1"] {
            assert!(bad.parse::<WaitStrategy>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deserializes_snake_case() {
        let parse = |s: &str| serde_json::from_str::<WaitStrategy>(s).unwrap();
        assert_eq!(parse(r#""busy_spin""#), WaitStrategy::BusySpin);
        assert_eq!(parse(r#""yield""#), WaitStrategy::Yield);
        assert_eq!(
            parse(r#"{"spin_then_park": {"spins": 5, "park_timeout_us": 100}}"#),
            WaitStrategy::SpinThenPark { spins: 5, park_timeout_us: 100 }
        );
        assert!(serde_json::from_str::<WaitStrategy>(r#""busy-spin""#).is_err());
    }

    #[test]
    fn spin_then_park_arms_before_it_parks() {
        let doorbell = Doorbell::new();
        let mut idle =
            Idle::new(WaitStrategy::SpinThenPark { spins: 2, park_timeout_us: 1 }, &doorbell);
        for _ in 0..2 + YIELDS_BEFORE_PARK {
            idle.wait();
            assert!(!doorbell.is_armed());
        }
        idle.wait();
        assert!(doorbell.is_armed(), "first wait after yielding only arms");
        idle.wait();
        assert!(!doorbell.is_armed(), "park comes back disarmed");
        idle.wait();
        assert!(doorbell.is_armed());
        idle.reset();
        assert!(!doorbell.is_armed(), "reset disarms");
    }
}
