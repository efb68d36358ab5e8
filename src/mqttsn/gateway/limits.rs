//! Token buckets for per-source packet rates and GWINFO answers.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate >= burst
    }
}

/// One bucket per source, at most `cap` sources tracked. When the table is full, idle
/// (refilled) sources are forgotten first, then the older half: a flood from many spoofed
/// addresses costs bounded memory and never leaves a newcomer without a bucket (a shared
/// overflow bucket would let the flood lock real clients out).
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    cap: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate: f64, burst: f64, cap: usize, _now: Instant) -> Self {
        RateLimiter {
            rate,
            burst,
            cap: cap.max(2),
            buckets: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        if let Some(b) = self.buckets.get_mut(key) {
            return b.take(rate, burst, now);
        }
        if self.buckets.len() >= self.cap {
            self.buckets.retain(|_, b| !b.is_full(rate, burst, now));
        }
        if self.buckets.len() >= self.cap {
            let mut lasts: Vec<Instant> = self.buckets.values().map(|b| b.last).collect();
            let mid = lasts.len() / 2;
            let (_, median, _) = lasts.select_nth_unstable(mid);
            let median = *median;
            self.buckets.retain(|_, b| b.last > median);
        }
        let mut b = Bucket::new(burst, now);
        let ok = b.take(rate, burst, now);
        self.buckets.insert(key.clone(), b);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2.0, t0);
        assert!(b.take(1.0, 2.0, t0));
        assert!(b.take(1.0, 2.0, t0));
        assert!(!b.take(1.0, 2.0, t0));
        assert!(b.take(1.0, 2.0, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn table_is_bounded_and_newcomers_get_a_bucket() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1.0, 1.0, 100, t0);
        assert!(r.allow(&0u32, t0));
        assert!(!r.allow(&0u32, t0), "a tracked source is limited");
        for k in 1..10_000u32 {
            let t = t0 + Duration::from_micros(u64::from(k));
            assert!(r.allow(&k, t), "every new source gets its own burst");
            assert!(r.len() <= 100);
        }
        // once refilled, idle sources are forgotten to make room
        let t1 = t0 + Duration::from_secs(5);
        assert!(r.allow(&77_777u32, t1));
        assert!(r.len() <= 100);
    }
}
