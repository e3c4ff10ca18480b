//! Anti-entropy rounds beside the event loop: the fresh dump made on a thread of its own, then compared with the mirror in steps between the loop's passes, leaving out the routes events changed meanwhile.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::entropy::{Comparison, STEP_ROUTES};
use crate::mirror::Mirror;
use crate::state::{KernelState, Touched};

/// Where a round stands. With 1M routes the dump takes a second or two and
/// the comparison about one: made in the loop, they held every event back
/// that long.
///
/// While a round runs, the mirror notes the prefixes route events change
/// (`KernelState::touched`); the comparison leaves them out. A route the
/// kernel changed before the dump ended has its event read (and its prefix
/// noted) before the comparison starts, as it waits for the event socket
/// to be read empty after the dump; one changed later is either noted or
/// still the same in the mirror and the dump. So a route that differs and
/// is not noted was missed. Events about anything else (links,
/// neighbours, nexthop objects, rules, the local table) drop the round.
pub enum Round {
    Idle,
    /// The dump is being made (its messages that did not decode counted);
    /// `void` once the round is dropped.
    Dumping {
        thread: JoinHandle<Result<(Comparison, u64)>>,
        void: bool,
    },
    /// `since`: when the loop found the dump done.
    Comparing {
        comparison: Box<Comparison>,
        since: Instant,
    },
}

/// How long a pass of the event loop compares: an event that comes
/// meanwhile waits at most about this long (steps of 1,024 routes took
/// 0.7-2.7 ms with 1M routes and held changes back: p99 2.2 ms).
const PASS_BUDGET: Duration = Duration::from_micros(200);

/// What a step of a round found.
pub enum Outcome {
    /// Nothing yet (or a round dropped).
    Nothing,
    /// The mirror is the kernel's state.
    Faithful,
    /// The differences; the dump to adopt if no event came during the
    /// round (else the state is to be dumped again).
    Differs(Vec<String>, Option<Box<KernelState>>),
}

impl Round {
    /// Starts a round: the dump of table `table` on a thread of its own;
    /// `mirror` notes what events change from now.
    pub fn start(table: u32, mirror: &mut KernelState) -> Round {
        let spawned = std::thread::Builder::new()
            .name("xe-entropy".into())
            .spawn(move || {
                let mut m = Mirror::for_dumps()?;
                let mut fresh = KernelState::new(table);
                m.dump(&mut fresh)?;
                // Its list of prefixes made here too (20 ms at 1M routes).
                Ok((Comparison::new(fresh), m.own_undecodable()))
            });
        match spawned {
            Ok(thread) => {
                mirror.touched = Some(Touched::default());
                Round::Dumping {
                    thread,
                    void: false,
                }
            }
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
        matches!(self, Round::Comparing { .. })
    }

    /// Events changed what a round cannot leave out: it is dropped (a dump
    /// under way finishes, one at a time, and is thrown away).
    pub fn drop_round(&mut self, mirror: &mut KernelState) {
        mirror.touched = None;
        match self {
            Round::Dumping { void, .. } => *void = true,
            Round::Comparing { .. } => {
                tracing::debug!("anti-entropy: events changed more than routes, round dropped");
                drop_aside(std::mem::replace(self, Round::Idle));
            }
            Round::Idle => {}
        }
    }

    /// Takes the round one step on, against `mirror`, whose event socket
    /// was last read empty at `emptied`; what the dump's thread skipped as
    /// undecodable is added to `undecodable`.
    pub fn advance(
        &mut self,
        mirror: &mut KernelState,
        emptied: Option<Instant>,
        undecodable: &mut u64,
    ) -> Outcome {
        // Replaced (a re-dump), or changed beyond its routes.
        if self.busy() && mirror.touched.as_ref().is_none_or(|t| t.other) {
            self.drop_round(mirror);
        }
        match std::mem::replace(self, Round::Idle) {
            Round::Idle => {}
            Round::Dumping { thread, void } if !thread.is_finished() => {
                *self = Round::Dumping { thread, void };
            }
            Round::Dumping { thread, void } => match thread.join() {
                Ok(Ok((comparison, skipped))) => {
                    *undecodable += skipped;
                    if void {
                        tracing::debug!("anti-entropy: round dropped during the dump");
                        drop_aside(comparison);
                    } else {
                        *self = Round::Comparing {
                            comparison: Box::new(comparison),
                            since: Instant::now(),
                        };
                    }
                }
                Ok(Err(e)) => {
                    mirror.touched = None;
                    tracing::warn!(
                        "anti-entropy: the dump failed ({e:#}); the next round tries again"
                    );
                }
                Err(_) => {
                    mirror.touched = None;
                    tracing::warn!(
                        "anti-entropy: the dump's thread failed; the next round tries again"
                    );
                }
            },
            Round::Comparing { comparison, since } if emptied.is_none_or(|e| e < since) => {
                *self = Round::Comparing { comparison, since };
            }
            Round::Comparing {
                mut comparison,
                since,
            } => {
                // Live (checked above): the mirror notes what events change.
                let Some(touched) = mirror.touched.take() else {
                    return Outcome::Nothing;
                };
                let began = Instant::now();
                let found = loop {
                    match comparison.step(mirror, STEP_ROUTES, &touched.prefixes) {
                        Some(d) => break Some(d),
                        None if began.elapsed() >= PASS_BUDGET => break None,
                        None => {}
                    }
                };
                let Some(d) = found else {
                    mirror.touched = Some(touched);
                    *self = Round::Comparing { comparison, since };
                    return Outcome::Nothing;
                };
                if d.is_empty() {
                    tracing::debug!(
                        left_out = touched.prefixes.len(),
                        "anti-entropy: the mirror is the kernel's state"
                    );
                    drop_aside(comparison);
                    return Outcome::Faithful;
                }
                if touched.prefixes.is_empty() {
                    return Outcome::Differs(d, Some(Box::new(comparison.into_fresh())));
                }
                drop_aside(comparison);
                return Outcome::Differs(d, None);
            }
        }
        Outcome::Nothing
    }
}

/// Drops `v` on a thread of its own: freeing a dump of 1M routes takes a
/// few hundred milliseconds the event loop need not wait.
pub fn drop_aside<T: Send + 'static>(v: T) {
    let _ = std::thread::Builder::new()
        .name("xe-free".into())
        .spawn(move || drop(v));
}
