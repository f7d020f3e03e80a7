//! Starting and stopping the actor system: one arbiter (thread) per shard
//! and one for the coordinator, each actor under a supervisor.

use std::sync::Arc;

use actix::prelude::*;

use parashard_protocols::contracts::Registry;
use parashard_protocols::exec::{ExecutorError, ParallelExecutor};
use parashard_protocols::model::ShardId;
use parashard_protocols::placement::Placement;
use parashard_protocols::twopc::CoordinatorConfig;

use crate::coordinator::{Connect, CoordinatorActor};
use crate::faults::Faults;
use crate::shard::ShardActor;
use crate::storage::{CoordinatorRecord, ShardRecord, Storage};

/// Everything needed to start the actors.
pub struct RuntimeConfig {
    /// Where keys live.
    pub placement: Placement,
    /// Executor workers per shard.
    pub workers: usize,
    /// User contracts.
    pub registry: Arc<Registry>,
    /// 2PC tunables (the coordinator's memory of commits among them).
    pub coordinator: CoordinatorConfig,
    /// How many of its latest local commits each shard remembers, to
    /// answer re-submitted transaction ids (see
    /// [`parashard_protocols::committed`]).
    pub shard_remember_committed: usize,
    /// One log per shard.
    pub shard_storage: Vec<Arc<dyn Storage<ShardRecord>>>,
    /// The coordinator's log.
    pub coordinator_storage: Arc<dyn Storage<CoordinatorRecord>>,
    /// The fault layer the actors consult.
    pub faults: Arc<Faults>,
}

/// Error starting the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// An executor could not be built.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// The actor system thread failed to start.
    #[error("actor system failed to start: {0}")]
    Start(String),
}

/// A running actor system.
pub struct Runtime {
    /// The shards' addresses, by shard id.
    pub shards: Vec<Addr<ShardActor>>,
    /// The coordinator's address.
    pub coordinator: Addr<CoordinatorActor>,
    system: actix::System,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Joined on stop, so that every actor (and its storage) is gone when
    /// [`Runtime::stop`] returns and a new runtime may open the same files.
    arbiters: std::sync::Mutex<Vec<Arbiter>>,
}

impl Runtime {
    /// Starts the actors on their own threads.
    pub fn start(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let shards = config.placement.shards() as usize;
        if config.shard_storage.len() != shards {
            return Err(RuntimeError::Start(format!(
                "{} shard logs for {shards} shards",
                config.shard_storage.len()
            )));
        }
        let executors = (0..shards)
            .map(|_| ParallelExecutor::new(config.workers, config.registry.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("parashard-system".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let coordinator_arbiter = Arbiter::new();
                    let (placement, registry, coordinator_config, storage, faults) = (
                        config.placement.clone(),
                        config.registry.clone(),
                        config.coordinator.clone(),
                        config.coordinator_storage.clone(),
                        config.faults.clone(),
                    );
                    let mut arbiters = Vec::with_capacity(shards + 1);
                    let coordinator = actix::Supervisor::start_in_arbiter(
                        &coordinator_arbiter.handle(),
                        move |_| {
                            CoordinatorActor::new(
                                coordinator_config,
                                placement,
                                registry,
                                storage,
                                faults,
                            )
                        },
                    );
                    arbiters.push(coordinator_arbiter);
                    let mut addrs = Vec::with_capacity(shards);
                    for (i, (executor, storage)) in
                        executors.into_iter().zip(config.shard_storage).enumerate()
                    {
                        let arbiter = Arbiter::new();
                        let recipient = coordinator.clone().recipient();
                        let faults = config.faults.clone();
                        let remember = config.shard_remember_committed;
                        let addr =
                            actix::Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                                ShardActor::new(
                                    ShardId(i as u32),
                                    executor,
                                    storage,
                                    recipient,
                                    faults,
                                )
                                .remember_committed(remember)
                            });
                        addrs.push(addr);
                        arbiters.push(arbiter);
                    }
                    coordinator.do_send(Connect(addrs.clone()));
                    let _ = sender.send((addrs, coordinator, actix::System::current(), arbiters));
                });
                let _ = system.run();
            })
            .map_err(|e| RuntimeError::Start(e.to_string()))?;
        let (shards, coordinator, system, arbiters) = receiver
            .recv()
            .map_err(|_| RuntimeError::Start("actor system thread exited".into()))?;
        Ok(Runtime {
            shards,
            coordinator,
            system,
            thread: std::sync::Mutex::new(Some(thread)),
            arbiters: std::sync::Mutex::new(arbiters),
        })
    }

    /// Stops every actor and waits for the system thread. Stopping a
    /// stopped runtime does nothing.
    pub fn stop(&self) {
        self.system.stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let arbiters =
            std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(|e| e.into_inner()));
        for arbiter in arbiters {
            arbiter.stop();
            let _ = arbiter.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}
