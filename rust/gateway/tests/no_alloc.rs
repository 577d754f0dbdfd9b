//! Steady-state framing, encoding and decoding allocate nothing: a counting allocator
//! watches a loop of encode → feed → next_frame → decode over every kind of message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bourse_engine::{MarketId, OrderRef, OrderType, Side, StpMode, TimeInForce};
use bourse_gateway::protocol::*;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_allocates_nothing() {
    let msgs: [Message; 4] = [
        NewOrder {
            client_ref: 1,
            market: MarketId(1),
            client_order_id: 5,
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            post_only: true,
            stp: StpMode::ExpireTaker,
            price: 100,
            quantity: 10,
            quote_quantity: 0,
            reserve_price: 0,
        }
        .into(),
        CancelOrder { client_ref: 2, order: OrderRef::Id(9) }.into(),
        Heartbeat { timestamp_ns: 3 }.into(),
        MdTrade {
            market: MarketId(1),
            book_seq: 4,
            timestamp_ns: 5,
            trade_id: 6,
            price: 7,
            quantity: 8,
            aggressor: Side::Sell,
        }
        .into(),
    ];
    let mut decoder = FrameDecoder::new(4096);
    let mut out = [0u8; 2 + MAX_FRAME_LEN];
    let mut decoded = 0usize;

    let before = ALLOCS.load(Ordering::Relaxed);
    for round in 0..10_000usize {
        let m = &msgs[round % msgs.len()];
        let n = m.encode(&mut out).unwrap();
        // Split each frame in two feeds to exercise partial frames and compaction.
        let cut = 1 + round % (n - 1);
        decoder.feed(&out[..cut]);
        assert!(decoder.next_frame().unwrap().is_none() || cut == n);
        decoder.feed(&out[cut..n]);
        while let Some(frame) = decoder.next_frame().unwrap() {
            let got = Message::decode(frame).unwrap();
            assert_eq!(got.template_id(), m.template_id());
            decoded += 1;
        }
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(decoded, 10_000);
    assert_eq!(after - before, 0, "allocations in the steady-state loop");
}
