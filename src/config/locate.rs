//! Maps a path in the configuration tree (`devices[2].points[0].name`) back to the line and
//! column of the YAML text it came from, so that checks done after parsing (duplicate names,
//! unknown buses, bad ranges) still point at the right place in the file.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{Event, Parser};

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into the configuration tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Path(pub Vec<Seg>);

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }

    pub fn key(&self, k: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Appends a path written as text (`points[2].address`), as source modules report them.
    pub fn join_str(&self, rel: &str) -> Path {
        let mut p = self.clone();
        for part in rel.split('.').filter(|s| !s.is_empty()) {
            let (name, rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !name.is_empty() {
                p.0.push(Seg::Key(name.to_string()));
            }
            for idx in rest.split('[').filter(|s| !s.is_empty()) {
                match idx.trim_end_matches(']').parse() {
                    Ok(i) => p.0.push(Seg::Index(i)),
                    Err(_) => p.0.push(Seg::Key(idx.trim_end_matches(']').to_string())),
                }
            }
        }
        p
    }

    pub fn join(&self, other: &Path) -> Path {
        let mut p = self.clone();
        p.0.extend(other.0.iter().cloned());
        p
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

/// Where each node and each mapping key of a YAML document starts.
#[derive(Debug, Default)]
pub struct LocationIndex {
    values: HashMap<Path, Loc>,
    keys: HashMap<Path, Loc>,
}

enum Frame {
    Seq {
        path: Path,
        next: usize,
    },
    Map {
        path: Path,
        pending_key: Option<String>,
    },
}

impl LocationIndex {
    /// Builds the index. A document the parser rejects gives an empty index; the
    /// deserializer reports that error with its own location.
    pub fn build(text: &str) -> LocationIndex {
        let mut idx = LocationIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let loc = Loc {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, pending_key }) = stack.last_mut()
                        && pending_key.is_none()
                    {
                        let p = path.key(&value);
                        idx.keys.entry(p).or_insert(loc);
                        *pending_key = Some(value.into_owned());
                        continue;
                    }
                    let p = idx.child_path(&mut stack);
                    idx.values.entry(p).or_insert(loc);
                }
                Event::Alias(_) => {
                    let p = idx.child_path(&mut stack);
                    idx.values.entry(p).or_insert(loc);
                }
                Event::SequenceStart(..) => {
                    let p = idx.child_path(&mut stack);
                    idx.values.entry(p.clone()).or_insert(loc);
                    stack.push(Frame::Seq { path: p, next: 0 });
                }
                Event::MappingStart(..) => {
                    let p = idx.child_path(&mut stack);
                    idx.values.entry(p.clone()).or_insert(loc);
                    stack.push(Frame::Map {
                        path: p,
                        pending_key: None,
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        idx
    }

    /// The path of the node that starts now, advancing the parent's position.
    fn child_path(&self, stack: &mut [Frame]) -> Path {
        match stack.last_mut() {
            None => Path::root(),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                p
            }
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some(k) => path.key(&k),
                // A complex (non-scalar) key: give it a path that never matches a real one.
                None => path.key("\u{0}complex-key"),
            },
        }
    }

    /// Location of the node at `path`, or of its nearest ancestor that is known.
    pub fn value(&self, path: &Path) -> Option<Loc> {
        let mut p = path.clone();
        loop {
            if let Some(l) = self.values.get(&p) {
                return Some(*l);
            }
            p.0.pop()?;
        }
    }

    /// Location of the key that introduces `path` (falls back to the value's location).
    pub fn key(&self, path: &Path) -> Option<Loc> {
        self.keys.get(path).copied().or_else(|| self.value(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "gateway:\n  id: pi\ndevices:\n  - name: a\n    points:\n      - { name: v, address: 3 }\n  - name: b\n";

    #[test]
    fn finds_values_and_keys() {
        let idx = LocationIndex::build(DOC);
        let p = Path::root()
            .key("devices")
            .index(0)
            .key("points")
            .index(0)
            .key("address");
        assert_eq!(idx.value(&p), Some(Loc { line: 6, col: 29 }));
        assert_eq!(idx.key(&p), Some(Loc { line: 6, col: 20 }));
        let p = Path::root().key("devices").index(1).key("name");
        assert_eq!(idx.value(&p), Some(Loc { line: 7, col: 11 }));
        assert_eq!(
            idx.key(&Path::root().key("gateway")),
            Some(Loc { line: 1, col: 1 })
        );
    }

    #[test]
    fn unknown_path_falls_back_to_ancestor() {
        let idx = LocationIndex::build(DOC);
        let p = Path::root().key("devices").index(1).key("nothing");
        assert_eq!(idx.value(&p), Some(Loc { line: 7, col: 5 }));
    }

    #[test]
    fn path_text_round_trip() {
        let p = Path::root()
            .key("devices")
            .index(2)
            .join_str("points[1].address");
        assert_eq!(p.to_string(), "devices[2].points[1].address");
    }
}
