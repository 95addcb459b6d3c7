//! What Redis returned lately, kept beside a listener's store for what is left of each blob's lifetime (its Redis
//! TTL when it was read), so that a session id offered again costs Redis nothing: a client that moved to this
//! node after its own died resumes here again and again, and an attacker who replays an id it saw in clear gets
//! one Redis read for it, however often it replays.
//!
//! Never in the store itself: OTP keeps its own order tree of what it inserted into a listener's store, and
//! crashes its cache process when the store holds or reports anything else. The blobs kept are sealed, as Redis
//! holds them: nothing here is a secret in clear. At most `max` blobs; the oldest goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

pub struct Recent {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<Vec<u8>, (Instant, Vec<u8>)>,
    /// Keys in the order they came; a key may be here twice after it expired and came again, or already gone
    /// from `blobs`.
    order: VecDeque<Vec<u8>>,
}

impl Recent {
    pub fn new(max: usize) -> Recent {
        Recent {
            max: max.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The blob kept under `key`, if it is still alive at `now`.
    pub fn get(&self, key: &[u8], now: Instant) -> Option<Vec<u8>> {
        let mut inner = crate::locked(&self.inner);
        match inner.blobs.get(key) {
            Some((until, blob)) if *until > now => Some(blob.clone()),
            Some(_) => {
                inner.blobs.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `blob` under `key` until `until`, making room by dropping the oldest.
    pub fn put(&self, key: &[u8], blob: Vec<u8>, until: Instant) {
        let mut inner = crate::locked(&self.inner);
        let inner = &mut *inner;
        if inner.blobs.insert(key.to_vec(), (until, blob)).is_none() {
            inner.order.push_back(key.to_vec());
        }
        while inner.blobs.len() > self.max {
            match inner.order.pop_front() {
                Some(oldest) => {
                    inner.blobs.remove(&oldest);
                }
                None => break,
            }
        }
        if inner.order.len() > 2 * self.max {
            let Inner { blobs, order } = inner;
            let mut seen = std::collections::HashSet::new();
            order.retain(|key| blobs.contains_key(key) && seen.insert(key.clone()));
        }
    }

    pub fn len(&self) -> usize {
        crate::locked(&self.inner).blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_blob_is_kept_until_its_time_and_no_longer() {
        let recent = Recent::new(4);
        let now = Instant::now();
        recent.put(b"a", b"blob".to_vec(), now + Duration::from_secs(10));
        assert_eq!(recent.get(b"a", now), Some(b"blob".to_vec()));
        assert_eq!(
            recent.get(b"a", now + Duration::from_secs(9)),
            Some(b"blob".to_vec())
        );
        assert_eq!(recent.get(b"a", now + Duration::from_secs(10)), None);
        assert!(recent.is_empty());
    }

    #[test]
    fn it_holds_at_most_max_blobs_dropping_the_oldest() {
        let recent = Recent::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        for i in 0..10u8 {
            recent.put(&[i], vec![i], later);
            assert!(recent.len() <= 3);
        }
        assert_eq!(recent.get(&[6], now), None);
        for i in 7..10u8 {
            assert_eq!(recent.get(&[i], now), Some(vec![i]));
        }
    }

    #[test]
    fn keys_that_expire_and_come_again_do_not_grow_it() {
        let recent = Recent::new(2);
        let now = Instant::now();
        for round in 0..1000u32 {
            let at = now + Duration::from_secs(u64::from(round));
            recent.put(b"k", vec![1], at + Duration::from_millis(500));
            assert_eq!(recent.get(b"k", at + Duration::from_secs(1)), None);
        }
        assert!(crate::locked(&recent.inner).order.len() <= 4);
        recent.put(b"x", vec![2], now + Duration::from_secs(5000));
        recent.put(b"y", vec![3], now + Duration::from_secs(5000));
        assert_eq!(recent.get(b"x", now), Some(vec![2]));
        assert_eq!(recent.get(b"y", now), Some(vec![3]));
    }
}
