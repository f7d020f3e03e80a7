//! Choosing, block by block, between running in parallel and in order, by
//! what each way measurably costs on this machine now.
//!
//! Both ways give the same receipts and state, so the choice only changes
//! speed. Which is faster depends on more than the block: how far apart
//! the cores are (on a virtual machine that changes while the program
//! runs: the parallel executor's workers exchange cache lines, and a
//! round trip between two cores measured here swings between 50 and 500
//! ns), and what else runs on them (a shard's workers share the cores with
//! the other shards). So the executor keeps the cost per transaction of
//! each way, as recently measured, runs the cheaper, and now and then runs
//! the other to see whether that has changed. A probe that confirms the
//! choice doubles the wait until the next one, so a steady machine pays
//! for probing on about one block in 65 (4 every 256).

use std::time::Duration;

/// How a block runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// On all the executor's workers.
    Parallel,
    /// One transaction after another on the calling thread.
    InOrder,
}

impl Way {
    fn index(self) -> usize {
        match self {
            Way::Parallel => 0,
            Way::InOrder => 1,
        }
    }

    fn other(self) -> Way {
        match self {
            Way::Parallel => Way::InOrder,
            Way::InOrder => Way::Parallel,
        }
    }
}

/// Blocks run in parallel before in-order execution is first measured:
/// the first ones are slow (the pool's threads start, caches are cold), and
/// by then they are out of the median.
const FIRST_CHOICE: u32 = 5;
/// Blocks between probes of the way not taken, after the first and after
/// the choice changed ...
const FIRST_PROBE: u32 = 8;
/// ... and at most, after probes kept confirming it.
const MAX_PROBE: u32 = 256;
/// Measurements kept per way; a way's cost is their median (the lower one
/// while there are only two), so that one block slowed or sped up by
/// something else (a cold start, the thread descheduled, a block found in
/// cache) does not decide alone.
const SAMPLES: usize = 3;
/// Blocks one probe runs the other way: the first after a switch is not
/// measured (it pays for moving the state's lines between the cores, and
/// for waking or idling the workers), the rest make a median of their own.
const PROBE_BLOCKS: u32 = SAMPLES as u32 + 1;
/// Parallel execution is chosen only when it costs less than this share of
/// in-order execution: two cores for a gain within the measurements' noise
/// would take a core from other work for nothing.
const PARALLEL_MARGIN: f64 = 0.97;

/// The way chosen for one block, handed back with the block's measurement:
/// an executor shared by several threads has several blocks under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Choice {
    /// How the block runs.
    pub(crate) way: Way,
    /// Whether it probes the way not preferred ...
    probe: bool,
    /// ... and is the probe's last block.
    ends_probe: bool,
}

/// The measured costs of both ways and when to probe next.
#[derive(Debug, Clone)]
pub(crate) struct Chooser {
    /// Per way (index [`Way::index`]), its last costs in nanoseconds per
    /// transaction, newest first.
    samples: [[Option<f64>; SAMPLES]; 2],
    /// Blocks to run the preferred way before the next probe.
    until_probe: u32,
    /// What `until_probe` is reset to after a probe.
    interval: u32,
    /// The way a probe under way runs and how many more blocks it takes.
    probing: Option<(Way, u32)>,
    /// The preferred way when the current probe began.
    preferred_before_probe: Way,
    /// The way the last recorded block ran.
    previous: Option<Way>,
}

impl Default for Chooser {
    fn default() -> Chooser {
        Chooser {
            samples: [[None; SAMPLES]; 2],
            until_probe: FIRST_CHOICE,
            interval: FIRST_PROBE,
            probing: None,
            preferred_before_probe: Way::Parallel,
            previous: None,
        }
    }
}

impl Chooser {
    /// What a block costs `way`, as measured lately.
    fn cost(&self, way: Way) -> Option<f64> {
        let mut known = [0.0; SAMPLES];
        let mut n = 0;
        for &sample in self.samples[way.index()].iter().flatten() {
            known[n] = sample;
            n += 1;
        }
        let known = &mut known[..n];
        known.sort_by(f64::total_cmp);
        match known.len() {
            0 => None,
            2 => Some(known[0]),
            n => Some(known[n / 2]),
        }
    }

    /// The way that costs less as measured so far; parallel until in-order
    /// execution has been measured.
    pub(crate) fn preferred(&self) -> Way {
        match (self.cost(Way::Parallel), self.cost(Way::InOrder)) {
            (Some(parallel), Some(in_order)) if parallel >= in_order * PARALLEL_MARGIN => {
                Way::InOrder
            }
            _ => Way::Parallel,
        }
    }

    /// The way the next block runs, and whether as a probe; changes
    /// nothing.
    fn next(&self) -> (Way, bool) {
        if let Some((way, _)) = self.probing {
            return (way, true);
        }
        let preferred = self.preferred();
        if self.until_probe == 0 {
            (preferred.other(), true)
        } else {
            (preferred, false)
        }
    }

    /// How to run the next block.
    pub(crate) fn choose(&mut self) -> Choice {
        let (way, probe) = self.next();
        match self.probing {
            Some((way, left)) => self.probing = (left > 1).then_some((way, left - 1)),
            None if probe => {
                self.preferred_before_probe = way.other();
                self.probing = (PROBE_BLOCKS > 1).then_some((way, PROBE_BLOCKS - 1));
            }
            None => self.until_probe -= 1,
        }
        Choice {
            way,
            probe,
            ends_probe: probe && self.probing.is_none(),
        }
    }

    /// Whether the block after the one just chosen and recorded will run
    /// in parallel (if its own measurement does not change the preference
    /// first): the executor then keeps its workers awake.
    pub(crate) fn parallel_next(&self) -> bool {
        self.next().0 == Way::Parallel
    }

    /// Records that a block of `len` transactions run as `choice` said
    /// took `elapsed`.
    pub(crate) fn record(&mut self, choice: Choice, len: usize, elapsed: Duration) {
        let Choice {
            way,
            probe,
            ends_probe,
        } = choice;
        let switched = self
            .previous
            .replace(way)
            .is_some_and(|previous| previous != way);
        if len == 0 || switched {
            return;
        }
        let before = self.preferred();
        let samples = &mut self.samples[way.index()];
        samples.rotate_right(1);
        samples[0] = Some(elapsed.as_nanos() as f64 / len as f64);
        if probe {
            if ends_probe {
                // A probe that confirms the choice makes the next one wait
                // twice as long.
                self.interval = if self.preferred() == self.preferred_before_probe {
                    (self.interval * 2).min(MAX_PROBE)
                } else {
                    FIRST_PROBE
                };
                self.until_probe = self.interval;
            }
        } else if self.preferred() != before {
            // The preferred way measured slower than the other: what
            // slowed it may pass, so look back soon.
            self.interval = FIRST_PROBE;
            self.until_probe = FIRST_PROBE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `blocks` blocks of 1,000 transactions through `chooser` on a
    /// machine where they cost `parallel` and `in_order` ns each, and
    /// returns how many ran in parallel.
    fn run(chooser: &mut Chooser, blocks: usize, parallel: u64, in_order: u64) -> usize {
        let mut ran_parallel = 0;
        for _ in 0..blocks {
            let choice = chooser.choose();
            let cost = match choice.way {
                Way::Parallel => {
                    ran_parallel += 1;
                    parallel
                }
                Way::InOrder => in_order,
            };
            chooser.record(choice, 1_000, Duration::from_nanos(cost * 1_000));
        }
        ran_parallel
    }

    /// Proves the chooser settles on the faster way and probes the other
    /// ever more rarely: where parallel costs 30 ns and in order 40, at
    /// most 1 block in 40 runs in order over 2,000 blocks; where parallel
    /// costs 60, at most 1 in 40 runs in parallel.
    #[test]
    fn settles_on_the_faster_way_and_probes_rarely() {
        let mut chooser = Chooser::default();
        let parallel = run(&mut chooser, 2_000, 30, 40);
        assert!(parallel >= 2_000 - 50, "{parallel} of 2000 in parallel");
        assert_eq!(chooser.preferred(), Way::Parallel);

        let mut chooser = Chooser::default();
        let parallel = run(&mut chooser, 2_000, 60, 40);
        assert!(parallel <= 50, "{parallel} of 2000 in parallel");
        assert_eq!(chooser.preferred(), Way::InOrder);
    }

    /// Proves the chooser follows a machine that changes: parallel faster,
    /// then (the cores drift apart) slower, then faster again; within 100
    /// blocks of each change most blocks take the way that is faster now.
    #[test]
    fn follows_a_machine_that_changes() {
        let mut chooser = Chooser::default();
        run(&mut chooser, 1_000, 30, 40);
        assert_eq!(chooser.preferred(), Way::Parallel);
        // Slower now: the preferred way's own measurements show it.
        run(&mut chooser, 10, 60, 40);
        assert_eq!(chooser.preferred(), Way::InOrder);
        let parallel = run(&mut chooser, 100, 60, 40);
        assert!(parallel <= 20, "{parallel} of 100 in parallel");
        // Faster again: only a probe can tell, and probes come back
        // within the longest interval.
        let parallel = run(&mut chooser, MAX_PROBE as usize + 100, 30, 40);
        assert_eq!(chooser.preferred(), Way::Parallel);
        assert!(parallel >= 90, "{parallel} in parallel");
    }

    /// Proves one slow block does not decide: the first parallel block
    /// costs ten times the rest (cold caches, sleeping workers), and still
    /// at least 40 of 50 blocks run in parallel, where it is faster.
    #[test]
    fn one_slow_block_does_not_decide() {
        let mut chooser = Chooser::default();
        let first = chooser.choose();
        assert_eq!(first.way, Way::Parallel);
        chooser.record(first, 1_000, Duration::from_nanos(300 * 1_000));
        let parallel = run(&mut chooser, 49, 30, 40);
        assert!(parallel >= 39, "{parallel} of 49 in parallel");
        assert_eq!(chooser.preferred(), Way::Parallel);
    }

    /// Proves the blocks that follow a switch of way do not decide: on a
    /// machine where the first two blocks after each switch cost three
    /// times as much (the state's lines move between the cores), parallel
    /// at 30 ns still wins over in order at 40 on at least 97% of 2,000
    /// blocks. Measuring the first of them too would make each return from
    /// an in-order probe look like 90 ns and settle on in-order execution.
    #[test]
    fn switching_costs_do_not_decide() {
        let mut chooser = Chooser::default();
        let (mut previous, mut since_switch, mut parallel) = (None, 0, 0);
        for _ in 0..2_000 {
            let choice = chooser.choose();
            let way = choice.way;
            since_switch = if previous == Some(way) {
                since_switch + 1
            } else {
                0
            };
            previous = Some(way);
            let base = match way {
                Way::Parallel => {
                    parallel += 1;
                    30
                }
                Way::InOrder => 40,
            };
            let cost = if since_switch < 2 { base * 3 } else { base };
            chooser.record(choice, 1_000, Duration::from_nanos(cost * 1_000));
        }
        assert!(parallel >= 1_940, "{parallel} of 2000 in parallel");
    }

    /// Proves parallel execution is not chosen for a gain within the
    /// margin: 39 ns in parallel against 40 in order runs in order.
    #[test]
    fn a_gain_within_the_margin_runs_in_order() {
        let mut chooser = Chooser::default();
        run(&mut chooser, 200, 39, 40);
        assert_eq!(chooser.preferred(), Way::InOrder);
    }

    /// Proves the hint for keeping workers awake names the next block's
    /// way: it is true exactly when the following `choose` says parallel.
    #[test]
    fn parallel_next_predicts_the_next_choice() {
        let mut chooser = Chooser::default();
        for block in 0..2_000u64 {
            let predicted = chooser.parallel_next();
            let choice = chooser.choose();
            assert_eq!(predicted, choice.way == Way::Parallel, "block {block}");
            let parallel = if (block / 300) % 2 == 0 { 30 } else { 60 };
            let cost = if choice.way == Way::Parallel {
                parallel
            } else {
                40
            };
            chooser.record(choice, 1_000, Duration::from_nanos(cost * 1_000));
        }
    }
}
