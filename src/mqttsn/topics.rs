//! Topic names, filters and the per-client topic id registry.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A topic name a client may publish to: non-empty, no wildcards, no NUL.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['+', '#', '\0'])
}

/// A subscription filter: `+` fills a whole level, `#` only as the whole last level.
pub fn valid_filter(s: &str) -> bool {
    if s.is_empty() || s.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = s.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, l)| {
        if l.contains('#') {
            *l == "#" && i == last
        } else {
            !l.contains('+') || *l == "+"
        }
    })
}

/// MQTT filter matching; wildcards at the first level do not match `$`-topics.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does `filter` only ever match topics under `prefix`? Used for per-client allowed prefixes:
/// a filter is allowed if its literal part starts with the prefix.
pub fn filter_within(filter: &str, prefix: &str) -> bool {
    let literal = filter.split(['+', '#']).next().unwrap_or("");
    literal.starts_with(prefix) && (literal.len() >= prefix.len())
}

/// Predefined topic ids from the configuration, shared by all clients.
#[derive(Debug, Default, Clone)]
pub struct Predefined {
    by_id: BTreeMap<u16, Arc<str>>,
    by_name: HashMap<Arc<str>, u16>,
}

impl Predefined {
    pub fn new(map: &BTreeMap<u16, String>) -> Predefined {
        let mut p = Predefined::default();
        for (id, name) in map {
            let n: Arc<str> = name.as_str().into();
            p.by_id.insert(*id, n.clone());
            p.by_name.insert(n, *id);
        }
        p
    }
    pub fn name(&self, id: u16) -> Option<&Arc<str>> {
        self.by_id.get(&id)
    }
    pub fn id(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }
    pub fn contains_id(&self, id: u16) -> bool {
        self.by_id.contains_key(&id)
    }
}

/// The registry is full: the client has as many topic ids as it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// Normal topic ids of one client (both directions share it). Ids avoid the predefined ones
/// so a confused client cannot mix the two namespaces up.
#[derive(Debug, Default)]
pub struct TopicTable {
    by_id: HashMap<u16, Arc<str>>,
    by_name: HashMap<Arc<str>, u16>,
    next: u16,
}

impl TopicTable {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
    pub fn name(&self, id: u16) -> Option<&Arc<str>> {
        self.by_id.get(&id)
    }
    pub fn id(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }
    pub fn clear(&mut self) {
        self.by_id.clear();
        self.by_name.clear();
    }

    /// Returns the id of `name`, assigning a new one if needed (at most `limit` ids).
    pub fn register(
        &mut self,
        name: &str,
        limit: usize,
        predefined: &Predefined,
    ) -> Result<u16, TableFull> {
        if let Some(id) = self.id(name) {
            return Ok(id);
        }
        if self.by_id.len() >= limit {
            return Err(TableFull);
        }
        // At most `limit + predefined` ids are skipped, so this loop is short.
        loop {
            self.next = self.next.wrapping_add(1);
            let id = self.next;
            if id == 0 || id == 0xFFFF || predefined.contains_id(id) || self.by_id.contains_key(&id)
            {
                continue;
            }
            let n: Arc<str> = name.into();
            self.by_id.insert(id, n.clone());
            self.by_name.insert(n, id);
            return Ok(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/b", "a/b", true),
            ("+/+", "a", false),
            ("a/b", "a/c", false),
            ("a//b", "a//b", true),
            ("+", "", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b/c", "a/b", false),
        ];
        for (f, t, m) in cases {
            assert_eq!(matches(f, t), m, "{f} vs {t}");
        }
    }

    #[test]
    fn filter_and_name_validity() {
        for ok in ["a", "a/+/b", "#", "a/#", "+", "+/+"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a", "a\0"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(valid_name("a/b"));
        for bad in ["", "a/+", "#", "x\0"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(filter_within("site/n1/temp", "site/n1/"));
        assert!(filter_within("site/n1/#", "site/n1/"));
        assert!(!filter_within("site/#", "site/n1/"));
        assert!(!filter_within("+/n1/x", "site/n1/"));
        assert!(filter_within("anything", ""));
    }

    #[test]
    fn registry_limits_and_skips_predefined() {
        let mut m = BTreeMap::new();
        m.insert(1u16, "pre/one".to_string());
        m.insert(2u16, "pre/two".to_string());
        let p = Predefined::new(&m);
        assert_eq!(p.id("pre/two"), Some(2));
        assert_eq!(p.name(1).map(|s| &**s), Some("pre/one"));
        let mut t = TopicTable::default();
        let a = t.register("a", 2, &p).unwrap();
        assert_eq!(a, 3);
        assert_eq!(t.register("a", 2, &p), Ok(3));
        let b = t.register("b", 2, &p).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.register("c", 2, &p), Err(TableFull));
        assert_eq!(t.name(b).map(|s| &**s), Some("b"));
        assert_eq!(t.len(), 2);
        t.clear();
        assert!(t.is_empty());
    }
}
