//! The one key hasher: every key, fingerprint and signature relspec persists
//! is blake3 over *tagged, length-prefixed parts*, so no two different part
//! lists can produce the same byte stream, and nothing depends on how Rust
//! prints a value (`{:?}`) or on JSON formatting. Enums enter by explicit
//! stable names ([`StableName`]), so renaming a Rust variant changes no key.

/// Builds a key from parts; [`KeyHasher::finish`] gives the hex digest.
#[derive(Debug, Clone)]
pub struct KeyHasher {
    buf: Vec<u8>,
}

/// A value with a name that is part of relspec's persisted format (keys,
/// memos, signatures), independent of its Rust spelling.
pub trait StableName {
    /// The stable name.
    fn stable_name(&self) -> &'static str;
}

impl KeyHasher {
    /// A hasher for keys of one kind; `domain` names the kind and its version
    /// (e.g. `relspec/output-key/v4`), so keys of different kinds never collide.
    pub fn new(domain: &str) -> Self {
        let mut h = KeyHasher { buf: Vec::with_capacity(512) };
        h.str(domain);
        h
    }

    fn len(&mut self, n: usize) {
        self.buf.extend_from_slice(&(n as u64).to_le_bytes());
    }

    /// A string part (length-prefixed).
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    /// A bytes part (length-prefixed).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.len(b.len());
        self.buf.extend_from_slice(b);
        self
    }

    /// A named part: the tag, then the value.
    pub fn field(&mut self, tag: &str, value: &str) -> &mut Self {
        self.str(tag).str(value)
    }

    /// An optional part: a presence byte, then the value if present.
    pub fn opt(&mut self, tag: &str, value: Option<&str>) -> &mut Self {
        self.str(tag);
        match value {
            Some(v) => {
                self.buf.push(1);
                self.str(v)
            }
            None => {
                self.buf.push(0);
                self
            }
        }
    }

    /// A number part.
    pub fn u64(&mut self, tag: &str, v: u64) -> &mut Self {
        self.str(tag);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A boolean part.
    pub fn bool(&mut self, tag: &str, v: bool) -> &mut Self {
        self.str(tag);
        self.buf.push(v as u8);
        self
    }

    /// An enum part, by its stable name.
    pub fn name(&mut self, tag: &str, v: &impl StableName) -> &mut Self {
        self.field(tag, v.stable_name())
    }

    /// A list part: the tag, the count, then each item.
    pub fn list<'a>(&mut self, tag: &str, items: impl ExactSizeIterator<Item = &'a str>) -> &mut Self {
        self.str(tag);
        self.len(items.len());
        for i in items {
            self.str(i);
        }
        self
    }

    /// A map part: the tag, the count, then each key and value (callers pass
    /// entries in a fixed order, e.g. a sorted map's).
    pub fn map<'a>(&mut self, tag: &str, entries: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> &mut Self {
        self.str(tag);
        self.len(entries.len());
        for (k, v) in entries {
            self.str(k).str(v);
        }
        self
    }

    /// The blake3 digest of the parts, as lowercase hex.
    pub fn finish(&self) -> String {
        blake3::hash(&self.buf).to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_boundaries_are_unambiguous() {
        let a = KeyHasher::new("t").str("ab").str("c").finish();
        let b = KeyHasher::new("t").str("a").str("bc").finish();
        assert_ne!(a, b);
        let a = KeyHasher::new("t").list("l", ["a", "b"].into_iter()).str("c").finish();
        let b = KeyHasher::new("t").list("l", ["a"].into_iter()).str("b").str("c").finish();
        assert_ne!(a, b);
        let a = KeyHasher::new("t").opt("o", None).finish();
        let b = KeyHasher::new("t").opt("o", Some("")).finish();
        assert_ne!(a, b);
        assert_ne!(KeyHasher::new("x").finish(), KeyHasher::new("y").finish());
    }

    #[test]
    fn same_parts_same_key() {
        let m = [("a", "1"), ("b", "2")];
        let a = KeyHasher::new("t").map("m", m.into_iter()).bool("f", true).u64("n", 3).finish();
        let b = KeyHasher::new("t").map("m", m.into_iter()).bool("f", true).u64("n", 3).finish();
        assert_eq!(a, b);
    }
}
