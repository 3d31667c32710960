//! How the writer fills a group before it commits it.
//!
//! Callers each wait for their commit before they send again. Committing whatever is queued at
//! once makes them take turns in two cohorts: while one group commits, the callers of the group
//! before are still being answered, so each group holds about half of them and there are twice
//! the commits. A busy writer therefore waits, for at most a configured time, for the callers
//! it has just answered to come back; a writer that had nothing to do commits at once, so a
//! till alone never waits. While it waits it is woken for every few callers back, to apply
//! them as the rest arrive ([`WAKE_EVERY`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Most groups committed without waiting after waits that missed.
const MAX_SKIP: u32 = 64;

/// A waiting writer is woken for every this many callers that come back, and applies them
/// while the others are still on their way. Woken only once all were back, it applied the
/// whole group after the wait: the callers' return and the group's work in turn instead of
/// side by side (P2's group run: 42,000-45,000 creates/s against 48,000-50,000 with 8).
const WAKE_EVERY: usize = 8;

/// What the writer thread and the senders share.
#[derive(Default)]
struct Shared {
    /// Jobs the writer waits to see queued; 0 while it does not wait.
    want: AtomicUsize,
    /// The writer thread, to wake it.
    writer: OnceLock<Thread>,
}

/// The senders' side: tells a waiting writer that enough has arrived.
#[derive(Clone, Default)]
pub struct GatherSignal(Arc<Shared>);

impl GatherSignal {
    /// After a job was queued, with `queued` jobs now in the queue: wakes the writer if it
    /// waits for that many.
    pub fn queued(&self, queued: usize) {
        // SeqCst, paired with the writer's store and re-check: a job sent before the writer
        // announced its wait is seen by the writer's drain; one sent after sees the wait.
        let want = self.0.want.load(Ordering::SeqCst);
        if want > 0
            && queued >= want
            && let Some(writer) = self.0.writer.get()
        {
            writer.unpark();
        }
    }
}

/// The writer's side: fills a group, waiting while that is worth it.
pub struct Gather {
    shared: Arc<Shared>,
    /// Longest wait for one group (zero: never wait).
    max_wait: Duration,
    /// Callers of the last group and those queued when it committed: those likely to send
    /// again soon.
    callers: usize,
    /// Waits in a row that ended without what they waited for.
    misses: u32,
    /// Groups still to commit without waiting: after each miss in a row, twice as many (up to
    /// [`MAX_SKIP`]), so callers slower to come back than the wait cost it rarely.
    skip: u32,
}

impl Gather {
    /// A gather that waits at most `max_wait` per group, and the senders' signal for it.
    pub fn new(max_wait: Duration) -> (Gather, GatherSignal) {
        let shared = Arc::new(Shared::default());
        let gather = Gather {
            shared: shared.clone(),
            max_wait,
            callers: 0,
            misses: 0,
            skip: 0,
        };
        (gather, GatherSignal(shared))
    }

    /// Records, when a group has committed and before its `n` callers are answered, that
    /// `queued` others are waiting already: the callers the next group may wait for.
    pub fn committed(&mut self, n: usize, queued: usize) {
        self.callers = n + queued;
    }

    /// Fills `jobs` up to `max`. `idle`: how long the writer waited for the group's first job
    /// (zero: it was queued already). `drain` moves the jobs queued now into `jobs` (up to
    /// `max`). Returns whether it waited.
    pub fn fill<J>(
        &mut self,
        jobs: &mut Vec<J>,
        max: usize,
        idle: Duration,
        mut drain: impl FnMut(&mut Vec<J>),
    ) -> bool {
        drain(jobs);
        let target = self.callers.min(max);
        let worth = idle < self.max_wait && !self.max_wait.is_zero() && target > jobs.len();
        if !worth {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        let writer = self.shared.writer.get_or_init(std::thread::current);
        debug_assert_eq!(
            writer.id(),
            std::thread::current().id(),
            "one writer thread"
        );
        let deadline = Instant::now() + self.max_wait;
        loop {
            let before = jobs.len();
            self.shared
                .want
                .store((target - before).min(WAKE_EVERY), Ordering::SeqCst);
            // Again after announcing the wait: a job sent before it is seen here.
            drain(jobs);
            if jobs.len() >= target {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Some came meanwhile: fewer are to come than announced, so announce again.
            if jobs.len() > before {
                continue;
            }
            std::thread::park_timeout(deadline - now);
        }
        self.shared.want.store(0, Ordering::SeqCst);
        if jobs.len() < target {
            self.misses = self.misses.saturating_add(1);
            self.skip = MAX_SKIP.min(1 << self.misses.min(MAX_SKIP.ilog2()));
        } else {
            self.misses = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_when_the_jobs_arrive_or_at_the_deadline() {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let (mut gather, signal) = Gather::new(Duration::from_secs(30));
        gather.committed(1, 3);
        let drain = |jobs: &mut Vec<u32>| jobs.extend(rx.try_iter());
        let mut jobs = Vec::new();
        tx.send(0).unwrap();
        let sender = std::thread::spawn(move || {
            for i in 1..=3 {
                std::thread::sleep(Duration::from_millis(5));
                tx.send(i).unwrap();
                signal.queued(i as usize);
            }
        });
        let started = Instant::now();
        assert!(gather.fill(&mut jobs, 512, Duration::ZERO, drain));
        // Woken by the arrivals: a missed wake-up would wait out the 30 s deadline.
        assert_eq!(jobs, vec![0, 1, 2, 3]);
        assert!(started.elapsed() < Duration::from_secs(20));
        sender.join().unwrap();

        // Nobody comes back: the wait ends at the deadline, and the next group does not wait.
        let (mut gather, _signal) = Gather::new(Duration::from_millis(20));
        let none = |_: &mut Vec<u32>| {};
        gather.committed(10, 0);
        let mut jobs = vec![0u32];
        let started = Instant::now();
        assert!(gather.fill(&mut jobs, 512, Duration::ZERO, none));
        assert!(started.elapsed() >= Duration::from_millis(20));
        // After one miss the next two groups do not wait, after a second miss in a row four.
        for skips in [2, 4] {
            for _ in 0..skips {
                assert!(
                    !gather.fill(&mut jobs, 512, Duration::ZERO, none),
                    "skipped"
                );
            }
            assert!(
                gather.fill(&mut jobs, 512, Duration::ZERO, none),
                "tries again"
            );
        }
    }

    #[test]
    fn a_waiting_writer_takes_the_callers_back_a_few_at_a_time() {
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        // The drain tells the sender what it took: the sender sends the second half only
        // after the writer has taken the first, which it does only if woken before all are
        // back; else the wait would end at its 30 s deadline with half the group.
        let (took_tx, took_rx) = std::sync::mpsc::channel::<usize>();
        let (mut gather, signal) = Gather::new(Duration::from_secs(30));
        let callers = 4 * WAKE_EVERY;
        gather.committed(callers, 0);
        let drain = |jobs: &mut Vec<usize>| {
            jobs.extend(rx.try_iter());
            let _ = took_tx.send(jobs.len());
        };
        let sender = std::thread::spawn(move || {
            let mut queued = 0;
            for i in 1..callers {
                tx.send(i).unwrap();
                queued += 1;
                signal.queued(queued);
                if i == callers / 2 {
                    // Until the writer has taken them all: the channel is empty again.
                    while took_rx.recv().unwrap() < i + 1 {}
                    queued = 0;
                }
            }
        });
        let started = Instant::now();
        let mut jobs = vec![0];
        assert!(gather.fill(&mut jobs, 512, Duration::ZERO, drain));
        assert_eq!(jobs, (0..callers).collect::<Vec<_>>());
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "woken, not timed out"
        );
        sender.join().unwrap();
    }

    #[test]
    fn only_a_writer_that_was_busy_lately_waits_and_only_for_callers_seen() {
        let (mut gather, _signal) = Gather::new(Duration::from_millis(1));
        let none = |_: &mut Vec<u32>| {};
        // Nobody answered yet: nothing to wait for.
        assert!(!gather.fill(&mut vec![0], 512, Duration::ZERO, none));
        gather.committed(1, 0);
        // A till alone: it is the caller that was answered; the writer waited long for it.
        assert!(!gather.fill(&mut vec![0], 512, Duration::from_secs(3), none));
        // The group is full already, or waiting is off.
        gather.committed(6, 2);
        assert!(!gather.fill(&mut vec![0; 4], 4, Duration::ZERO, none));
        let (mut off, _signal) = Gather::new(Duration::ZERO);
        off.committed(6, 2);
        assert!(!off.fill(&mut vec![0], 512, Duration::ZERO, none));
    }
}
