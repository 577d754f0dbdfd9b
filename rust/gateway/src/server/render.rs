//! From the node's event stream to wire messages: each account's execution reports, and
//! each market's book changes. Pure functions of one command's events (plus, for market
//! data, the book changes it carries), so the live router and a replay from the durable log
//! produce byte-for-byte the same messages.
//!
//! # Account streams
//!
//! [`account_messages`] renders every order-entry message one command produced, for every
//! account it touched, in event order. The `index` of a message (the low 16 bits of its
//! stream position) counts that account's messages within the command, so positions are
//! the same whoever renders them. Mapping:
//!
//! | engine event | message | to |
//! |---|---|---|
//! | `Rejected` (of an order command) | `OrderRejected` | the command's account |
//! | `Accepted` | `OrderAccepted` | the owner |
//! | `Trade` | `OrderExecuted` (taker), then `OrderExecuted` (maker) | both owners |
//! | `Amended` | `OrderAmended` | the owner |
//! | `OrderDone` (not filled) | `OrderCancelled` | the owner |
//! | `MassCancelled` | `MassCancelReport` | the owner |
//!
//! A delisting (a `SetMarketStatus` command) cancels every resting order of the market: an
//! `OrderCancelled` (`Delisted`) per order, to its owner, with `client_ref` 0.
//!
//! A filled order has no message of its own: its last `OrderExecuted` has
//! `leaves_quantity` 0. A market buy by quote amount has no base quantity, so its fills
//! carry `leaves_quantity` 0 and its end is always an `OrderCancelled` (`BudgetExhausted`
//! when it spent its amount, which the engine calls filled).
//!
//! `client_ref` is the command's journaled reference on the messages to the command's own
//! account (the request's responses), 0 on everything else (maker fills, other accounts),
//! and 0 for commands of an unnamed source (source 0: not an API key). A `CancelAll`
//! journaled by a key with reference 0 is the gateway's cancel-on-disconnect.
//!
//! # Complexity
//!
//! O(events) per command; the per-command account counters are a short linear list (a
//! command touches few accounts; a sweep touches one per maker).

use bourse_engine::{AccountId, Command, CommandKind, Event, OrderType, Side};
use bourse_node::CommandEvents;

use crate::protocol::{
    cancel_reason, stream_seq, CancelSource, Liquidity, MassCancelReport, Message, OrderAccepted,
    OrderAmended, OrderCancelled, OrderExecuted, OrderRejected, RejectCode, SideFilter,
};

/// The order-entry template a command kind answers, for `OrderRejected.request_template`;
/// `None` for commands that are not order requests.
pub fn request_template(kind: CommandKind) -> Option<u16> {
    Some(match kind {
        CommandKind::PlaceOrder => crate::protocol::NewOrder::TEMPLATE_ID,
        CommandKind::CancelOrder => crate::protocol::CancelOrder::TEMPLATE_ID,
        CommandKind::AmendOrder => crate::protocol::AmendOrder::TEMPLATE_ID,
        CommandKind::CancelAll => crate::protocol::MassCancel::TEMPLATE_ID,
        _ => return None,
    })
}

/// The account an order command acts for, if it is one.
pub fn command_account(command: &Command) -> Option<AccountId> {
    match *command {
        Command::PlaceOrder(o) => Some(o.account),
        Command::CancelOrder { account, .. }
        | Command::CancelAll { account, .. }
        | Command::AmendOrder { account, .. } => Some(account),
        _ => None,
    }
}

/// Per-command message counters, one per account touched.
#[derive(Default)]
struct Indexes(Vec<(AccountId, u32)>);

impl Indexes {
    /// The next index for `account`, or `None` once 65,536 are used (the stream position
    /// has 16 bits for it).
    fn next(&mut self, account: AccountId) -> Option<u16> {
        let slot = match self.0.iter_mut().find(|(a, _)| *a == account) {
            Some((_, n)) => n,
            None => {
                self.0.push((account, 0));
                &mut self.0.last_mut().expect("just pushed").1
            }
        };
        let i = *slot;
        *slot += 1;
        u16::try_from(i).ok()
    }
}

/// Render every order-entry message of one command, in order, calling `f(account, message)`
/// for each. `wants(account)` says whether anyone listens to that account; messages for
/// other accounts are counted (so indexes stay the same) but not built.
pub fn account_messages(
    ce: &CommandEvents,
    mut wants: impl FnMut(AccountId) -> bool,
    mut f: impl FnMut(AccountId, Message),
) {
    let kind = ce.command.kind();
    let template = request_template(kind);
    // Only order commands, and delistings (a market status change cancels the book), touch
    // orders.
    if template.is_none() && kind != CommandKind::SetMarketStatus {
        return;
    }
    // No account is the requester of a status change (account 0, the fee account, has no
    // orders), so its messages carry client_ref 0.
    let requester = command_account(&ce.command).unwrap_or(AccountId(0));
    // A reference is a client_ref only for a named source (an API key); an unnamed
    // producer's references are its own business and never reach the wire.
    let keyed = ce.origin.source != 0;
    let reference = if keyed { ce.origin.reference } else { 0 };
    let client_ref = |account: AccountId| if account == requester { reference } else { 0 };
    let cancel_source = match kind {
        CommandKind::CancelAll if keyed && ce.origin.reference == 0 => {
            CancelSource::CancelOnDisconnect
        }
        CommandKind::CancelAll => CancelSource::MassCancel,
        _ => CancelSource::Request,
    };
    let ts = ce.timestamp_ns;
    let mut indexes = Indexes::default();
    // Orders accepted in this command that are market buys by quote amount.
    let mut quote_buys: Vec<u64> = Vec::new();
    let mut emit = |account: AccountId, build: &dyn Fn(u64) -> Message| {
        let Some(index) = indexes.next(account) else { return };
        if wants(account) {
            f(account, build(stream_seq(ce.seq, index)));
        }
    };
    for ev in &ce.events {
        match *ev {
            Event::Rejected { account, order_id, client_order_id, reason, .. } => {
                let Some(template) = template else { continue };
                let account = if account.0 != 0 { account } else { requester };
                emit(account, &|seq| {
                    Message::OrderRejected(OrderRejected {
                        seq,
                        timestamp_ns: ts,
                        client_ref: client_ref(account),
                        request_template: template,
                        order_id,
                        client_order_id,
                        reason: RejectCode::from(reason),
                    })
                });
            }
            Event::Accepted {
                order_id,
                account,
                market,
                client_order_id,
                side,
                order_type,
                time_in_force,
                price,
                quantity,
                quote_quantity,
                post_only,
                stp,
                reserve_price,
            } => {
                if order_type == OrderType::Market && side == Side::Buy && quantity == 0 {
                    quote_buys.push(order_id);
                }
                emit(account, &|seq| {
                    Message::OrderAccepted(OrderAccepted {
                        seq,
                        timestamp_ns: ts,
                        client_ref: client_ref(account),
                        order_id,
                        market,
                        client_order_id,
                        side,
                        order_type,
                        time_in_force,
                        post_only,
                        stp,
                        price,
                        quantity,
                        quote_quantity,
                        reserve_price,
                    })
                });
            }
            Event::Trade {
                market,
                trade_id,
                price,
                quantity,
                quote_quantity,
                aggressor,
                maker_order_id,
                taker_order_id,
                maker_account,
                taker_account,
                maker_fee,
                taker_fee,
                maker_client_order_id,
                taker_client_order_id,
                maker_leaves_quantity,
                taker_leaves_quantity,
            } => {
                let exec = |seq, order_id, client_order_id, side, fee, liquidity, leaves| {
                    Message::OrderExecuted(OrderExecuted {
                        seq,
                        timestamp_ns: ts,
                        order_id,
                        client_order_id,
                        market,
                        trade_id,
                        side,
                        price,
                        quantity,
                        quote_quantity,
                        fee,
                        liquidity,
                        leaves_quantity: leaves,
                    })
                };
                let maker_side = match aggressor {
                    Side::Buy => Side::Sell,
                    Side::Sell => Side::Buy,
                };
                emit(taker_account, &|seq| {
                    exec(
                        seq,
                        taker_order_id,
                        taker_client_order_id,
                        aggressor,
                        taker_fee,
                        Liquidity::Taker,
                        taker_leaves_quantity,
                    )
                });
                emit(maker_account, &|seq| {
                    exec(
                        seq,
                        maker_order_id,
                        maker_client_order_id,
                        maker_side,
                        maker_fee,
                        Liquidity::Maker,
                        maker_leaves_quantity,
                    )
                });
            }
            Event::Amended {
                order_id,
                account,
                market,
                client_order_id,
                price,
                leaves_quantity,
                kept_priority,
            } => {
                emit(account, &|seq| {
                    Message::OrderAmended(OrderAmended {
                        seq,
                        timestamp_ns: ts,
                        client_ref: client_ref(account),
                        order_id,
                        client_order_id,
                        market,
                        price,
                        leaves_quantity,
                        kept_priority,
                    })
                });
            }
            Event::OrderDone {
                order_id,
                account,
                market,
                client_order_id,
                reason,
                filled_quantity,
                cancelled_quantity,
            } => {
                let wire_reason = match cancel_reason(reason, cancel_source) {
                    Some(r) => r,
                    None if quote_buys.contains(&order_id) => {
                        crate::protocol::CancelReason::BudgetExhausted
                    }
                    None => continue,
                };
                emit(account, &|seq| {
                    Message::OrderCancelled(OrderCancelled {
                        seq,
                        timestamp_ns: ts,
                        client_ref: client_ref(account),
                        order_id,
                        client_order_id,
                        market,
                        reason: wire_reason,
                        filled_quantity,
                        cancelled_quantity,
                    })
                });
            }
            Event::MassCancelled { account, market, side, count } => {
                emit(account, &|seq| {
                    Message::MassCancelReport(MassCancelReport {
                        seq,
                        timestamp_ns: ts,
                        client_ref: client_ref(account),
                        market,
                        side: side_filter(side),
                        count,
                    })
                });
            }
            _ => {}
        }
    }
}

/// The wire side filter of an engine side filter.
pub fn side_filter(side: Option<Side>) -> SideFilter {
    match side {
        None => SideFilter::Both,
        Some(Side::Buy) => SideFilter::Buy,
        Some(Side::Sell) => SideFilter::Sell,
    }
}
