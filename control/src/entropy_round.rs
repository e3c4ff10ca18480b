//! Anti-entropy rounds beside the event loop: the fresh dump made on a thread of its own, then compared with the mirror in steps between the loop's passes; a round whose mirror changes meanwhile is dropped.

use std::thread::JoinHandle;

use anyhow::Result;

use crate::entropy::{Comparison, STEP_ROUTES};
use crate::mirror::Mirror;
use crate::state::KernelState;

/// Where a round stands. With 1M routes the dump takes a second or two and
/// the comparison about one: made in the loop, they held every event back
/// that long.
pub enum Round {
    Idle,
    /// The dump is being made (its messages that did not decode counted);
    /// `void` once the mirror changed, as the dump may then be older.
    Dumping {
        thread: JoinHandle<Result<(KernelState, u64)>>,
        void: bool,
    },
    Comparing(Box<Comparison>),
}

/// What a step of a round found.
pub enum Outcome {
    /// Nothing yet (or a round dropped).
    Nothing,
    /// The mirror is the kernel's state.
    Faithful,
    /// The differences, and the dump to adopt.
    Differs(Vec<String>, Box<KernelState>),
}

impl Round {
    /// Starts a round: the dump of table `table` on a thread of its own.
    pub fn start(table: u32) -> Round {
        let spawned = std::thread::Builder::new()
            .name("xe-entropy".into())
            .spawn(move || {
                lower();
                let mut m = Mirror::for_dumps()?;
                let mut fresh = KernelState::new(table);
                m.dump(&mut fresh)?;
                Ok((fresh, m.own_undecodable()))
            });
        match spawned {
            Ok(thread) => Round::Dumping {
                thread,
                void: false,
            },
            Err(e) => {
                tracing::warn!(
                    "anti-entropy: no thread for the dump ({e}); the next round tries again"
                );
                Round::Idle
            }
        }
    }

    pub fn busy(&self) -> bool {
        !matches!(self, Round::Idle)
    }

    pub fn comparing(&self) -> bool {
        matches!(self, Round::Comparing(_))
    }

    /// The mirror changed: what the round has proves nothing. A dump under
    /// way finishes (one at a time) and is dropped.
    pub fn mirror_changed(&mut self) {
        match self {
            Round::Dumping { void, .. } => *void = true,
            Round::Comparing(_) => {
                tracing::debug!(
                    "anti-entropy: events arrived during the comparison, round dropped"
                );
                drop_aside(std::mem::replace(self, Round::Idle));
            }
            Round::Idle => {}
        }
    }

    /// Takes the round one step on, against `mirror`; what the dump's
    /// thread skipped as undecodable is added to `undecodable`.
    pub fn advance(&mut self, mirror: &KernelState, undecodable: &mut u64) -> Outcome {
        match std::mem::replace(self, Round::Idle) {
            Round::Idle => {}
            Round::Dumping { thread, void } if !thread.is_finished() => {
                *self = Round::Dumping { thread, void };
            }
            Round::Dumping { thread, void } => match thread.join() {
                Ok(Ok((fresh, skipped))) => {
                    *undecodable += skipped;
                    if void {
                        tracing::debug!(
                            "anti-entropy: events arrived during the dump, round dropped"
                        );
                        drop_aside(fresh);
                    } else {
                        *self = Round::Comparing(Box::new(Comparison::new(fresh)));
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(
                        "anti-entropy: the dump failed ({e:#}); the next round tries again"
                    );
                }
                Err(_) => {
                    tracing::warn!(
                        "anti-entropy: the dump's thread failed; the next round tries again"
                    );
                }
            },
            Round::Comparing(mut c) => match c.step(mirror, STEP_ROUTES) {
                None => *self = Round::Comparing(c),
                Some(d) if d.is_empty() => {
                    tracing::debug!("anti-entropy: the mirror is the kernel's state");
                    drop_aside(c);
                    return Outcome::Faithful;
                }
                Some(d) => return Outcome::Differs(d, Box::new(c.into_fresh())),
            },
        }
        Outcome::Nothing
    }
}

/// Drops `v` on a thread of its own: freeing a dump of 1M routes takes a
/// few hundred milliseconds the event loop need not wait.
pub fn drop_aside<T: Send + 'static>(v: T) {
    let _ = std::thread::Builder::new()
        .name("xe-free".into())
        .spawn(move || {
            lower();
            drop(v)
        });
}

/// The calling thread to the CPU time nothing else wants (sched::background).
fn lower() {
    if let Err(e) = crate::sched::background() {
        tracing::debug!("anti-entropy: the thread keeps its priority ({e})");
    }
}
