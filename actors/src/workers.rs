//! The contract workers: a pool of threads that run the user contracts of
//! cross-shard rounds ([`Command::Execute`]), so that a slow contract
//! never holds up the coordinator's message loop. Native calls do not come
//! here: the coordinator runs them inline, where they cost less than the
//! hand-off would.
//!
//! A worker runs one [`Execution`] at a time and sends what it gave back
//! to the coordinator. The coordinator ignores a result it no longer
//! waits for (a round given up, or one of an incarnation before a
//! restart), so a worker needs no notice of crashes.
//!
//! [`Command::Execute`]: parashard_protocols::twopc::Command::Execute

use std::sync::Arc;

use actix::prelude::*;

use parashard_protocols::contracts::Registry;
use parashard_protocols::twopc::{Executed, Execution};

/// Runs `execution` and sends the result to `back`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Run {
    /// The round to run.
    pub execution: Execution,
    /// Where the result goes.
    pub back: Recipient<Ran>,
}

/// What a worker's run of an [`Execution`] gave.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ran(pub Executed);

/// One worker thread of the pool.
pub struct ContractWorker {
    registry: Arc<Registry>,
}

impl Actor for ContractWorker {
    type Context = SyncContext<Self>;
}

impl Handler<Run> for ContractWorker {
    type Result = ();

    fn handle(&mut self, Run { execution, back }: Run, _ctx: &mut SyncContext<Self>) {
        let _span = tracing::debug_span!("execute_round", attempt = execution.attempt).entered();
        // A panicking contract is caught inside `run` (it fails its
        // transaction), so the worker lives on.
        back.do_send(Ran(execution.run(&self.registry)));
    }
}

/// How many worker threads a pool has: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Starts a pool of `threads` workers calling `registry`'s contracts.
/// Must be called inside a running actix system.
pub fn start(threads: usize, registry: Arc<Registry>) -> Addr<ContractWorker> {
    SyncArbiter::start(threads.max(1), move || ContractWorker {
        registry: registry.clone(),
    })
}
