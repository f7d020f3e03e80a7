//! Fault injection for test suites: crashes at named protocol points and
//! faults on the coordinator<->shard links (drop, delay, duplicate,
//! reorder, partition, slow shard).
//!
//! One [`Faults`] object is shared by the coordinator and every shard. The
//! actors consult it where they send 2PC batches and where a named
//! protocol point is reached. With nothing armed that costs one atomic
//! load; only an armed fault takes the lock.
//!
//! Random choices come from one ChaCha generator seeded with
//! [`Faults::seed`]. The same seed with the same sequence of consultations
//! makes the same choices; in a multi-threaded cluster the sequence itself
//! depends on thread timing, so a seed replays a run's fault *schedule*
//! exactly and its interleaving as closely as the scheduler allows.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use parashard_protocols::model::ShardId;

/// A named point of the 2PC protocol where an armed crash fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CrashPoint {
    /// Shard: locks granted and logged, the vote not yet sent.
    BeforeVote,
    /// Shard: the vote sent.
    AfterVote,
    /// Shard: a commit received, not yet logged or applied.
    BeforeCommitApplied,
    /// Shard: a commit logged and applied, its acknowledgement not sent.
    AfterCommitApplied,
    /// Coordinator: a commit decided, not yet logged.
    BeforeDecisionLogged,
    /// Coordinator: a commit decision logged, no commit sent.
    AfterDecisionLogged,
    /// Coordinator: commits sent, no receipt handed to the client.
    AfterCommitsSent,
}

impl CrashPoint {
    /// Every crash point a shard reaches.
    pub const SHARD: [CrashPoint; 4] = [
        CrashPoint::BeforeVote,
        CrashPoint::AfterVote,
        CrashPoint::BeforeCommitApplied,
        CrashPoint::AfterCommitApplied,
    ];

    /// Every crash point the coordinator reaches.
    pub const COORDINATOR: [CrashPoint; 3] = [
        CrashPoint::BeforeDecisionLogged,
        CrashPoint::AfterDecisionLogged,
        CrashPoint::AfterCommitsSent,
    ];

    /// Whether a shard (rather than the coordinator) reaches this point.
    pub fn is_shard_point(self) -> bool {
        CrashPoint::SHARD.contains(&self)
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Who an armed crash belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A shard.
    Shard(ShardId),
    /// The coordinator.
    Coordinator,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Shard(shard) => write!(f, "{shard}"),
            Target::Coordinator => write!(f, "the coordinator"),
        }
    }
}

/// Bad input to the fault API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// The cluster has no such shard.
    #[error("no {shard}: the cluster has {shards} shards")]
    UnknownShard {
        /// The shard asked for.
        shard: ShardId,
        /// How many shards there are.
        shards: u32,
    },
    /// The crash point is not reached by that target.
    #[error("{target} never reaches crash point {point}")]
    WrongTarget {
        /// The point.
        point: CrashPoint,
        /// Who it was armed for.
        target: Target,
    },
    /// A probability outside `0.0..=1.0`.
    #[error("probability of {what} is {value}, not in 0..=1")]
    Probability {
        /// Which fault.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A delay range that is empty or too long.
    #[error("delay range {min_ms}..={max_ms} ms is empty or exceeds {MAX_DELAY_MS} ms")]
    DelayRange {
        /// Its start.
        min_ms: u64,
        /// Its end.
        max_ms: u64,
    },
}

/// The longest delay the fault layer adds to a message: it keeps fault
/// tests short. The protocol itself assumes no bound (a late prepare is
/// kept out by the coordinator's floor of decided rounds, however late).
pub const MAX_DELAY_MS: u64 = 2_000;

/// Random faults on the coordinator<->shard links, each with its own
/// probability per message batch, in both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkFaults {
    /// Probability that a batch is lost.
    pub drop: f64,
    /// Probability that a batch is delayed by a time in `delay_ms`.
    pub delay: f64,
    /// The delay range.
    pub delay_ms: RangeInclusive<u64>,
    /// Probability that a batch is delivered twice; the second copy comes
    /// a further time in `delay_ms` after the first, as a network that
    /// re-transmits would deliver it.
    pub duplicate: f64,
    /// Probability that a batch is shuffled and held back (by up to the
    /// end of `delay_ms`) so that later batches overtake it.
    pub reorder: f64,
    /// Only the links of these shards; `None`: all.
    pub shards: Option<Vec<ShardId>>,
}

impl Default for LinkFaults {
    fn default() -> LinkFaults {
        LinkFaults {
            drop: 0.0,
            delay: 0.0,
            delay_ms: 1..=10,
            duplicate: 0.0,
            reorder: 0.0,
            shards: None,
        }
    }
}

/// What becomes of one batch of messages on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Lost.
    Drop,
    /// Delivered after `delay_ms`, and again `duplicate_ms` later if that
    /// is set, its messages in the order `order` (indices into the batch).
    Deliver {
        /// Milliseconds to wait first.
        delay_ms: u64,
        /// When a second copy follows, how long after the first.
        duplicate_ms: Option<u64>,
        /// A permutation of the batch, when it is reordered.
        order: Option<Vec<usize>>,
    },
}

impl Fate {
    /// Delivery at once, unchanged.
    pub(crate) const NOW: Fate = Fate::Deliver {
        delay_ms: 0,
        duplicate_ms: None,
        order: None,
    };

    /// Applies the fate's order to `batch`.
    pub(crate) fn reorder<T>(order: &Option<Vec<usize>>, batch: Vec<T>) -> Vec<T> {
        match order {
            None => batch,
            Some(order) => {
                let mut slots: Vec<Option<T>> = batch.into_iter().map(Some).collect();
                order.iter().filter_map(|&i| slots[i].take()).collect()
            }
        }
    }
}

/// Counters of faults that fired, for tests to check that their faults
/// happened at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Armed crashes that fired.
    pub crashes: u64,
    /// Batches dropped (random drops and partitions).
    pub dropped: u64,
    /// Batches delayed (random delays and slow shards).
    pub delayed: u64,
    /// Batches delivered twice.
    pub duplicated: u64,
    /// Batches reordered.
    pub reordered: u64,
}

#[derive(Debug)]
struct Inner {
    rng: ChaCha8Rng,
    crashes: Vec<(Target, CrashPoint)>,
    links: Option<LinkFaults>,
    /// Partitioned shards, with when the partition ends (`None`: never).
    partitions: Vec<(ShardId, Option<Instant>)>,
    /// Slowed shards and the delay of every message to them.
    slow: Vec<(ShardId, u64)>,
    stats: FaultStats,
}

impl Inner {
    fn is_empty(&self) -> bool {
        self.crashes.is_empty()
            && self.links.is_none()
            && self.partitions.is_empty()
            && self.slow.is_empty()
    }
}

/// The fault layer shared by a cluster's actors. See the module docs.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    shards: u32,
    /// Whether anything is armed: the one check on the hot path.
    active: AtomicBool,
    inner: Mutex<Inner>,
    /// Batches held back (delayed, duplicated or reordered) and not yet
    /// delivered.
    in_transit: Arc<AtomicU64>,
}

impl Faults {
    /// A fault layer for `shards` shards, its choices drawn from `seed`.
    pub fn new(seed: u64, shards: u32) -> Faults {
        Faults {
            seed,
            shards,
            active: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                rng: ChaCha8Rng::seed_from_u64(seed),
                crashes: Vec::new(),
                links: None,
                partitions: Vec::new(),
                slow: Vec::new(),
                stats: FaultStats::default(),
            }),
            in_transit: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Batches the fault layer holds back (delayed, duplicated or
    /// reordered) and has not delivered yet: a test waits for 0 before it
    /// checks what late messages did.
    pub fn in_transit(&self) -> u64 {
        self.in_transit.load(Ordering::Acquire)
    }

    /// The seed of the fault layer's random choices.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether any fault is armed.
    #[inline]
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data: every
        // update is a single push, remove or assignment.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Inner)) {
        let mut inner = self.lock();
        f(&mut inner);
        self.active.store(!inner.is_empty(), Ordering::Release);
    }

    fn check_shard(&self, shard: ShardId) -> Result<(), FaultError> {
        if shard.0 < self.shards {
            Ok(())
        } else {
            Err(FaultError::UnknownShard {
                shard,
                shards: self.shards,
            })
        }
    }

    /// Arms a crash of `shard` at `point`; it fires once, the next time the
    /// shard reaches that point.
    pub fn crash_shard_at(&self, shard: ShardId, point: CrashPoint) -> Result<(), FaultError> {
        self.check_shard(shard)?;
        self.arm(Target::Shard(shard), point)
    }

    /// Arms a crash of the coordinator at `point`; it fires once, the next
    /// time the coordinator reaches that point.
    pub fn crash_coordinator_at(&self, point: CrashPoint) -> Result<(), FaultError> {
        self.arm(Target::Coordinator, point)
    }

    fn arm(&self, target: Target, point: CrashPoint) -> Result<(), FaultError> {
        if point.is_shard_point() != matches!(target, Target::Shard(_)) {
            return Err(FaultError::WrongTarget { point, target });
        }
        self.update(|inner| inner.crashes.push((target, point)));
        Ok(())
    }

    /// The crashes armed and not yet fired.
    pub fn armed_crashes(&self) -> Vec<(Target, CrashPoint)> {
        self.lock().crashes.clone()
    }

    /// Called by an actor at a crash point: whether it must crash now.
    /// Disarms the crash it reports.
    pub(crate) fn should_crash(&self, target: Target, point: CrashPoint) -> bool {
        if !self.active() {
            return false;
        }
        let mut fired = false;
        self.update(|inner| {
            if let Some(i) = inner
                .crashes
                .iter()
                .position(|armed| *armed == (target, point))
            {
                inner.crashes.remove(i);
                inner.stats.crashes += 1;
                fired = true;
            }
        });
        fired
    }

    /// Sets the random link faults (replacing earlier ones).
    pub fn set_link_faults(&self, faults: LinkFaults) -> Result<(), FaultError> {
        for (what, value) in [
            ("drop", faults.drop),
            ("delay", faults.delay),
            ("duplicate", faults.duplicate),
            ("reorder", faults.reorder),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultError::Probability { what, value });
            }
        }
        let (min_ms, max_ms) = (*faults.delay_ms.start(), *faults.delay_ms.end());
        if min_ms > max_ms || max_ms > MAX_DELAY_MS {
            return Err(FaultError::DelayRange { min_ms, max_ms });
        }
        for shard in faults.shards.iter().flatten() {
            self.check_shard(*shard)?;
        }
        self.update(|inner| inner.links = Some(faults));
        Ok(())
    }

    /// Drops all 2PC traffic to and from `shard`, for `duration` or (with
    /// `None`) until [`Faults::heal_shard`] or [`Faults::heal`].
    pub fn partition(&self, shard: ShardId, duration: Option<Duration>) -> Result<(), FaultError> {
        self.check_shard(shard)?;
        let until = duration.map(|d| Instant::now() + d);
        self.update(|inner| {
            inner.partitions.retain(|(s, _)| *s != shard);
            inner.partitions.push((shard, until));
        });
        Ok(())
    }

    /// Delays every 2PC message to `shard` by `delay_ms`.
    pub fn slow(&self, shard: ShardId, delay_ms: u64) -> Result<(), FaultError> {
        self.check_shard(shard)?;
        if delay_ms > MAX_DELAY_MS {
            return Err(FaultError::DelayRange {
                min_ms: delay_ms,
                max_ms: delay_ms,
            });
        }
        self.update(|inner| {
            inner.slow.retain(|(s, _)| *s != shard);
            inner.slow.push((shard, delay_ms));
        });
        Ok(())
    }

    /// Ends the partition and the slowness of `shard`.
    pub fn heal_shard(&self, shard: ShardId) -> Result<(), FaultError> {
        self.check_shard(shard)?;
        self.update(|inner| {
            inner.partitions.retain(|(s, _)| *s != shard);
            inner.slow.retain(|(s, _)| *s != shard);
        });
        Ok(())
    }

    /// Clears every fault: armed crashes, link faults, partitions and slow
    /// shards. Messages already held back are still delivered.
    pub fn heal(&self) {
        self.update(|inner| {
            inner.crashes.clear();
            inner.links = None;
            inner.partitions.clear();
            inner.slow.clear();
        });
    }

    /// What fired so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats
    }

    /// Called by an actor about to send a batch of `len` messages on the
    /// link of `shard` (`to_shard`: from the coordinator to it): what
    /// becomes of the batch.
    pub(crate) fn fate(&self, shard: ShardId, to_shard: bool, len: usize) -> Fate {
        if !self.active() {
            return Fate::NOW;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let now = Instant::now();
        inner
            .partitions
            .retain(|(_, until)| until.is_none_or(|until| now < until));
        let partitioned = inner.partitions.iter().any(|(s, _)| *s == shard);
        self.active.store(!inner.is_empty(), Ordering::Release);
        if partitioned {
            inner.stats.dropped += 1;
            return Fate::Drop;
        }
        let mut delay_ms = if to_shard {
            inner
                .slow
                .iter()
                .find(|(s, _)| *s == shard)
                .map_or(0, |(_, d)| *d)
        } else {
            0
        };
        let mut duplicate_ms = None;
        let mut order = None;
        let applies = inner
            .links
            .as_ref()
            .is_some_and(|l| l.shards.as_ref().is_none_or(|s| s.contains(&shard)));
        if applies {
            let links = inner.links.as_ref().expect("checked above");
            let rng = &mut inner.rng;
            if rng.gen_bool(links.drop) {
                inner.stats.dropped += 1;
                return Fate::Drop;
            }
            if rng.gen_bool(links.delay) {
                delay_ms += rng.gen_range(links.delay_ms.clone());
            }
            if rng.gen_bool(links.duplicate) {
                duplicate_ms = Some(rng.gen_range(links.delay_ms.clone()));
                inner.stats.duplicated += 1;
            }
            if rng.gen_bool(links.reorder) {
                let mut permutation: Vec<usize> = (0..len).collect();
                permutation.shuffle(rng);
                order = Some(permutation);
                delay_ms += rng.gen_range(1..=(*links.delay_ms.end()).max(1));
                inner.stats.reordered += 1;
            }
        }
        if delay_ms > 0 {
            inner.stats.delayed += 1;
        }
        Fate::Deliver {
            delay_ms,
            duplicate_ms,
            order,
        }
    }
}

/// Delivers `batch` according to `fate`, building each copy with `wrap`
/// and handing it to `send`. Delayed copies are sent from a task on the
/// current arbiter, so they stay "in the network" if the sender crashes.
pub(crate) fn deliver<T, M>(
    faults: &Faults,
    fate: Fate,
    batch: Vec<T>,
    wrap: fn(Vec<T>) -> M,
    send: impl Fn(M) + Clone + 'static,
) where
    T: Clone + 'static,
    M: 'static,
{
    let Fate::Deliver {
        delay_ms,
        duplicate_ms,
        order,
    } = fate
    else {
        return;
    };
    let batch = Fate::reorder(&order, batch);
    if let Some(extra_ms) = duplicate_ms {
        let (copy, send) = (batch.clone(), send.clone());
        let in_transit = Arc::clone(&faults.in_transit);
        in_transit.fetch_add(1, Ordering::AcqRel);
        actix::spawn(async move {
            actix::clock::sleep(Duration::from_millis(delay_ms + extra_ms)).await;
            send(wrap(copy));
            in_transit.fetch_sub(1, Ordering::AcqRel);
        });
    }
    if delay_ms == 0 {
        send(wrap(batch));
        return;
    }
    let in_transit = Arc::clone(&faults.in_transit);
    in_transit.fetch_add(1, Ordering::AcqRel);
    actix::spawn(async move {
        actix::clock::sleep(Duration::from_millis(delay_ms)).await;
        send(wrap(batch));
        in_transit.fetch_sub(1, Ordering::AcqRel);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bad input to every fault setter gets a typed error, not a panic.
    #[test]
    fn bad_input_gets_typed_errors() {
        let faults = Faults::new(1, 2);
        assert_eq!(
            faults.crash_shard_at(ShardId(2), CrashPoint::BeforeVote),
            Err(FaultError::UnknownShard {
                shard: ShardId(2),
                shards: 2
            })
        );
        assert_eq!(
            faults.crash_shard_at(ShardId(0), CrashPoint::AfterCommitsSent),
            Err(FaultError::WrongTarget {
                point: CrashPoint::AfterCommitsSent,
                target: Target::Shard(ShardId(0))
            })
        );
        assert!(matches!(
            faults.crash_coordinator_at(CrashPoint::AfterVote),
            Err(FaultError::WrongTarget { .. })
        ));
        assert!(matches!(
            faults.set_link_faults(LinkFaults {
                drop: 1.5,
                ..LinkFaults::default()
            }),
            Err(FaultError::Probability { what: "drop", .. })
        ));
        let (min_ms, max_ms) = (5, 1);
        assert!(matches!(
            faults.set_link_faults(LinkFaults {
                delay_ms: min_ms..=max_ms,
                ..LinkFaults::default()
            }),
            Err(FaultError::DelayRange { .. })
        ));
        assert!(matches!(
            faults.partition(ShardId(7), None),
            Err(FaultError::UnknownShard { .. })
        ));
        assert!(!faults.active(), "nothing was armed by bad input");
    }

    /// An armed crash fires exactly once, only at its own point and target.
    #[test]
    fn armed_crash_fires_once() {
        let faults = Faults::new(1, 2);
        faults
            .crash_shard_at(ShardId(1), CrashPoint::AfterVote)
            .unwrap();
        assert!(faults.active());
        assert!(!faults.should_crash(Target::Shard(ShardId(0)), CrashPoint::AfterVote));
        assert!(!faults.should_crash(Target::Shard(ShardId(1)), CrashPoint::BeforeVote));
        assert!(faults.should_crash(Target::Shard(ShardId(1)), CrashPoint::AfterVote));
        assert!(!faults.should_crash(Target::Shard(ShardId(1)), CrashPoint::AfterVote));
        assert!(!faults.active(), "a fired crash disarms");
        assert_eq!(faults.stats().crashes, 1);
    }

    /// The same seed and the same consultations give the same fates, and
    /// `heal` returns every link to prompt, unchanged delivery.
    #[test]
    fn same_seed_same_fates_and_heal_clears() {
        let run = |seed| {
            let faults = Faults::new(seed, 4);
            faults
                .set_link_faults(LinkFaults {
                    drop: 0.2,
                    delay: 0.3,
                    delay_ms: 1..=20,
                    duplicate: 0.2,
                    reorder: 0.2,
                    shards: Some(vec![ShardId(1), ShardId(2)]),
                })
                .unwrap();
            let fates: Vec<Fate> = (0..200)
                .map(|i| faults.fate(ShardId(i % 4), i % 3 == 0, 5))
                .collect();
            faults.heal();
            assert_eq!(faults.fate(ShardId(1), true, 5), Fate::NOW);
            assert!(!faults.active());
            fates
        };
        let a = run(9);
        assert_eq!(a, run(9));
        assert_ne!(a, run(10), "another seed, other choices");
        assert!(a
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == 0 || i % 4 == 3)
            .all(|(_, f)| *f == Fate::NOW));
        assert!(a.contains(&Fate::Drop));
    }

    /// A partition drops everything on its shard's link until it ends; a
    /// slow shard delays what is sent to it.
    #[test]
    fn partition_and_slow_shard() {
        let faults = Faults::new(3, 2);
        faults
            .partition(ShardId(0), Some(Duration::from_millis(30)))
            .unwrap();
        faults.slow(ShardId(1), 15).unwrap();
        assert_eq!(faults.fate(ShardId(0), true, 1), Fate::Drop);
        assert_eq!(faults.fate(ShardId(0), false, 1), Fate::Drop);
        assert_eq!(
            faults.fate(ShardId(1), true, 1),
            Fate::Deliver {
                delay_ms: 15,
                duplicate_ms: None,
                order: None
            }
        );
        assert_eq!(faults.fate(ShardId(1), false, 1), Fate::NOW);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(faults.fate(ShardId(0), true, 1), Fate::NOW);
        faults.heal_shard(ShardId(1)).unwrap();
        assert!(!faults.active());
    }

    /// A reorder permutation is applied faithfully.
    #[test]
    fn reorder_applies_permutation() {
        assert_eq!(
            Fate::reorder(&Some(vec![2, 0, 1]), vec!['a', 'b', 'c']),
            vec!['c', 'a', 'b']
        );
        assert_eq!(Fate::reorder(&None, vec![1, 2]), vec![1, 2]);
    }
}
