//! A new resilient table's bucket count, chosen from its members' weights: the smallest count from a floor (the kernel's 128) up to a ceiling whose rounding error — a member's share of the buckets against its share of the weight — stays within a bound (pure).

use crate::resilient::{wanted_bucket_counts, Member};

/// The rounding error a chosen count keeps within, where a count up to the
/// ceiling allows it: 1% of each member's weight share.
pub const ROUNDING_BOUND: f64 = 0.01;

/// The largest relative rounding error over the members of a table of
/// `buckets` buckets: |held / buckets ÷ weight / total − 1|, with `held` as
/// the allocator shares buckets out (`wanted_bucket_counts`); 0 for no members.
pub fn rounding_error(buckets: usize, members: &[Member]) -> f64 {
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    if total == 0 || buckets == 0 {
        return 0.0;
    }
    wanted_bucket_counts(buckets, members)
        .iter()
        .zip(members)
        .filter(|(_, m)| m.weight > 0)
        .map(|(held, m)| {
            let ideal = buckets as f64 * f64::from(m.weight) / total as f64;
            (f64::from(*held) - ideal).abs() / ideal
        })
        .fold(0.0, f64::max)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The bucket count for a new table of `members`, between `min` and `max`:
/// `min` when its rounding error is within [`ROUNDING_BOUND`]; else the
/// smallest multiple of the weights' total over their common divisor (no
/// rounding at all) that fits; else the smallest count within the bound;
/// else the count with the least error (the smallest of equals). A table
/// keeps its count for life: resizing it would move every flow.
pub fn choose(members: &[Member], min: usize, max: usize) -> usize {
    let max = max.max(min);
    if members.is_empty() || rounding_error(min, members) <= ROUNDING_BOUND {
        return min;
    }
    let g = members
        .iter()
        .map(|m| u64::from(m.weight))
        .filter(|w| *w > 0)
        .fold(0, gcd);
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    if let Some(unit) = total.checked_div(g) {
        let unit = unit as usize;
        let exact = min.div_ceil(unit) * unit;
        if exact <= max {
            return exact;
        }
    }
    let mut best = (rounding_error(min, members), min);
    for n in min + 1..=max {
        let e = rounding_error(n, members);
        if e <= ROUNDING_BOUND {
            return n;
        }
        if e < best.0 {
            best = (e, n);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Member::new(i as u32 + 1, *w))
            .collect()
    }

    #[test]
    fn groups_128_buckets_share_well_keep_128() {
        for w in [
            &[1, 1, 1, 1][..],
            &[1, 3],
            &[1, 2],
            &[11, 45],
            &[50, 16, 16, 16],
        ] {
            let m = members(w);
            assert!(rounding_error(128, &m) <= ROUNDING_BOUND, "{w:?}");
            assert_eq!(choose(&m, 128, 4096), 128, "{w:?}");
        }
    }

    #[test]
    fn equal_members_128_cannot_split_get_an_exact_count() {
        // 128 / 3: 43, 42 and 43 buckets, 1.6% off; 128 / 5 = 25.6: 26 or 25.
        assert!(rounding_error(128, &members(&[1; 3])) > 0.015);
        assert_eq!(choose(&members(&[1; 3]), 128, 4096), 129);
        assert!(rounding_error(128, &members(&[1; 5])) > 0.015);
        assert_eq!(choose(&members(&[1; 5]), 128, 4096), 130);
        assert_eq!(choose(&members(&[1; 6]), 128, 4096), 132);
        assert_eq!(choose(&members(&[2; 6]), 128, 4096), 132);
        assert_eq!(rounding_error(130, &members(&[1; 5])), 0.0);
    }

    #[test]
    fn the_issues_64_members_of_11_and_45() {
        // One member of weight 11 among 63 of 45: 0.49 buckets of 128.
        let mut w = vec![45; 63];
        w.push(11);
        let m = members(&w);
        assert!(rounding_error(128, &m) > 0.4, "{}", rounding_error(128, &m));
        let n = choose(&m, 128, 4096);
        assert_eq!(n, 2846, "the weights' total: no rounding");
        assert_eq!(rounding_error(n, &m), 0.0);
        // Half and half.
        let w: Vec<u32> = (0..64).map(|i| if i % 2 == 0 { 11 } else { 45 }).collect();
        let m = members(&w);
        let n = choose(&m, 128, 4096);
        assert!(rounding_error(n, &m) <= ROUNDING_BOUND, "{n}");
        assert!(n <= 4096);
    }

    #[test]
    fn a_ceiling_too_low_gives_the_least_error_it_allows() {
        let mut w = vec![45; 63];
        w.push(11);
        let m = members(&w);
        let n = choose(&m, 128, 1024);
        assert!((128..=1024).contains(&n));
        let best = (128..=1024)
            .map(|k| rounding_error(k, &m))
            .fold(f64::INFINITY, f64::min);
        assert_eq!(rounding_error(n, &m), best);
        // Fixed (min = max): that count, whatever its error.
        assert_eq!(choose(&m, 128, 128), 128);
    }

    #[test]
    fn every_group_up_to_64_members_is_within_the_bound_where_a_count_allows() {
        // Random weights 1..=100: the chosen count is within the bound
        // whenever any count up to the ceiling is, and never worse than 128.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..300 {
            let len = 1 + next(64) as usize;
            let w: Vec<u32> = (0..len).map(|_| 1 + next(100) as u32).collect();
            let m = members(&w);
            let n = choose(&m, 128, 4096);
            assert!((128..=4096).contains(&n));
            let e = rounding_error(n, &m);
            assert!(e <= rounding_error(128, &m), "{w:?}: {n}");
            let possible = (128..=4096).any(|k| rounding_error(k, &m) <= ROUNDING_BOUND);
            assert_eq!(e <= ROUNDING_BOUND, possible, "{w:?}: {n} ({e})");
        }
    }
}
