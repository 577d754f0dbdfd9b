//! Spot risk: how much an order must hold, and what a fill costs.
//!
//! This is the seam where margin for perpetual futures will plug in: every amount the
//! engine holds or charges is computed here, with checked integer arithmetic.
//!
//! * The quote value of `lots` at `ticks` is `lots * ticks * tick_value` atoms, exactly.
//! * A fee is `value * bps / 10_000`, rounded down. Rounding down makes fees
//!   super-additive-safe: the fees of several fills never exceed the fee of their sum, so a
//!   hold computed for the whole quantity always covers every partial fill.
//! * A resting or incoming limit buy holds `value + fee(value, max(maker, taker))` at its
//!   hold price (the reserve price if one was given, else the limit price). After a fill of
//!   `q` lots at price `p <= hold price` the hold for the remaining leaves is recomputed;
//!   the difference always covers the fill's cost (value + fee at `p`), and the excess goes
//!   back to the free balance at once.
//! * A sell holds its base quantity.

use crate::types::BPS_DENOMINATOR;

/// Quote atoms per tick per lot for a market, or `None` if that is not a positive whole
/// number that fits in `u64`:
/// `tick_size * lot_size * 10^quote_decimals / 10^(price_decimals + base_decimals)`.
pub fn tick_value(
    tick_size: u64,
    lot_size: u64,
    base_decimals: u8,
    quote_decimals: u8,
    price_decimals: u8,
) -> Option<u64> {
    if tick_size == 0 || lot_size == 0 {
        return None;
    }
    let numerator = u128::from(tick_size)
        .checked_mul(u128::from(lot_size))?
        .checked_mul(10u128.checked_pow(u32::from(quote_decimals))?)?;
    let denominator = 10u128.checked_pow(u32::from(price_decimals) + u32::from(base_decimals))?;
    if numerator % denominator != 0 {
        return None;
    }
    let value = numerator / denominator;
    if value == 0 {
        return None;
    }
    u64::try_from(value).ok()
}

/// Quote value of `lots` at `ticks`, if it fits.
#[inline]
pub fn notional(lots: u64, ticks: u64, tick_value: u64) -> Option<u64> {
    let v = u128::from(lots) * u128::from(ticks) * u128::from(tick_value);
    u64::try_from(v).ok()
}

/// The fee on `value` at `bps`, rounded down.
#[inline]
pub fn fee(value: u64, bps: u32) -> u64 {
    // The 64-bit product is the common case, and dividing it by a constant compiles to a
    // multiply and a shift; only huge values need the 128-bit division.
    match value.checked_mul(u64::from(bps)) {
        Some(product) => product / BPS_DENOMINATOR,
        None => (u128::from(value) * u128::from(bps) / u128::from(BPS_DENOMINATOR)) as u64,
    }
}

/// `value` plus its fee, if it fits.
#[inline]
pub fn with_fee(value: u64, bps: u32) -> Option<u64> {
    value.checked_add(fee(value, bps))
}

/// What a buy of `lots` must hold at `ticks`: value plus the fee at `bps`.
#[inline]
pub fn buy_hold(lots: u64, ticks: u64, tick_value: u64, bps: u32) -> Option<u64> {
    with_fee(notional(lots, ticks, tick_value)?, bps)
}

/// The most lots costing `lot_cost` each (plus fee at `bps`) that `budget` pays for.
#[inline]
pub fn affordable_lots(budget: u64, lot_cost: u64, bps: u32) -> u64 {
    if lot_cost == 0 {
        return 0;
    }
    let per_lot = u128::from(lot_cost) * u128::from(BPS_DENOMINATOR + u64::from(bps));
    let mut lots = (u128::from(budget) * u128::from(BPS_DENOMINATOR) / per_lot) as u64;
    // Rounding the fee down can leave room for exactly one more lot.
    let cost = |q: u64| notional(q, lot_cost, 1).and_then(|v| with_fee(v, bps));
    // (`lots` can already be `u64::MAX`: a budget of `u64::MAX` at one atom per lot, no fee.)
    if lots.checked_add(1).and_then(cost).is_some_and(|c| c <= budget) {
        lots += 1;
    }
    lots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_value_is_exact_or_refused() {
        // BTC (8) / USDT (8), price in cents, step 0.00001 BTC: 0.01 * 0.00001 BTC = 1e-7 USDT.
        assert_eq!(tick_value(1, 1_000, 8, 8, 2), Some(10));
        // USDT with 6 decimals cannot express 1e-7 exactly.
        assert_eq!(tick_value(1, 1_000, 8, 6, 2), None);
        assert_eq!(tick_value(0, 1, 0, 0, 0), None);
        assert_eq!(tick_value(u64::MAX, u64::MAX, 0, 18, 0), None);
    }

    #[test]
    fn fees_round_down_and_holds_cover_partial_fills() {
        assert_eq!(fee(9_999, 1), 0);
        assert_eq!(fee(10_000, 1), 1);
        let bps = 7;
        let hold = buy_hold(1_000, 123, 17, bps).unwrap();
        let mut spent = 0;
        for _ in 0..1_000 {
            spent += with_fee(123 * 17, bps).unwrap();
        }
        assert!(spent <= hold);
    }

    #[test]
    fn affordable_lots_is_the_maximum() {
        for budget in [0u64, 1, 99, 100, 101, 10_050, 10_099, 1_000_000] {
            for bps in [0u32, 1, 10, 50, 10_000] {
                let q = affordable_lots(budget, 100, bps);
                let cost = |q: u64| with_fee(q * 100, bps).unwrap();
                assert!(cost(q) <= budget);
                assert!(cost(q + 1) > budget);
            }
        }
    }
}
