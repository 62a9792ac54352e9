//! The fair queue in front of the engine thread: one lane per stream,
//! served by deficit round robin over the events the batches hold, so a
//! flooding agent's backlog cannot push a quiet agent's batch back: a batch
//! that arrives in an empty lane waits for at most one turn of every other
//! lane, each turn worth [`QUANTUM`] events plus one batch. Lanes are
//! bounded by their callers (a stream has a fixed number of batches
//! admitted, see [`super::flow`]), so the queue holds at most that many
//! batches per stream and never buffers what agents offer beyond it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, PoisonError};

/// Events a lane may be served per turn (a quarter of the agents' default
/// batch, 2000: a lane of full default batches is served one every four
/// turns, and a quiet lane's small batch still waits at most a turn of
/// this plus one batch of each busy lane).
pub const QUANTUM: usize = 500;

/// Something queued, with its cost in events.
pub trait Cost {
    /// Events it holds (at least one is charged).
    fn cost(&self) -> usize;
}

#[derive(Debug)]
struct Lane<T> {
    jobs: VecDeque<T>,
    deficit: usize,
}

/// The lanes and their turn order, without locking (the scheduling itself).
#[derive(Debug)]
pub struct Lanes<T> {
    lanes: HashMap<u64, Lane<T>>,
    /// Lanes with work, in turn order; the front one is being served.
    ring: VecDeque<u64>,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Self {
            lanes: HashMap::new(),
            ring: VecDeque::new(),
        }
    }
}

impl<T: Cost> Lanes<T> {
    /// Queues `job` in lane `lane`; a lane without work joins the end of
    /// the turn order.
    pub fn push(&mut self, lane: u64, job: T) {
        let entry = self.lanes.entry(lane).or_insert_with(|| Lane {
            jobs: VecDeque::new(),
            deficit: 0,
        });
        if entry.jobs.is_empty() {
            self.ring.push_back(lane);
        }
        entry.jobs.push_back(job);
    }

    /// The next job by deficit round robin, with its lane.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        loop {
            let id = *self.ring.front()?;
            let Some(lane) = self.lanes.get_mut(&id) else {
                self.ring.pop_front();
                continue;
            };
            let Some(cost) = lane.jobs.front().map(|j| j.cost().max(1)) else {
                self.ring.pop_front();
                self.lanes.remove(&id);
                continue;
            };
            if lane.deficit < cost {
                // A lane reaches the front afresh: its turn's allowance.
                lane.deficit += QUANTUM;
                if lane.deficit < cost {
                    // Not enough yet (a batch above the quantum): it
                    // saves up over turns.
                    self.ring.rotate_left(1);
                    continue;
                }
            }
            lane.deficit -= cost;
            let job = lane.jobs.pop_front()?;
            match lane.jobs.front() {
                None => {
                    self.ring.pop_front();
                    self.lanes.remove(&id);
                }
                // Its turn is over: to the end of the order.
                Some(next) if lane.deficit < next.cost().max(1) => {
                    self.ring.rotate_left(1);
                }
                Some(_) => {}
            }
            return Some((id, job));
        }
    }

    /// Jobs queued, over all lanes.
    pub fn len(&self) -> usize {
        self.lanes.values().map(|l| l.jobs.len()).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

/// [`Lanes`] shared between the session tasks that push and the engine
/// thread that pops (blocking).
#[derive(Debug)]
pub struct FairQueue<T> {
    state: Mutex<(Lanes<T>, bool)>,
    ready: Condvar,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new((Lanes::default(), false)),
            ready: Condvar::new(),
        }
    }
}

impl<T: Cost> FairQueue<T> {
    /// Queues `job` in `lane`; gives it back when the queue is closed.
    pub fn push(&self, lane: u64, job: T) -> Result<(), T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.1 {
            return Err(job);
        }
        state.0.push(lane, job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for the next job; `None` once closed and drained.
    pub fn pop_blocking(&self) -> Option<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some((_, job)) = state.0.pop() {
                return Some(job);
            }
            if state.1 {
                return None;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// No more jobs are taken; the consumer ends once it has the queued ones.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.ready.notify_all();
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Batch(&'static str, usize);

    impl Cost for Batch {
        fn cost(&self) -> usize {
            self.1
        }
    }

    #[test]
    fn a_quiet_lane_is_served_within_one_turn_of_a_flooding_one() {
        let mut lanes = Lanes::default();
        for _ in 0..100 {
            lanes.push(1, Batch("flood", 500));
        }
        // The flood is being served when the quiet agent's batch arrives.
        assert_eq!(lanes.pop(), Some((1, Batch("flood", 500))));
        lanes.push(2, Batch("quiet", 3));
        let position = std::iter::from_fn(|| lanes.pop())
            .position(|(lane, _)| lane == 2)
            .unwrap();
        // At most one more flood batch (the rest of its turn) goes first.
        assert!(
            position <= 1,
            "the quiet batch came {position} batches later"
        );
    }

    #[test]
    fn many_flooding_lanes_delay_a_quiet_one_by_one_turn_each() {
        let mut lanes = Lanes::default();
        for flood in 10..15 {
            for _ in 0..50 {
                lanes.push(flood, Batch("flood", 500));
            }
        }
        for _ in 0..7 {
            lanes.pop();
        }
        lanes.push(99, Batch("quiet", 1));
        let before: usize = std::iter::from_fn(|| lanes.pop())
            .take_while(|(lane, _)| *lane != 99)
            .map(|(_, b)| b.1)
            .sum();
        // Five other lanes, each at most one turn: QUANTUM events and one batch.
        assert!(before <= 5 * (QUANTUM + 500), "{before} events went first");
    }

    #[test]
    fn lanes_share_by_events_not_by_batches() {
        let mut lanes = Lanes::default();
        for _ in 0..40 {
            lanes.push(1, Batch("big", 1000));
            for _ in 0..10 {
                lanes.push(2, Batch("small", 100));
            }
        }
        let mut served = [0usize; 3];
        for _ in 0..200 {
            let (lane, b) = lanes.pop().unwrap();
            served[lane as usize] += b.1;
        }
        let (big, small) = (served[1] as f64, served[2] as f64);
        assert!(
            (big / small - 1.0).abs() < 0.2,
            "big lane {big} events, small lane {small}"
        );
    }

    #[test]
    fn every_job_comes_out_once_in_its_lane_order() {
        let mut lanes = Lanes::default();
        for i in 0..30 {
            lanes.push(i % 3, Batch("x", 1 + (i as usize * 97) % 1200));
        }
        let mut seen: Vec<(u64, usize)> = Vec::new();
        while let Some((lane, b)) = lanes.pop() {
            seen.push((lane, b.1));
        }
        assert_eq!(seen.len(), 30);
        assert!(lanes.is_empty() && lanes.lanes.is_empty());
        for lane in 0..3u64 {
            let got: Vec<usize> = seen.iter().filter(|s| s.0 == lane).map(|s| s.1).collect();
            let want: Vec<usize> = (0..30u64)
                .filter(|i| i % 3 == lane)
                .map(|i| 1 + (i as usize * 97) % 1200)
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_blocking_queue_ends_after_close_once_drained() {
        let q = std::sync::Arc::new(FairQueue::default());
        q.push(1, Batch("a", 1)).unwrap();
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || std::iter::from_fn(|| q.pop_blocking()).count())
        };
        q.push(2, Batch("b", 1)).unwrap();
        q.close();
        assert!(q.push(3, Batch("c", 1)).is_err());
        assert_eq!(consumer.join().unwrap(), 2);
    }
}
