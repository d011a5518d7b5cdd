//! Recording a flow of a zone pair already seen must not allocate: it runs once per flow
//! record on the flow path. A counting allocator, armed only on the test's own thread, checks
//! that.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use zonewall::metrics::{AgentMetrics, AgentMetricsOptions, FlowVerdict, Metrics};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the thread-local
// cells are `const`-initialised, so touching them never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|count| count.set(count.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|count| count.set(count.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(work: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    work();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn metrics_recording_a_known_zone_pair_does_not_allocate() {
    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(&mut metrics, AgentMetricsOptions::default());

    // The first flow of a pair creates its series: that allocates, and the counter sees it.
    let first = allocations_during(|| {
        agent.record_flows("dmz", "trusted", FlowVerdict::Allow, 1, 3);
    });
    assert!(first > 0, "the counting allocator counts nothing");

    let steady = allocations_during(|| {
        for round in 0..10_000u64 {
            let verdict = FlowVerdict::ALL[(round % 5) as usize];
            agent.record_flows("dmz", "trusted", verdict, 1, round);
        }
        agent.record_compile(Duration::from_millis(1));
        agent.record_apply(Duration::from_millis(1), 2);
    });
    assert_eq!(steady, 0, "allocations while recording known series");
}

#[test]
fn metrics_flows_past_the_zone_pair_limit_do_not_allocate() {
    let mut metrics = Metrics::new();
    let agent = AgentMetrics::register(
        &mut metrics,
        AgentMetricsOptions {
            max_zone_pairs: 1,
            ..AgentMetricsOptions::default()
        },
    );
    agent.record_flows("a", "b", FlowVerdict::Deny, 1, 1);
    // The first pair past the limit creates the `_other` series.
    assert!(allocations_during(|| agent.record_flows("c", "d", FlowVerdict::Deny, 1, 1)) > 0);
    let steady = allocations_during(|| {
        for zone in ["e", "f", "g", "h"] {
            agent.record_flows(zone, "b", FlowVerdict::Deny, 1, 1);
        }
    });
    assert_eq!(steady, 0, "allocations while counting pairs past the limit");
}
