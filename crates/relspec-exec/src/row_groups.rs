//! Content-defined row groups: where an object's row groups end depends only
//! on its rows, so an edit that changes a few rows changes only the row
//! groups around them, and a new version of an output can copy every other
//! row group's bytes from the previous one (see `ChunkedWriter::copy_group`)
//! and still be byte-identical to a clean write.
//!
//! A group ends after a row when the group has at least [`GROUP_MIN`] rows
//! and the row's hash (of its bytes in Arrow's row format, the encoding of
//! the total output order) has its low bits zero (one in
//! [`GROUP_AVG`]), or when it reaches [`GROUP_MAX`] rows. The decision for
//! a row depends on the row and on the rows since the last boundary, never
//! on the position in the file: after an edit, boundaries re-synchronize at
//! the first boundary past it.
//!
//! Each object's footer lists its row groups' first rows (`relspec.row_groups`),
//! which is how a partial build finds the groups a change touches without
//! reading them.
//!
//! Architecture invariant: the layout is part of the engine fingerprint
//! ([`LAYOUT`]); an object written under another layout is never spliced.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataOptions, ParquetMetaDataReader,
};
use std::path::Path;
use std::sync::Arc;

/// A group ends only once it has this many rows (unless the data ends).
pub const GROUP_MIN: usize = 2048;
/// Past [`GROUP_MIN`], a row ends its group with probability 1 / this.
pub const GROUP_AVG: u64 = 8192;
/// A group never has more rows than this.
pub const GROUP_MAX: usize = 65536;

/// The layout's name and parameters (part of the engine fingerprint).
pub const LAYOUT: &str = "relspec/row-groups/content-defined/v1:min=2048,avg=8192,max=65536,hash=row-format-mix64";

/// The footer key listing each row group's first row (hex of its row-format
/// bytes, comma-separated).
pub const FOOTER_ROW_GROUPS: &str = "relspec.row_groups";

/// The row encoding of the total output order (every column ascending,
/// nulls first), as merges and the layout use it.
pub fn order_converter(schema: &SchemaRef) -> Result<RowConverter, ArrowError> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            SortField::new_with_options(f.data_type().clone(), SortOptions { descending: false, nulls_first: true })
        })
        .collect();
    RowConverter::new(fields)
}

/// A stable 64-bit hash of a row's bytes (the same on every machine and
/// run: it decides where row groups end).
pub fn row_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // splitmix64's finalizer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Whether a group of `since` rows ends after a row hashing to `hash`.
fn ends(since: usize, hash: u64) -> bool {
    since >= GROUP_MAX || (since >= GROUP_MIN && hash.is_multiple_of(GROUP_AVG))
}

/// Decides where row groups end, row by row.
pub struct Chunker {
    /// `None` when the schema has a type the row format cannot encode:
    /// groups are then cut at [`GROUP_MAX`] rows only (and never spliced).
    conv: Option<RowConverter>,
    /// Rows in the current group so far.
    since: usize,
}

impl Chunker {
    /// A chunker for rows of `schema`.
    pub fn new(schema: &SchemaRef) -> Chunker {
        Chunker { conv: order_converter(schema).ok(), since: 0 }
    }

    /// Whether the last row seen ended a group (or none was seen).
    pub fn at_boundary(&self) -> bool {
        self.since == 0
    }

    /// Whether groups are content-defined (the schema's types allow it).
    pub fn content_defined(&self) -> bool {
        self.conv.is_some()
    }

    /// Where groups end in `batch`, and the first rows of the groups that
    /// start in it.
    pub fn cuts(&mut self, batch: &RecordBatch) -> Result<Cuts, ArrowError> {
        let n = batch.num_rows();
        let mut cuts = Vec::new();
        let mut starts = Vec::new();
        let Some(conv) = &self.conv else {
            for r in 0..n {
                if self.since == 0 {
                    starts.push(Vec::new());
                }
                self.since += 1;
                if self.since >= GROUP_MAX {
                    cuts.push(r + 1);
                    self.since = 0;
                }
            }
            return Ok(Cuts { ends: cuts, firsts: starts });
        };
        let rows = conv.convert_columns(batch.columns())?;
        for r in 0..n {
            if self.since == 0 {
                starts.push(rows.row(r).as_ref().to_vec());
            }
            self.since += 1;
            // Hash only rows that may end a group.
            if self.since >= GROUP_MIN && ends(self.since, row_hash(rows.row(r).as_ref())) {
                cuts.push(r + 1);
                self.since = 0;
            }
        }
        Ok(Cuts { ends: cuts, firsts: starts })
    }
}

/// Where row groups end in one batch (see [`Chunker::cuts`]).
pub struct Cuts {
    /// Positions after which a group ends (exclusive ends, ascending).
    pub ends: Vec<usize>,
    /// The row bytes of each group that starts in the batch, in order (for
    /// the footer's list of first rows; empty when not content-defined).
    pub firsts: Vec<Vec<u8>>,
}

/// The footer key of an object written as parts one after another (a
/// union's branches, in order): each part's row count, comma-separated.
/// Row groups run across parts; the counts place a part's rows.
pub const FOOTER_PARTS: &str = "relspec.parts";

/// Encode part row counts for the footer (see [`FOOTER_PARTS`]).
pub fn encode_parts(rows: &[u64]) -> String {
    rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")
}

/// Decode part row counts written by [`encode_parts`].
pub fn decode_parts(s: &str) -> Option<Vec<u64>> {
    if s.is_empty() {
        return Some(vec![]);
    }
    s.split(',').map(|r| r.parse().ok()).collect()
}

/// Encode the first rows of an object's row groups for its footer.
pub fn encode_firsts(firsts: &[Vec<u8>]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(firsts.iter().map(|f| f.len() * 2 + 1).sum());
    for (i, f) in firsts.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        for b in f {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
    }
    s
}

fn decode_firsts(s: &str) -> Option<Vec<Vec<u8>>> {
    if s.is_empty() {
        return Some(vec![]);
    }
    s.split(',')
        .map(|h| {
            let h = h.as_bytes();
            if h.len() % 2 != 0 {
                return None;
            }
            let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            h.chunks_exact(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
        })
        .collect()
}

/// An object's row groups as a splice needs them: the footer (with the page
/// index, which copied groups carry over) and each group's first row.
pub struct Layout {
    /// The parsed footer, page index included.
    pub meta: Arc<ParquetMetaData>,
    /// Each row group's first row in the total order's row format.
    pub firsts: Vec<Vec<u8>>,
    /// The row counts of the parts the object was written as, when it was
    /// (see [`FOOTER_PARTS`]), checked to add up to its rows.
    pub parts: Option<Vec<u64>>,
}

impl Layout {
    /// Read the layout of the object at `path`; `None` when it has none
    /// (written under another layout, or with a type the row format cannot
    /// encode) or cannot be read.
    pub fn read(path: &Path) -> Option<Layout> {
        let f = std::fs::File::open(path).ok()?;
        // Encoding statistics in full (not as the default mask): a copied
        // column chunk writes them back.
        let options = ParquetMetaDataOptions::new().with_encoding_stats_as_mask(false);
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .with_metadata_options(Some(options))
            .parse_and_finish(&f)
            .ok()?;
        let kv = meta.file_metadata().key_value_metadata()?;
        let list = kv.iter().find(|k| k.key == FOOTER_ROW_GROUPS)?.value.as_deref()?;
        let firsts = decode_firsts(list)?;
        if firsts.len() != meta.num_row_groups() || firsts.iter().any(|f| f.is_empty()) {
            return None;
        }
        let parts = kv
            .iter()
            .find(|k| k.key == FOOTER_PARTS)
            .and_then(|k| decode_parts(k.value.as_deref()?))
            .filter(|p| p.iter().sum::<u64>() == meta.file_metadata().num_rows() as u64);
        Some(Layout { meta: Arc::new(meta), firsts, parts })
    }

    /// The group a row belongs with: the last group whose first row is not
    /// after it (group 0 for rows before every group).
    pub fn group_of(&self, row: &[u8]) -> usize {
        self.firsts.partition_point(|f| f.as_slice() <= row).saturating_sub(1)
    }

    /// The groups that may hold rows starting with `prefix` (row-format
    /// bytes of leading columns): a superset, never missing one.
    pub fn groups_with_prefix(&self, prefix: &[u8]) -> std::ops::Range<usize> {
        let n = self.firsts.len();
        if n == 0 {
            return 0..0;
        }
        // From the group holding the first row >= prefix ...
        let lo = self.firsts.partition_point(|f| f.as_slice() < prefix).saturating_sub(1);
        // ... through the last group starting with a row that has the prefix
        // or sorts before it.
        let hi = self.firsts.partition_point(|f| f.as_slice() < prefix || f.starts_with(prefix));
        lo..hi.max(lo + 1).min(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firsts_round_trip_through_the_footer_text() {
        let firsts = vec![vec![0u8, 1, 255], vec![16, 32], vec![7]];
        assert_eq!(decode_firsts(&encode_firsts(&firsts)).unwrap(), firsts);
        assert_eq!(decode_firsts("").unwrap(), Vec::<Vec<u8>>::new());
        assert!(decode_firsts("0g").is_none());
        assert_eq!(decode_parts(&encode_parts(&[3, 0, 12])).unwrap(), [3, 0, 12]);
        assert_eq!(decode_parts("").unwrap(), Vec::<u64>::new());
        assert!(decode_parts("1,x").is_none());
    }

    #[test]
    fn the_row_hash_is_stable() {
        // A fixed value: the hash decides bytes on disk, on every machine;
        // changing it is a new layout (see `LAYOUT`).
        assert_eq!(row_hash(b"relspec"), 15_741_925_558_635_295_614);
        assert_ne!(row_hash(b"a"), row_hash(b"b"));
    }

    #[test]
    fn prefix_ranges_cover_every_group_holding_the_prefix() {
        let layout = |firsts: Vec<&[u8]>| Layout {
            meta: Arc::new(ParquetMetaData::new(
                datafusion::parquet::file::metadata::FileMetaData::new(
                    1,
                    0,
                    None,
                    None,
                    Arc::new(datafusion::parquet::schema::types::SchemaDescriptor::new(Arc::new(
                        datafusion::parquet::schema::types::Type::group_type_builder("s").build().unwrap(),
                    ))),
                    None,
                ),
                vec![],
            )),
            firsts: firsts.into_iter().map(|f| f.to_vec()).collect(),
            parts: None,
        };
        let l = layout(vec![b"a1", b"b1", b"b5", b"c1"]);
        assert_eq!(l.groups_with_prefix(b"a"), 0..1);
        // "b" starts in group 0 (after a1), runs through group 2.
        assert_eq!(l.groups_with_prefix(b"b"), 0..3);
        assert_eq!(l.groups_with_prefix(b"c"), 2..4);
        assert_eq!(l.groups_with_prefix(b"d"), 3..4);
        assert_eq!(l.groups_with_prefix(b"0"), 0..1);
        assert_eq!(l.group_of(b"b3"), 1);
        assert_eq!(l.group_of(b"b5"), 2);
        assert_eq!(l.group_of(b"0"), 0);
    }
}
