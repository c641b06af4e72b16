//! Training batches made on a second thread while the step before them
//! runs. A step ends by reading its loss back from the GPU, and the GPU
//! then waited while the CPU cut, augmented and weighed the next patches:
//! about 65 ms a batch of two 64³ patches with the separation map, over a
//! fifth of an NDN step on the H200 (benches/RESULTS.md). The batches come
//! out in the order they were made, from the same random stream, so a run
//! is the same as with the batches made in line.

use std::sync::mpsc::{sync_channel, Receiver};
use std::time::{Duration, Instant};

/// What a [`prefetch`] did: items made, the producer's time making them, and
/// the time the consumer waited for one.
#[derive(Clone, Copy, Debug)]
pub struct PrefetchStats {
    pub made: usize,
    pub making: Duration,
    pub waited: Duration,
}

/// The consumer's side: the items in the order `make` returned them.
pub struct Prefetched<T> {
    rx: Receiver<T>,
    waited: Duration,
}

impl<T> Iterator for Prefetched<T> {
    type Item = T;

    /// The next item, waiting for it if it is not made yet; None after the
    /// last (or if the producer stopped early, e.g. by panicking: [`prefetch`]
    /// then resumes the panic).
    fn next(&mut self) -> Option<T> {
        let t0 = Instant::now();
        let item = self.rx.recv().ok();
        self.waited += t0.elapsed();
        item
    }
}

/// Calls `make` up to `count` times on a second thread, at most `depth`
/// (≥ 1) items ahead of `consume` (and one more being made), which reads
/// them in order. When `consume`
/// returns, the producer stops at its next item (what it had made ahead is
/// dropped); a panic in `make` is resumed here after `consume` returns.
pub fn prefetch<T: Send, R>(
    count: usize,
    depth: usize,
    mut make: impl FnMut() -> T + Send,
    consume: impl FnOnce(&mut Prefetched<T>) -> R,
) -> (R, PrefetchStats) {
    let (tx, rx) = sync_channel(depth.max(1));
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let (mut made, mut making) = (0, Duration::ZERO);
            for _ in 0..count {
                let t0 = Instant::now();
                let item = make();
                making += t0.elapsed();
                made += 1;
                if tx.send(item).is_err() {
                    break; // the consumer is done
                }
            }
            (made, making)
        });
        let mut items = Prefetched { rx, waited: Duration::ZERO };
        let r = consume(&mut items);
        let waited = items.waited;
        drop(items); // unblocks a producer waiting to send
        match producer.join() {
            Ok((made, making)) => (r, PrefetchStats { made, making, waited }),
            Err(e) => std::panic::resume_unwind(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::prefetch;
    use rand::{Rng, SeedableRng};

    fn stream(seed: u64) -> impl FnMut() -> Vec<u32> + Send {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        move || (0..1 + rng.random_range(0..5)).map(|_| rng.random()).collect()
    }

    #[test]
    fn items_come_in_the_order_and_values_made_in_line() {
        let mut inline = stream(7);
        let want: Vec<Vec<u32>> = (0..23).map(|_| inline()).collect();
        for depth in [1, 2, 5] {
            let (got, stats) = prefetch(23, depth, stream(7), |it| it.collect::<Vec<_>>());
            assert_eq!(got, want, "depth {depth}");
            assert_eq!(stats.made, 23);
        }
    }

    #[test]
    fn a_consumer_that_stops_early_stops_the_producer() {
        // The producer could make items for ever (each one blocks once
        // `depth` are waiting); it must stop within `depth` + 1 of the 3
        // taken. Run on a thread and waited for with a timeout, so a
        // producer that never stops fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(prefetch(usize::MAX, 2, stream(3), |it| it.take(3).count()));
        });
        let (got, stats) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("prefetch did not return within 60 s of its consumer stopping: the producer kept running");
        assert_eq!(got, 3);
        assert!((3..=6).contains(&stats.made), "made {}", stats.made);
    }

    #[test]
    fn a_panic_while_making_reaches_the_caller() {
        let mut k = 0;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prefetch(
                10,
                1,
                move || {
                    k += 1;
                    assert!(k < 4, "item {k} cannot be made");
                    k
                },
                |it| it.collect::<Vec<_>>(),
            )
        }));
        let msg = r.expect_err("the producer's panic is resumed");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("item 4 cannot be made"), "{msg}");
    }
}
