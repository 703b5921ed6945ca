//! Text positions: byte offsets (what relspec's diagnostics carry) to and
//! from LSP positions (0-based line, UTF-16 code units), and the word under
//! a cursor.
//!
//! Architecture invariant: every offset handed to the rest of the crate is a
//! char boundary of the text it indexes.

/// Line starts of one text, for offset <-> (line, UTF-16 column) conversion.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Index `text`'s lines.
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// 0-based line and UTF-16 column of byte `offset` (clamped to the text).
    pub fn position(&self, text: &str, offset: usize) -> (u32, u32) {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let col: usize = text[self.starts[line]..offset].chars().map(char::len_utf16).sum();
        (line as u32, col as u32)
    }

    /// Byte offset of 0-based `line` and UTF-16 `col` (clamped to the line).
    pub fn offset(&self, text: &str, line: u32, col: u32) -> usize {
        let Some(&start) = self.starts.get(line as usize) else { return text.len() };
        let end = self.starts.get(line as usize + 1).map(|e| e - 1).unwrap_or(text.len());
        let mut units = 0u32;
        for (i, c) in text[start..end].char_indices() {
            if units >= col {
                return start + i;
            }
            units += c.len_utf16() as u32;
        }
        end
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Characters of a name: SQL identifiers, TOML keys, `$params`.
pub fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The name under (or just before) the cursor at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word<'a> {
    /// The name itself.
    pub text: &'a str,
    /// Its byte range in the file.
    pub start: usize,
    /// End of the name (exclusive).
    pub end: usize,
    /// The name before a `.` right in front of it (`alias` in `alias.col`).
    pub qualifier: Option<&'a str>,
    /// Written as `$name` (a parameter).
    pub param: bool,
}

/// The word at `offset`, if the cursor touches one.
pub fn word_at(text: &str, offset: usize) -> Option<Word<'_>> {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let start = text[..offset].char_indices().rev().take_while(|(_, c)| is_name_char(*c)).last().map(|(i, _)| i);
    let start = start.unwrap_or(offset);
    let end = offset
        + text[offset..].char_indices().take_while(|(_, c)| is_name_char(*c)).map(|(_, c)| c.len_utf8()).sum::<usize>();
    if start == end {
        return None;
    }
    let before = &text[..start];
    let param = before.ends_with('$');
    let qualifier = before.strip_suffix('.').and_then(|b| {
        let q = b.char_indices().rev().take_while(|(_, c)| is_name_char(*c)).last().map(|(i, _)| &b[i..])?;
        (!q.is_empty()).then_some(q)
    });
    Some(Word { text: &text[start..end], start, end, qualifier, param })
}

/// The partial name right before `offset` (for completion) and the qualifier
/// in front of it (`alias.` -> `Some("alias")`).
pub fn prefix_at(text: &str, offset: usize) -> (&str, Option<&str>) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let start = text[..offset]
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_name_char(*c))
        .last()
        .map(|(i, _)| i)
        .unwrap_or(offset);
    let qualifier = text[..start].strip_suffix('.').and_then(|b| {
        let q = b.char_indices().rev().take_while(|(_, c)| is_name_char(*c)).last().map(|(i, _)| &b[i..])?;
        (!q.is_empty()).then_some(q)
    });
    (&text[start..offset], qualifier)
}

/// Byte ranges of `name` as a whole word in `text[range]`.
pub fn occurrences(text: &str, range: (usize, usize), name: &str) -> Vec<(usize, usize)> {
    let (from, to) = (range.0.min(text.len()), (range.0 + range.1).min(text.len()));
    let hay = &text[from..to];
    let mut out = Vec::new();
    for (i, _) in hay.match_indices(name) {
        let before = hay[..i].chars().next_back();
        let after = hay[i + name.len()..].chars().next();
        if !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char) {
            out.push((from + i, name.len()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_utf16() {
        let text = "a = 1\n# é𝄞x\nlast";
        let idx = LineIndex::new(text);
        let x = text.find('x').unwrap();
        // é is one UTF-16 unit, 𝄞 two: `x` is at column 2 + 1 + 2.
        assert_eq!(idx.position(text, x), (1, 5));
        assert_eq!(idx.offset(text, 1, 5), x);
        assert_eq!(idx.offset(text, 2, 99), text.len());
        assert_eq!(idx.offset(text, 9, 0), text.len());
        assert_eq!(idx.position(text, text.len()), (2, 4));
    }

    #[test]
    fn words_qualifiers_and_params() {
        let t = "SELECT c.callsite_id FROM cst_callsites AS c WHERE x IN $langs";
        let w = word_at(t, t.find("site_id").unwrap()).unwrap();
        assert_eq!((w.text, w.qualifier, w.param), ("callsite_id", Some("c"), false));
        let w = word_at(t, t.find("cst_callsites").unwrap() + 13).unwrap();
        assert_eq!((w.text, w.qualifier), ("cst_callsites", None));
        let w = word_at(t, t.len()).unwrap();
        assert_eq!((w.text, w.param), ("langs", true));
        assert_eq!(word_at("a  b", 2), None);
        assert_eq!(prefix_at("x.ca", 4), ("ca", Some("x")));
        assert_eq!(prefix_at("FROM ", 5), ("", None));
        assert_eq!(occurrences("a ab a_b a", (0, 10), "a"), vec![(0, 1), (9, 1)]);
    }
}
