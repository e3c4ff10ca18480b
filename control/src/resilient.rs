//! Resilient next-hop bucket allocator with the Linux kernel's semantics for resilient nexthop groups (pure Rust, no I/O, no privileges).
//!
//! A resilient group puts a table of buckets between the flow hash and the
//! next hops: a flow hashes to a bucket, the bucket names a next hop. When the
//! member set changes, only buckets that must (their next hop left) or may
//! (their next hop holds too many buckets and the bucket is idle, or the table
//! has been unbalanced for too long) are reassigned, so established flows keep
//! their path. This module reproduces the decisions of the kernel's
//! `nh_res_group_rebalance`, `nh_res_table_upkeep` and
//! `nh_res_bucket_should_migrate` (net/ipv4/nexthop.c), so the daemon can
//! drive the XDP bucket map the same way the kernel drives its own table, or
//! mirror a kernel table and predict its next moves.
//!
//! Time is an opaque monotonic `u64` supplied by the caller (e.g.
//! milliseconds); the idle and unbalanced timers are in the same unit.

use std::collections::HashMap;
use std::fmt;

/// Smallest table the allocator accepts (the kernel's minimum too).
pub const MIN_BUCKETS: usize = 1;
/// Largest table the allocator accepts: the size of the dataplane's bucket map.
pub const MAX_BUCKETS: usize = 4096;
/// The project's default table size (also the kernel's default for resilient groups).
pub const DEFAULT_BUCKETS: usize = 128;

/// One next hop of a group and its weight; buckets are shared in proportion to weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// The kernel's next-hop object id.
    pub next_hop: u32,
    /// Relative share of buckets; must be at least 1.
    pub weight: u32,
}

impl Member {
    /// A member with the given next-hop id and weight.
    pub const fn new(next_hop: u32, weight: u32) -> Self {
        Self { next_hop, weight }
    }
}

/// Size and timers of a resilient table, as configured on a kernel resilient group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Number of buckets, `MIN_BUCKETS..=MAX_BUCKETS`.
    pub bucket_count: usize,
    /// A bucket unused for at least this long is idle and may move off an
    /// overweight next hop without disturbing a live flow. 0 = every bucket is
    /// always idle, so additions rehash at once.
    pub idle_timer: u64,
    /// Once the table has been unbalanced for longer than this, buckets of
    /// overweight next hops move even if busy. 0 = never force (the table may
    /// stay unbalanced until idle buckets appear).
    pub unbalanced_timer: u64,
}

impl TableConfig {
    /// A configuration with explicit size and timers.
    pub const fn new(bucket_count: usize, idle_timer: u64, unbalanced_timer: u64) -> Self {
        Self {
            bucket_count,
            idle_timer,
            unbalanced_timer,
        }
    }
}

/// Why upkeep moved a bucket; all but `Idle` are what the kernel calls a forced migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationReason {
    /// The bucket held no next hop.
    Unassigned,
    /// The bucket's next hop is no longer a member of the group.
    OwnerRemoved,
    /// The bucket's next hop is overweight and the bucket has been idle for the idle timer.
    Idle,
    /// The bucket's next hop is overweight and the table has been unbalanced
    /// for longer than the unbalanced timer; the bucket may have been busy.
    UnbalancedTimerExpired,
}

/// One bucket reassignment made by upkeep, in the order it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Index of the bucket in the table.
    pub bucket: usize,
    /// The next hop the bucket held before (`None` if it was unassigned).
    pub from: Option<u32>,
    /// The next hop the bucket holds now; `None` only when the group has no
    /// members left, so the bucket was cleared.
    pub to: Option<u32>,
    /// What made the bucket migratable.
    pub reason: MigrationReason,
}

impl Migration {
    /// Whether the move may have redirected a live flow (the kernel's "force"
    /// flag): everything except an idle migration.
    pub fn is_forced(&self) -> bool {
        self.reason != MigrationReason::Idle
    }
}

/// What an upkeep run did and what the daemon should do next.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpkeepOutcome {
    /// Buckets that changed owner, in bucket-index order.
    pub migrations: Vec<Migration>,
    /// Whether every member now holds exactly the buckets it wants.
    pub balanced: bool,
    /// When upkeep should run again (`None` when balanced): the earliest time
    /// a bucket of an overweight next hop becomes migratable.
    pub next_upkeep_at: Option<u64>,
}

/// Invalid input to the allocator; nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResilientError {
    /// The table size is outside `MIN_BUCKETS..=MAX_BUCKETS`.
    BucketCountOutOfRange { requested: usize },
    /// A member has weight 0, which would give it no share and no meaning.
    ZeroWeight { next_hop: u32 },
    /// A next-hop id appears twice in the member list (the kernel rejects this too).
    DuplicateMember { next_hop: u32 },
    /// A bucket index past the end of the table.
    BucketIndexOutOfRange { index: usize, bucket_count: usize },
    /// A per-bucket slice whose length is not the table size.
    LengthMismatch { expected: usize, actual: usize },
}

impl fmt::Display for ResilientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BucketCountOutOfRange { requested } => write!(
                f,
                "resilient table size {requested} is outside {MIN_BUCKETS}..={MAX_BUCKETS}"
            ),
            Self::ZeroWeight { next_hop } => {
                write!(f, "next hop {next_hop} has weight 0; weights start at 1")
            }
            Self::DuplicateMember { next_hop } => {
                write!(f, "next hop {next_hop} appears twice in the group")
            }
            Self::BucketIndexOutOfRange {
                index,
                bucket_count,
            } => write!(
                f,
                "bucket {index} is out of range for a table of {bucket_count} buckets"
            ),
            Self::LengthMismatch { expected, actual } => write!(
                f,
                "expected one entry per bucket ({expected}), got {actual}"
            ),
        }
    }
}

impl std::error::Error for ResilientError {}

/// How many buckets each member deserves, computed exactly as the kernel's
/// `nh_res_group_rebalance` does: walk members in order accumulating weight,
/// round `bucket_count * accumulated / total` to the closest integer (halves
/// up) to get an upper bound, and give each member the difference from the
/// previous bound. The result sums to `bucket_count` (or is empty with no
/// members), and matching the kernel's rounding keeps a mirrored table
/// identical to the kernel's.
pub fn wanted_bucket_counts(bucket_count: usize, members: &[Member]) -> Vec<u32> {
    let total_weight: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    if total_weight == 0 {
        return vec![0; members.len()];
    }
    let buckets = bucket_count as u64;
    let mut accumulated = 0u64;
    let mut previous_bound = 0u64;
    members
        .iter()
        .map(|member| {
            accumulated += u64::from(member.weight);
            let bound = (buckets * accumulated + total_weight / 2) / total_weight;
            let wanted = bound - previous_bound;
            previous_bound = bound;
            wanted as u32
        })
        .collect()
}

/// The slot list of a classic hash-mod-N multipath group, for comparison:
/// each member repeated by its weight, in member order, and a flow goes to
/// `slots[hash % slots.len()]`. Because the slot count changes with every
/// addition, removal or reweight, most unrelated flows land on a different
/// next hop after any change; that remapping is what the resilient table avoids.
pub fn modulo_slots(members: &[Member]) -> Vec<u32> {
    members
        .iter()
        .flat_map(|m| std::iter::repeat_n(m.next_hop, m.weight as usize))
        .collect()
}

/// Rejects member lists the kernel would reject: zero weights and duplicate ids.
fn validate_members(members: &[Member]) -> Result<(), ResilientError> {
    let mut seen = HashMap::with_capacity(members.len());
    for member in members {
        if member.weight == 0 {
            return Err(ResilientError::ZeroWeight {
                next_hop: member.next_hop,
            });
        }
        if seen.insert(member.next_hop, ()).is_some() {
            return Err(ResilientError::DuplicateMember {
                next_hop: member.next_hop,
            });
        }
    }
    Ok(())
}

/// A resilient bucket table: which next hop each bucket holds, when each
/// bucket was last used, and the member shares it converges to.
///
/// Invariants kept by every method: `held_counts()[i]` is the number of
/// buckets holding `members()[i]`; `wanted_counts()` follows the kernel's
/// rounding; `unbalanced_since()` is `Some` exactly when some member is
/// underweight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTable {
    config: TableConfig,
    members: Vec<Member>,
    /// Next-hop id to position in `members`.
    member_position: HashMap<u32, usize>,
    /// Buckets each member deserves, parallel to `members`.
    wanted: Vec<u32>,
    /// Buckets each member holds, parallel to `members`.
    held: Vec<u32>,
    /// Owner of each bucket; may name a next hop that is no longer a member
    /// only between a mirroring call and the next upkeep.
    owners: Vec<Option<u32>>,
    /// Last time each bucket carried traffic (or was migrated).
    last_used: Vec<u64>,
    /// When each bucket was last migrated; a bucket whose last use is not
    /// after its migration has carried no flow for its new owner.
    migrated_at: Vec<Option<u64>>,
    /// When the table last went from balanced to unbalanced.
    unbalanced_since: Option<u64>,
}

impl BucketTable {
    /// A new table whose buckets are filled at `now` the way the kernel fills
    /// a new resilient group (all buckets start unassigned and upkeep assigns
    /// them). Freshly assigned buckets count as idle until traffic stamps them.
    pub fn new(config: TableConfig, members: &[Member], now: u64) -> Result<Self, ResilientError> {
        let unassigned = vec![None; config.bucket_count];
        let mut table = Self::from_assignment(config, members, &unassigned, now)?;
        table.upkeep(now);
        Ok(table)
    }

    /// A table mirroring an existing assignment (e.g. a kernel bucket dump),
    /// without moving anything. Buckets count as used at `now` (busy), since
    /// their history is unknown; call [`BucketTable::set_last_used`] with the
    /// real stamps, then [`BucketTable::upkeep`]. Buckets naming a next hop
    /// that is not in `members` are moved by the next upkeep.
    pub fn from_assignment(
        config: TableConfig,
        members: &[Member],
        assignment: &[Option<u32>],
        now: u64,
    ) -> Result<Self, ResilientError> {
        if !(MIN_BUCKETS..=MAX_BUCKETS).contains(&config.bucket_count) {
            return Err(ResilientError::BucketCountOutOfRange {
                requested: config.bucket_count,
            });
        }
        if assignment.len() != config.bucket_count {
            return Err(ResilientError::LengthMismatch {
                expected: config.bucket_count,
                actual: assignment.len(),
            });
        }
        validate_members(members)?;
        let mut table = Self {
            config,
            members: Vec::new(),
            member_position: HashMap::new(),
            wanted: Vec::new(),
            held: Vec::new(),
            owners: assignment.to_vec(),
            last_used: vec![now; config.bucket_count],
            migrated_at: vec![None; config.bucket_count],
            unbalanced_since: None,
        };
        table.install_members(members);
        table.refresh_unbalanced_since(now);
        Ok(table)
    }

    /// Replaces the member list (additions, removals, weight changes) at
    /// `now`, then runs upkeep. Buckets of removed members move in this call;
    /// other moves wait for idle buckets or the unbalanced timer. A member
    /// whose link went down should simply be left out; adding it back later
    /// is an ordinary addition. If the table was already unbalanced and still
    /// is, the unbalanced clock keeps running (as in the kernel), so repeated
    /// changes cannot postpone a forced rebalance forever.
    pub fn set_members(
        &mut self,
        members: &[Member],
        now: u64,
    ) -> Result<UpkeepOutcome, ResilientError> {
        validate_members(members)?;
        self.install_members(members);
        self.refresh_unbalanced_since(now);
        Ok(self.upkeep(now))
    }

    /// Visits buckets in index order and moves every migratable bucket to an
    /// underweight member, like the kernel's `nh_res_table_upkeep`. Returns
    /// the moves, whether the table is balanced, and when to run again.
    pub fn upkeep(&mut self, now: u64) -> UpkeepOutcome {
        let mut migrations = Vec::new();
        // Underweight members only ever leave that state during a pass, and
        // the kernel serves them last-in-member-order first, so a cursor
        // walking down the member list finds each recipient in O(1) amortised.
        let mut recipient_cursor = self.members.len();
        for bucket in 0..self.owners.len() {
            let Some(reason) = self.migration_reason(bucket, now) else {
                continue;
            };
            while recipient_cursor > 0
                && self.held[recipient_cursor - 1] >= self.wanted[recipient_cursor - 1]
            {
                recipient_cursor -= 1;
            }
            let recipient = recipient_cursor.checked_sub(1);
            let from = self.owners[bucket];
            if recipient.is_none() && (from.is_none() || !self.members.is_empty()) {
                // Nothing can take the bucket: an unassigned bucket in a group
                // with no members stays unassigned.
                continue;
            }
            let to = recipient.map(|position| self.members[position].next_hop);
            self.reassign(bucket, to, now);
            migrations.push(Migration {
                bucket,
                from,
                to,
                reason,
            });
        }
        self.refresh_unbalanced_since(now);
        UpkeepOutcome {
            migrations,
            balanced: self.is_balanced(),
            next_upkeep_at: self.next_upkeep_at(now),
        }
    }

    /// When upkeep should next run so that no migration is late: `None` if
    /// the table is balanced, otherwise the earliest of each overweight
    /// member's bucket idle points and the moment the unbalanced timer forces
    /// migration. A value `<= now` means "run now". The kernel never
    /// reschedules sooner than half a second; a daemon should apply a similar
    /// floor of its own.
    pub fn next_upkeep_at(&self, now: u64) -> Option<u64> {
        if self.is_balanced() {
            return None;
        }
        let mut earliest: Option<u64> = None;
        let mut consider = |time: u64| {
            earliest = Some(earliest.map_or(time, |e| e.min(time)));
        };
        if self.config.unbalanced_timer > 0 {
            if let Some(since) = self.unbalanced_since {
                // The kernel forces only strictly after the deadline.
                consider(
                    since
                        .saturating_add(self.config.unbalanced_timer)
                        .saturating_add(1),
                );
            }
        }
        for bucket in 0..self.owners.len() {
            match self.owner_position(bucket) {
                None => consider(now),
                Some(position) if self.held[position] > self.wanted[position] => {
                    consider(self.idle_point(bucket, now));
                }
                Some(_) => {}
            }
        }
        earliest
    }

    /// Records that `bucket` carried traffic at `time`. Never moves a bucket's
    /// clock backwards, so a late or reordered report cannot make a busy bucket
    /// look idle.
    pub fn mark_used(&mut self, bucket: usize, time: u64) -> Result<(), ResilientError> {
        self.check_bucket(bucket)?;
        self.last_used[bucket] = self.last_used[bucket].max(time);
        Ok(())
    }

    /// Replaces every bucket's last-used time, one per bucket, e.g. from the
    /// dataplane's per-bucket map or a kernel dump's idle times. Unlike
    /// [`BucketTable::mark_used`] this may move a clock backwards: the caller
    /// is the source of truth. A stamp not after a bucket's last migration
    /// means "no traffic since it moved", which makes it idle at once.
    pub fn set_last_used(&mut self, stamps: &[u64]) -> Result<(), ResilientError> {
        if stamps.len() != self.last_used.len() {
            return Err(ResilientError::LengthMismatch {
                expected: self.last_used.len(),
                actual: stamps.len(),
            });
        }
        self.last_used.copy_from_slice(stamps);
        Ok(())
    }

    /// Sets one bucket's next hop directly, as a kernel bucket notification
    /// would, treating it as migrated at `now` (idle until traffic stamps it).
    /// Used to keep a mirror in step with the kernel; it does not run upkeep.
    pub fn assign(
        &mut self,
        bucket: usize,
        next_hop: Option<u32>,
        now: u64,
    ) -> Result<(), ResilientError> {
        self.check_bucket(bucket)?;
        self.reassign(bucket, next_hop, now);
        self.refresh_unbalanced_since(now);
        Ok(())
    }

    /// The table's size and timers.
    pub fn config(&self) -> TableConfig {
        self.config
    }

    /// Number of buckets.
    pub fn bucket_count(&self) -> usize {
        self.owners.len()
    }

    /// The next hop of each bucket, by index; this is what the dataplane's
    /// bucket map should hold.
    pub fn buckets(&self) -> &[Option<u32>] {
        &self.owners
    }

    /// The last-used time of each bucket, by index.
    pub fn last_used(&self) -> &[u64] {
        &self.last_used
    }

    /// The current members, in the order shares are computed.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Buckets each member deserves, parallel to [`BucketTable::members`].
    pub fn wanted_counts(&self) -> &[u32] {
        &self.wanted
    }

    /// Buckets each member holds, parallel to [`BucketTable::members`].
    pub fn held_counts(&self) -> &[u32] {
        &self.held
    }

    /// Whether no member holds fewer buckets than it wants (then, with any
    /// members, every member holds exactly its share and no bucket is
    /// orphaned). A table with no members is trivially balanced.
    pub fn is_balanced(&self) -> bool {
        self.held
            .iter()
            .zip(&self.wanted)
            .all(|(held, wanted)| held >= wanted)
    }

    /// When the table last became unbalanced; `None` while balanced.
    pub fn unbalanced_since(&self) -> Option<u64> {
        self.unbalanced_since
    }

    /// Replaces members and recomputes shares and holdings from the buckets.
    fn install_members(&mut self, members: &[Member]) {
        self.members = members.to_vec();
        self.member_position = members
            .iter()
            .enumerate()
            .map(|(position, m)| (m.next_hop, position))
            .collect();
        self.wanted = wanted_bucket_counts(self.owners.len(), members);
        self.held = vec![0; members.len()];
        for bucket in 0..self.owners.len() {
            if let Some(position) = self.owner_position(bucket) {
                self.held[position] += 1;
            }
        }
    }

    /// Position in `members` of the bucket's next hop, if it is a member.
    fn owner_position(&self, bucket: usize) -> Option<usize> {
        self.owners[bucket].and_then(|nh| self.member_position.get(&nh).copied())
    }

    /// The kernel's `nh_res_bucket_should_migrate`: why this bucket may move
    /// now, or `None` if it must stay.
    fn migration_reason(&self, bucket: usize, now: u64) -> Option<MigrationReason> {
        let Some(owner) = self.owners[bucket] else {
            return Some(MigrationReason::Unassigned);
        };
        let Some(&position) = self.member_position.get(&owner) else {
            return Some(MigrationReason::OwnerRemoved);
        };
        if self.held[position] <= self.wanted[position] {
            // Balanced and underweight next hops keep every bucket they hold.
            return None;
        }
        if now >= self.idle_point(bucket, now) {
            return Some(MigrationReason::Idle);
        }
        if self.config.unbalanced_timer > 0 {
            if let Some(since) = self.unbalanced_since {
                if now > since.saturating_add(self.config.unbalanced_timer) {
                    return Some(MigrationReason::UnbalancedTimerExpired);
                }
            }
        }
        None
    }

    /// The time from which the bucket counts as idle. A bucket with no
    /// traffic since its last migration carries no flow for its owner, so it
    /// is idle at once, whatever the idle timer (the kernel does the same).
    fn idle_point(&self, bucket: usize, now: u64) -> u64 {
        let last_used = self.last_used[bucket];
        match self.migrated_at[bucket] {
            Some(migrated) if last_used <= migrated => now,
            _ => last_used.saturating_add(self.config.idle_timer),
        }
    }

    /// Moves a bucket to `to`, keeping holdings in step and stamping it as
    /// freshly migrated (the kernel's `nh_res_bucket_set_idle`).
    fn reassign(&mut self, bucket: usize, to: Option<u32>, now: u64) {
        if let Some(position) = self.owner_position(bucket) {
            self.held[position] -= 1;
        }
        self.owners[bucket] = to;
        if let Some(position) = self.owner_position(bucket) {
            self.held[position] += 1;
        }
        let stamp = self.last_used[bucket].max(now);
        self.last_used[bucket] = stamp;
        self.migrated_at[bucket] = Some(stamp);
    }

    /// Starts the unbalanced clock when the table becomes unbalanced, keeps it
    /// running while it stays so, and stops it once balanced.
    fn refresh_unbalanced_since(&mut self, now: u64) {
        if self.is_balanced() {
            self.unbalanced_since = None;
        } else if self.unbalanced_since.is_none() {
            self.unbalanced_since = Some(now);
        }
    }

    fn check_bucket(&self, bucket: usize) -> Result<(), ResilientError> {
        if bucket < self.owners.len() {
            Ok(())
        } else {
            Err(ResilientError::BucketIndexOutOfRange {
                index: bucket,
                bucket_count: self.owners.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn group(spec: &[(u32, u32)]) -> Vec<Member> {
        spec.iter().map(|&(nh, w)| Member::new(nh, w)).collect()
    }

    fn equal_group(next_hops: impl IntoIterator<Item = u32>) -> Vec<Member> {
        next_hops.into_iter().map(|nh| Member::new(nh, 1)).collect()
    }

    /// Buckets held per next hop, counted from the bucket array itself.
    fn census(table: &BucketTable) -> BTreeMap<u32, u32> {
        let mut counts = BTreeMap::new();
        for owner in table.buckets().iter().flatten() {
            *counts.entry(*owner).or_insert(0) += 1;
        }
        counts
    }

    /// Checks the invariants every public method promises.
    fn assert_consistent(table: &BucketTable) {
        let counts = census(table);
        for (member, held) in table.members().iter().zip(table.held_counts()) {
            assert_eq!(counts.get(&member.next_hop).copied().unwrap_or(0), *held);
        }
        assert_eq!(
            table.wanted_counts(),
            wanted_bucket_counts(table.bucket_count(), table.members()).as_slice()
        );
        if !table.members().is_empty() {
            let wanted: u32 = table.wanted_counts().iter().sum();
            assert_eq!(wanted as usize, table.bucket_count());
        }
        assert_eq!(table.unbalanced_since().is_none(), table.is_balanced());
    }

    fn assert_counts_equal_wants(table: &BucketTable) {
        assert!(table.is_balanced());
        assert_eq!(table.held_counts(), table.wanted_counts());
        assert!(table.buckets().iter().all(Option::is_some));
    }

    /// A tiny deterministic PRNG so the property tests need no crate and replay exactly.
    struct XorShift64(u64);

    impl XorShift64 {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    fn random_members(rng: &mut XorShift64) -> Vec<Member> {
        let mut pool: Vec<u32> = (1..=12).collect();
        // Fisher-Yates, so member order (which decides rounding and recipients) varies too.
        for i in (1..pool.len()).rev() {
            pool.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let size = rng.below(7) as usize; // 0..=6 members, empty groups included
        pool[..size]
            .iter()
            .map(|&nh| Member::new(nh, 1 + rng.below(6) as u32))
            .collect()
    }

    #[test]
    fn wanted_shares_use_the_kernels_closest_rounding() {
        assert_eq!(
            wanted_bucket_counts(64, &equal_group(1..=3)),
            vec![21, 22, 21]
        );
        assert_eq!(wanted_bucket_counts(128, &equal_group(1..=4)), vec![32; 4]);
        // 128 * 2/3 = 85.33 -> 85, remainder 43.
        assert_eq!(
            wanted_bucket_counts(128, &group(&[(1, 2), (2, 1)])),
            vec![85, 43]
        );
        // 128 * 11/56 = 25.14 -> 25; 4096 * 11/56 = 804.57 -> 805.
        assert_eq!(
            wanted_bucket_counts(128, &group(&[(1, 11), (2, 45)])),
            vec![25, 103]
        );
        assert_eq!(
            wanted_bucket_counts(4096, &group(&[(1, 11), (2, 45)])),
            vec![805, 3291]
        );
        // Exactly half rounds up: 1 bucket over 2 equal members -> [1, 0].
        assert_eq!(wanted_bucket_counts(1, &equal_group(1..=2)), vec![1, 0]);
        assert!(wanted_bucket_counts(128, &[]).is_empty());

        // A new table lands exactly on those shares.
        for (count, members) in [
            (64, equal_group(1..=3)),
            (128, equal_group(1..=4)),
            (128, group(&[(1, 2), (2, 1)])),
            (128, group(&[(1, 11), (2, 45)])),
            (4096, group(&[(1, 11), (2, 45)])),
        ] {
            let table = BucketTable::new(TableConfig::new(count, 120, 0), &members, 0).unwrap();
            assert_consistent(&table);
            assert_counts_equal_wants(&table);
        }
        let table = BucketTable::new(TableConfig::new(64, 120, 0), &equal_group(1..=3), 0).unwrap();
        assert_eq!(table.held_counts(), &[21, 22, 21]);
    }

    #[test]
    fn new_table_and_reweight_reproduce_the_kernel_documentation_example() {
        // Documentation/networking/nexthop-group-resilient.rst: 8 buckets, group 1/2,
        // idle_timer 60, unbalanced_timer 300, then "replace ... group 1,3/2".
        let config = TableConfig::new(8, 60, 300);
        let mut table = BucketTable::new(config, &group(&[(1, 1), (2, 1)]), 0).unwrap();
        // The kernel serves the last underweight member first, so nh 2 gets the low buckets.
        let two = Some(2);
        let one = Some(1);
        assert_eq!(table.buckets(), &[two, two, two, two, one, one, one, one]);

        // No traffic since the fill: those buckets are idle at once despite the 60 s timer.
        let outcome = table.set_members(&group(&[(1, 3), (2, 1)]), 3).unwrap();
        assert_eq!(table.buckets(), &[one, one, two, two, one, one, one, one]);
        assert_eq!(
            outcome.migrations,
            vec![
                Migration {
                    bucket: 0,
                    from: two,
                    to: one,
                    reason: MigrationReason::Idle
                },
                Migration {
                    bucket: 1,
                    from: two,
                    to: one,
                    reason: MigrationReason::Idle
                },
            ]
        );
        assert!(outcome.balanced);
        assert_eq!(outcome.next_upkeep_at, None);
        assert_eq!(table.held_counts(), &[6, 2]);
        assert_consistent(&table);
    }

    #[test]
    fn removing_a_member_moves_exactly_its_buckets() {
        for (bucket_count, member_count) in [(128usize, 4u32), (64, 3), (4096, 7), (8, 8)] {
            let config = TableConfig::new(bucket_count, 10_000, 0);
            let members = equal_group(1..=member_count);
            let mut original = BucketTable::new(config, &members, 0).unwrap();
            // Every bucket is busy: only the forced moves may happen.
            original.set_last_used(&vec![5; bucket_count]).unwrap();

            for removed in 1..=member_count {
                let mut table = original.clone();
                let before = table.buckets().to_vec();
                let removed_held = census(&table)[&removed];
                let remaining: Vec<Member> = members
                    .iter()
                    .copied()
                    .filter(|m| m.next_hop != removed)
                    .collect();
                let outcome = table.set_members(&remaining, 10).unwrap();

                assert_eq!(outcome.migrations.len() as u32, removed_held);
                for (bucket, (old, new)) in before.iter().zip(table.buckets()).enumerate() {
                    if *old == Some(removed) {
                        assert_ne!(*new, Some(removed), "bucket {bucket} kept a removed hop");
                        assert!(new.is_some());
                    } else {
                        assert_eq!(old, new, "bucket {bucket} moved but its hop stayed");
                    }
                }
                assert!(outcome
                    .migrations
                    .iter()
                    .all(|m| m.from == Some(removed) && m.reason == MigrationReason::OwnerRemoved));
                assert!(outcome.balanced);
                assert_counts_equal_wants(&table);
                assert_consistent(&table);
            }
        }

        // The concrete numbers for 128 buckets over 4: 32 each, then 43/42/43 after a removal.
        let mut table =
            BucketTable::new(TableConfig::new(128, 10_000, 0), &equal_group(1..=4), 0).unwrap();
        assert_eq!(table.held_counts(), &[32; 4]);
        table.set_last_used(&[5; 128]).unwrap();
        let outcome = table.set_members(&equal_group([1, 2, 4]), 10).unwrap();
        assert_eq!(outcome.migrations.len(), 32);
        assert_eq!(table.held_counts(), &[43, 42, 43]);
    }

    #[test]
    fn added_member_waits_for_idle_buckets_and_busy_buckets_never_move() {
        let config = TableConfig::new(64, 100, 0);
        let mut table = BucketTable::new(config, &equal_group(1..=3), 0).unwrap();
        // Kernel fill order: nh 3 holds 0..21, nh 2 holds 21..43, nh 1 holds 43..64.
        let expected_fill: Vec<Option<u32>> = (0..64)
            .map(|b| {
                Some(if b < 21 {
                    3
                } else if b < 43 {
                    2
                } else {
                    1
                })
            })
            .collect();
        assert_eq!(table.buckets(), expected_fill.as_slice());
        table.set_last_used(&[10; 64]).unwrap();

        // Every bucket was used 10 ago with a 100 idle timer: nothing may move.
        let outcome = table.set_members(&equal_group(1..=4), 20).unwrap();
        assert!(outcome.migrations.is_empty());
        assert!(!outcome.balanced);
        assert_eq!(table.buckets(), expected_fill.as_slice());
        assert_eq!(table.wanted_counts(), &[16; 4]);
        assert_eq!(table.held_counts(), &[21, 22, 21, 0]);
        assert_eq!(table.unbalanced_since(), Some(20));
        assert_eq!(outcome.next_upkeep_at, Some(110));

        assert!(table.upkeep(109).migrations.is_empty());
        // Flows keep the even buckets busy.
        for bucket in (0..64).step_by(2) {
            table.mark_used(bucket, 105).unwrap();
        }
        let before = table.buckets().to_vec();
        let outcome = table.upkeep(110);

        let moved: Vec<usize> = outcome.migrations.iter().map(|m| m.bucket).collect();
        let expected_moved: Vec<usize> = [1, 3, 5, 7, 9]
            .into_iter()
            .chain([21, 23, 25, 27, 29, 31])
            .chain([43, 45, 47, 49, 51])
            .collect();
        assert_eq!(moved, expected_moved);
        assert_eq!(moved.len(), 16);
        for migration in &outcome.migrations {
            assert_eq!(migration.to, Some(4));
            assert_eq!(migration.reason, MigrationReason::Idle);
            assert!(!migration.is_forced());
        }
        // No busy (even) bucket moved, and nothing else changed.
        for (bucket, (old, new)) in before.iter().zip(table.buckets()).enumerate() {
            if !expected_moved.contains(&bucket) {
                assert_eq!(old, new);
            }
        }
        assert!(outcome.balanced);
        assert_eq!(outcome.next_upkeep_at, None);
        assert_eq!(table.unbalanced_since(), None);
        assert_counts_equal_wants(&table);
        assert_consistent(&table);
    }

    #[test]
    fn zero_idle_timer_rehashes_at_once_on_addition() {
        let config = TableConfig::new(64, 0, 0);
        let mut table = BucketTable::new(config, &equal_group(1..=3), 0).unwrap();
        // Even buckets used at this very instant are idle with a zero timer.
        table.set_last_used(&[50; 64]).unwrap();
        let outcome = table.set_members(&equal_group(1..=4), 50).unwrap();
        assert_eq!(outcome.migrations.len(), 16);
        assert!(outcome.migrations.iter().all(|m| m.to == Some(4)));
        assert!(outcome.balanced);
        assert_eq!(table.held_counts(), &[16; 4]);
        assert_consistent(&table);
    }

    #[test]
    fn unbalanced_timer_forces_busy_buckets_after_it_expires_and_not_before() {
        let config = TableConfig::new(64, 1_000, 50);
        let mut table = BucketTable::new(config, &equal_group(1..=3), 0).unwrap();
        table.set_last_used(&[90; 64]).unwrap();

        let outcome = table.set_members(&equal_group(1..=4), 100).unwrap();
        assert!(outcome.migrations.is_empty());
        assert_eq!(table.unbalanced_since(), Some(100));
        // The force applies strictly after since + timer, as in the kernel.
        assert_eq!(outcome.next_upkeep_at, Some(151));

        // A reweight while still unbalanced does not restart the clock.
        let outcome = table
            .set_members(&group(&[(1, 1), (2, 1), (3, 1), (4, 2)]), 120)
            .unwrap();
        assert!(outcome.migrations.is_empty());
        assert_eq!(table.unbalanced_since(), Some(100));
        table.set_members(&equal_group(1..=4), 130).unwrap();
        assert_eq!(table.unbalanced_since(), Some(100));

        for time in [140, 150] {
            table.set_last_used(&[time; 64]).unwrap();
            let outcome = table.upkeep(time);
            assert!(outcome.migrations.is_empty(), "forced too early at {time}");
            assert_eq!(outcome.next_upkeep_at, Some(151));
        }
        table.set_last_used(&[151; 64]).unwrap();
        let outcome = table.upkeep(151);
        let moved: Vec<usize> = outcome.migrations.iter().map(|m| m.bucket).collect();
        // The first buckets (index order) of each overweight member: 5 of nh 3, 6 of nh 2, 5 of nh 1.
        let expected: Vec<usize> = (0..5).chain(21..27).chain(43..48).collect();
        assert_eq!(moved, expected);
        assert!(outcome.migrations.iter().all(|m| {
            m.reason == MigrationReason::UnbalancedTimerExpired && m.is_forced() && m.to == Some(4)
        }));
        assert!(outcome.balanced);
        assert_eq!(table.unbalanced_since(), None);
        assert_counts_equal_wants(&table);
        assert_consistent(&table);
    }

    #[test]
    fn weight_change_moves_only_the_difference_from_overweight_members() {
        let config = TableConfig::new(128, 0, 0);
        let mut table = BucketTable::new(config, &equal_group(1..=4), 0).unwrap();
        let before = table.buckets().to_vec();
        let outcome = table
            .set_members(&group(&[(1, 2), (2, 1), (3, 1), (4, 1)]), 10)
            .unwrap();
        // Total weight 5: bounds 51, 77, 102, 128.
        assert_eq!(table.wanted_counts(), &[51, 26, 25, 26]);
        assert_eq!(table.held_counts(), &[51, 26, 25, 26]);
        assert_eq!(outcome.migrations.len(), 19);
        let mut given_up = BTreeMap::new();
        for m in &outcome.migrations {
            assert_eq!(m.to, Some(1));
            *given_up.entry(m.from.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(given_up, BTreeMap::from([(2, 6), (3, 7), (4, 6)]));
        // Member 1 was underweight: none of its buckets changed.
        for (old, new) in before.iter().zip(table.buckets()) {
            if *old == Some(1) {
                assert_eq!(*new, Some(1));
            }
        }
        assert_consistent(&table);

        // Dropping the weight back moves buckets away from 1 only.
        let outcome = table.set_members(&equal_group(1..=4), 20).unwrap();
        assert_eq!(outcome.migrations.len(), 19);
        assert!(outcome.migrations.iter().all(|m| m.from == Some(1)));
        assert_eq!(table.held_counts(), &[32; 4]);
    }

    #[test]
    fn removing_every_member_unassigns_every_bucket() {
        let config = TableConfig::new(128, 1_000, 0);
        let mut table = BucketTable::new(config, &equal_group(1..=4), 0).unwrap();
        table.set_last_used(&[5; 128]).unwrap();
        let before = table.buckets().to_vec();
        let outcome = table.set_members(&[], 10).unwrap();
        assert_eq!(outcome.migrations.len(), 128);
        for (m, old) in outcome.migrations.iter().zip(&before) {
            assert_eq!(m.from, *old);
            assert_eq!(m.to, None);
            assert_eq!(m.reason, MigrationReason::OwnerRemoved);
        }
        assert!(table.buckets().iter().all(Option::is_none));
        assert!(outcome.balanced);
        assert_eq!(outcome.next_upkeep_at, None);
        assert!(table.upkeep(20).migrations.is_empty());
        assert_consistent(&table);

        // Re-adding members (links back up) is an ordinary fill of unassigned buckets.
        let outcome = table.set_members(&equal_group([5, 6]), 30).unwrap();
        assert_eq!(outcome.migrations.len(), 128);
        assert!(outcome
            .migrations
            .iter()
            .all(|m| m.from.is_none() && m.reason == MigrationReason::Unassigned));
        assert_eq!(table.held_counts(), &[64, 64]);
        assert_consistent(&table);
    }

    #[test]
    fn single_member_owns_every_bucket_and_shares_on_addition() {
        let config = TableConfig::new(128, 0, 0);
        let mut table = BucketTable::new(config, &[Member::new(7, 3)], 0).unwrap();
        assert_eq!(table.buckets(), vec![Some(7); 128].as_slice());
        assert_eq!(table.held_counts(), &[128]);
        let outcome = table.set_members(&group(&[(7, 3), (8, 3)]), 1).unwrap();
        assert_eq!(outcome.migrations.len(), 64);
        assert_eq!(table.held_counts(), &[64, 64]);
        // Only the first 64 buckets (index order) moved.
        assert!(outcome
            .migrations
            .iter()
            .enumerate()
            .all(|(i, m)| m.bucket == i));
    }

    #[test]
    fn single_bucket_table_follows_the_rounding() {
        let config = TableConfig::new(1, 0, 0);
        let mut table = BucketTable::new(config, &equal_group([1, 2]), 0).unwrap();
        assert_eq!(table.wanted_counts(), &[1, 0]);
        assert_eq!(table.buckets(), &[Some(1)]);

        let outcome = table.set_members(&equal_group([2]), 1).unwrap();
        assert_eq!(table.buckets(), &[Some(2)]);
        assert_eq!(outcome.migrations[0].reason, MigrationReason::OwnerRemoved);

        // Order decides the rounding: [2, 1] keeps the bucket on 2 ...
        let outcome = table.set_members(&equal_group([2, 1]), 2).unwrap();
        assert!(outcome.migrations.is_empty());
        assert_eq!(table.wanted_counts(), &[1, 0]);
        // ... while [1, 2] wants it on 1.
        table.set_members(&equal_group([1, 2]), 3).unwrap();
        assert_eq!(table.buckets(), &[Some(1)]);
        assert_consistent(&table);
    }

    #[test]
    fn large_table_with_64_members() {
        let config = TableConfig::new(MAX_BUCKETS, 1_000, 0);
        let members = equal_group(1..=64);
        let mut table = BucketTable::new(config, &members, 0).unwrap();
        assert_eq!(table.held_counts(), vec![64; 64].as_slice());
        table.set_last_used(&vec![5; MAX_BUCKETS]).unwrap();
        let before = table.buckets().to_vec();

        let remaining: Vec<Member> = members
            .iter()
            .copied()
            .filter(|m| m.next_hop != 10)
            .collect();
        let outcome = table.set_members(&remaining, 10).unwrap();
        assert_eq!(outcome.migrations.len(), 64);
        // 4096/63 = 65.016: the 32nd member's bound is the first to round up.
        let mut expected_wants = vec![65u32; 63];
        expected_wants[31] = 66;
        assert_eq!(table.wanted_counts(), expected_wants.as_slice());
        assert_counts_equal_wants(&table);
        for (old, new) in before.iter().zip(table.buckets()) {
            if *old != Some(10) {
                assert_eq!(old, new);
            }
        }
        assert_consistent(&table);
    }

    #[test]
    fn random_sequences_with_zero_idle_timer_always_balance_and_only_move_excess() {
        let mut rng = XorShift64(0x9e37_79b9_7f4a_7c15);
        for _sequence in 0..300 {
            let bucket_count = [1, 2, 7, 64, 128, 257][rng.below(6) as usize];
            let unbalanced_timer = [0, 5][rng.below(2) as usize];
            let config = TableConfig::new(bucket_count, 0, unbalanced_timer);
            let mut now = rng.below(1_000);
            let mut table = BucketTable::new(config, &random_members(&mut rng), now).unwrap();
            for _op in 0..25 {
                now += rng.below(10);
                for _ in 0..rng.below(20) {
                    table
                        .mark_used(rng.below(bucket_count as u64) as usize, now)
                        .unwrap();
                }
                let members = random_members(&mut rng);
                let before = table.buckets().to_vec();
                let positions: HashMap<u32, usize> = members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.next_hop, i))
                    .collect();
                let wanted = wanted_bucket_counts(bucket_count, &members);
                let mut held_before = vec![0u32; members.len()];
                for owner in before.iter().flatten() {
                    if let Some(&p) = positions.get(owner) {
                        held_before[p] += 1;
                    }
                }

                let outcome = table.set_members(&members, now).unwrap();
                assert_consistent(&table);
                assert!(outcome.balanced);
                assert_eq!(outcome.next_upkeep_at, None);
                if members.is_empty() {
                    assert!(table.buckets().iter().all(Option::is_none));
                    continue;
                }
                assert_counts_equal_wants(&table);

                let mut moved_from = vec![0u32; members.len()];
                let mut moved_to = vec![0u32; members.len()];
                for m in &outcome.migrations {
                    assert_eq!(before[m.bucket], m.from);
                    match m.from.and_then(|nh| positions.get(&nh)) {
                        Some(&p) => {
                            assert!(held_before[p] > wanted[p], "moved off a non-overweight hop");
                            moved_from[p] += 1;
                        }
                        None => assert!(m.reason != MigrationReason::Idle),
                    }
                    moved_to[positions[&m.to.unwrap()]] += 1;
                }
                for p in 0..members.len() {
                    assert_eq!(moved_from[p], held_before[p].saturating_sub(wanted[p]));
                    assert_eq!(moved_to[p], wanted[p].saturating_sub(held_before[p]));
                }
                // Every bucket not reported as migrated is untouched.
                let migrated: Vec<usize> = outcome.migrations.iter().map(|m| m.bucket).collect();
                for (bucket, (old, new)) in before.iter().zip(table.buckets()).enumerate() {
                    if !migrated.contains(&bucket) {
                        assert_eq!(old, new);
                    }
                }
            }
        }
    }

    #[test]
    fn random_sequences_with_timers_only_move_migratable_buckets() {
        let mut rng = XorShift64(0x2545_f491_4f6c_dd1d);
        for _sequence in 0..200 {
            let bucket_count = [1, 5, 64, 128][rng.below(4) as usize];
            let idle_timer = 20;
            let unbalanced_timer = [0, 50][rng.below(2) as usize];
            let config = TableConfig::new(bucket_count, idle_timer, unbalanced_timer);
            let mut now = 0;
            let mut table = BucketTable::new(config, &random_members(&mut rng), now).unwrap();
            for _op in 0..30 {
                now += rng.below(15);
                for _ in 0..rng.below(40) {
                    table
                        .mark_used(rng.below(bucket_count as u64) as usize, now)
                        .unwrap();
                }
                let snapshot = table.clone();
                let outcome = if rng.below(3) == 0 {
                    table.set_members(&random_members(&mut rng), now).unwrap()
                } else {
                    table.upkeep(now)
                };
                assert_consistent(&table);
                check_moves_were_allowed(&snapshot, &table, &outcome, now);

                // The schedule is exact: nothing is due before next_upkeep_at, something is at it.
                if let Some(next) = outcome.next_upkeep_at {
                    assert!(next > now);
                    let mut early = table.clone();
                    assert!(early.upkeep(next - 1).migrations.is_empty());
                    let mut due = table.clone();
                    assert!(!due.upkeep(next).migrations.is_empty());
                }
            }
            // Left alone past the idle timer, every table settles.
            now += idle_timer;
            let outcome = table.upkeep(now);
            assert!(outcome.balanced);
            if !table.members().is_empty() {
                assert_counts_equal_wants(&table);
            }
        }
    }

    /// Each move in `outcome` must be one the kernel would make from `before` at `now`.
    fn check_moves_were_allowed(
        before: &BucketTable,
        after: &BucketTable,
        outcome: &UpkeepOutcome,
        now: u64,
    ) {
        let members = after.members();
        let positions: HashMap<u32, usize> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.next_hop, i))
            .collect();
        // Holdings under the new shares, before any move.
        let mut held = vec![0u32; members.len()];
        for owner in before.buckets().iter().flatten() {
            if let Some(&p) = positions.get(owner) {
                held[p] += 1;
            }
        }
        let wanted = after.wanted_counts();
        let unbalanced_since = after.unbalanced_since().or(before.unbalanced_since());
        let mut migrated = vec![false; before.bucket_count()];
        for m in &outcome.migrations {
            migrated[m.bucket] = true;
            assert_eq!(before.buckets()[m.bucket], m.from);
            if let Some(&p) = m.from.and_then(|nh| positions.get(&nh)) {
                assert!(
                    held[p] > wanted[p],
                    "moved a bucket off a non-overweight hop"
                );
                held[p] -= 1;
                match m.reason {
                    MigrationReason::Idle => {
                        let fresh = before.migrated_at[m.bucket]
                            .is_some_and(|t| before.last_used()[m.bucket] <= t);
                        let idle_for = now.saturating_sub(before.last_used()[m.bucket]);
                        assert!(fresh || idle_for >= before.config().idle_timer);
                    }
                    MigrationReason::UnbalancedTimerExpired => {
                        let timer = before.config().unbalanced_timer;
                        assert!(timer > 0);
                        assert!(now > unbalanced_since.unwrap() + timer);
                    }
                    other => panic!("member bucket moved for {other:?}"),
                }
            } else {
                assert!(m.is_forced());
            }
            if let Some(to) = m.to {
                let p = positions[&to];
                assert!(
                    held[p] < wanted[p],
                    "gave a bucket to a non-underweight hop"
                );
                held[p] += 1;
            }
        }
        for (bucket, was_migrated) in migrated.iter().enumerate() {
            if !was_migrated {
                assert_eq!(before.buckets()[bucket], after.buckets()[bucket]);
            }
        }
    }

    #[test]
    fn freshly_migrated_buckets_are_idle_until_used() {
        let config = TableConfig::new(64, 1_000, 0);
        // Never used since the initial fill: an addition moves buckets at once.
        let mut unused = BucketTable::new(config, &equal_group(1..=3), 0).unwrap();
        assert_eq!(
            unused
                .set_members(&equal_group(1..=4), 1)
                .unwrap()
                .migrations
                .len(),
            16
        );

        // The same table with one use per bucket keeps every bucket.
        let mut used = BucketTable::new(config, &equal_group(1..=3), 0).unwrap();
        for bucket in 0..64 {
            used.mark_used(bucket, 1).unwrap();
        }
        let outcome = used.set_members(&equal_group(1..=4), 2).unwrap();
        assert!(outcome.migrations.is_empty());
        assert_eq!(outcome.next_upkeep_at, Some(1_001));
    }

    #[test]
    fn mark_used_never_moves_a_clock_backwards_but_set_last_used_does() {
        let mut table = BucketTable::new(TableConfig::new(4, 10, 0), &equal_group([1]), 0).unwrap();
        table.mark_used(2, 50).unwrap();
        table.mark_used(2, 40).unwrap();
        assert_eq!(table.last_used(), &[0, 0, 50, 0]);
        table.set_last_used(&[7, 8, 9, 10]).unwrap();
        assert_eq!(table.last_used(), &[7, 8, 9, 10]);
    }

    #[test]
    fn from_assignment_mirrors_without_moving_and_assign_tracks_balance() {
        let config = TableConfig::new(8, 60, 0);
        let members = equal_group([1, 2]);
        let kernel: Vec<Option<u32>> = [2, 2, 2, 2, 1, 1, 1, 1].map(Some).to_vec();
        let mut table = BucketTable::from_assignment(config, &members, &kernel, 100).unwrap();
        assert_eq!(table.buckets(), kernel.as_slice());
        assert!(table.is_balanced());
        assert!(table.upkeep(100).migrations.is_empty());

        // Mirrored buckets count as busy at `now`: a reweight waits for the idle timer.
        let outcome = table.set_members(&group(&[(1, 3), (2, 1)]), 110).unwrap();
        assert!(outcome.migrations.is_empty());
        assert_eq!(outcome.next_upkeep_at, Some(160));
        assert_eq!(table.upkeep(160).migrations.len(), 2);
        assert_consistent(&table);

        // A kernel bucket notification mirrored with assign(); the table notices the imbalance.
        table.assign(7, Some(2), 170).unwrap();
        assert_eq!(table.held_counts(), &[5, 3]);
        assert_eq!(table.unbalanced_since(), Some(170));
        assert_consistent(&table);
        // Buckets 2 and 3 carry flows; the reassigned bucket 7 saw no traffic since, so
        // it is idle at once and is the one that moves back.
        table.mark_used(2, 170).unwrap();
        table.mark_used(3, 170).unwrap();
        let outcome = table.upkeep(171);
        assert_eq!(
            outcome.migrations,
            vec![Migration {
                bucket: 7,
                from: Some(2),
                to: Some(1),
                reason: MigrationReason::Idle
            }]
        );

        // A dump naming a next hop that has left: the mirror moves it on the next upkeep.
        let stale: Vec<Option<u32>> = [9, 2, 2, 2, 1, 1, 1, 1].map(Some).to_vec();
        let mut table = BucketTable::from_assignment(config, &members, &stale, 0).unwrap();
        assert!(!table.is_balanced());
        assert_eq!(table.next_upkeep_at(0), Some(0));
        let outcome = table.upkeep(0);
        assert_eq!(
            outcome.migrations,
            vec![Migration {
                bucket: 0,
                from: Some(9),
                to: Some(2),
                reason: MigrationReason::OwnerRemoved
            }]
        );
        assert!(outcome.balanced);
    }

    #[test]
    fn invalid_input_is_rejected_and_changes_nothing() {
        let members = equal_group([1, 2]);
        for bad in [0, MAX_BUCKETS + 1] {
            assert_eq!(
                BucketTable::new(TableConfig::new(bad, 0, 0), &members, 0),
                Err(ResilientError::BucketCountOutOfRange { requested: bad })
            );
        }
        let config = TableConfig::new(DEFAULT_BUCKETS, 0, 0);
        assert_eq!(
            BucketTable::new(config, &group(&[(1, 1), (2, 0)]), 0),
            Err(ResilientError::ZeroWeight { next_hop: 2 })
        );
        assert_eq!(
            BucketTable::new(config, &group(&[(1, 1), (1, 2)]), 0),
            Err(ResilientError::DuplicateMember { next_hop: 1 })
        );
        assert_eq!(
            BucketTable::from_assignment(config, &members, &[None; 3], 0),
            Err(ResilientError::LengthMismatch {
                expected: 128,
                actual: 3
            })
        );

        let mut table = BucketTable::new(config, &members, 0).unwrap();
        let before = table.clone();
        assert!(table.set_members(&group(&[(3, 1), (3, 1)]), 5).is_err());
        assert_eq!(
            table.mark_used(128, 5),
            Err(ResilientError::BucketIndexOutOfRange {
                index: 128,
                bucket_count: 128
            })
        );
        assert!(table.assign(200, Some(1), 5).is_err());
        assert!(table.set_last_used(&[1; 127]).is_err());
        assert_eq!(table, before);
        assert!(ResilientError::ZeroWeight { next_hop: 2 }
            .to_string()
            .contains("weight 0"));
    }

    #[test]
    fn modulo_slots_remap_unrelated_flows_where_resilient_buckets_do_not() {
        assert_eq!(
            modulo_slots(&group(&[(1, 2), (2, 1), (3, 3)])),
            vec![1, 1, 2, 3, 3, 3]
        );
        assert!(modulo_slots(&[]).is_empty());

        let before_slots = modulo_slots(&equal_group(1..=4));
        let after_slots = modulo_slots(&equal_group([1, 2, 4]));
        let mut table =
            BucketTable::new(TableConfig::new(128, 1_000, 0), &equal_group(1..=4), 0).unwrap();
        table.set_last_used(&[5; 128]).unwrap();
        let resilient_before = table.buckets().to_vec();
        table.set_members(&equal_group([1, 2, 4]), 10).unwrap();

        let (mut unrelated, mut modulo_remapped, mut resilient_remapped) = (0, 0, 0);
        for hash in 0..12_000usize {
            let old = before_slots[hash % before_slots.len()];
            if old == 3 {
                continue; // flows of the removed hop must move under any scheme
            }
            unrelated += 1;
            if after_slots[hash % after_slots.len()] != old {
                modulo_remapped += 1;
            }
            let bucket = hash % table.bucket_count();
            if resilient_before[bucket] != Some(3)
                && table.buckets()[bucket] != resilient_before[bucket]
            {
                resilient_remapped += 1;
            }
        }
        assert_eq!(unrelated, 9_000);
        // Per 12 hashes, 6 of the 9 flows not on hop 3 change next hop under hash-mod-N.
        assert_eq!(modulo_remapped, 6_000);
        assert_eq!(resilient_remapped, 0);
    }
}
