//! The Arrow schemas of source tables, a file's facts as record batches, and
//! the Parquet fragment that stores one file's batches in the cache.
//!
//! Architecture invariant: a fragment holds every table of one file in one
//! Parquet file (a `table` column tags the rows; columns the table lacks are
//! null), so a file costs one object in the store whatever it yields.

use crate::cst::{Facts, Span};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray, new_null_array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use relspec_spec::workspace::SourceTable;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

/// One file's rows of each table of its source.
pub type FileTables = BTreeMap<SourceTable, RecordBatch>;

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn int(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}
fn span_fields(prefix: &str) -> Vec<Field> {
    ["start_byte", "end_byte", "start_line", "start_col", "end_line", "end_col"]
        .iter()
        .map(|c| int(&format!("{prefix}{c}")))
        .collect()
}

/// The fields of a SCIP relationship.
pub fn relationship_fields() -> Fields {
    Fields::from(vec![
        utf8("symbol"),
        Field::new("is_reference", DataType::Boolean, true),
        Field::new("is_implementation", DataType::Boolean, true),
        Field::new("is_type_definition", DataType::Boolean, true),
        Field::new("is_definition", DataType::Boolean, true),
    ])
}

/// The schema of a source table.
pub fn schema(table: SourceTable) -> SchemaRef {
    static SCHEMAS: LazyLock<BTreeMap<SourceTable, SchemaRef>> = LazyLock::new(|| {
        let mut m = BTreeMap::new();
        let mut put = |t: SourceTable, fields: Vec<Field>| {
            m.insert(t, Arc::new(Schema::new(fields)));
        };
        put(
            SourceTable::Files,
            vec![
                utf8("path"),
                utf8("language"),
                utf8("content_hash"),
                int("size"),
                int("lines"),
                int("parse_errors"),
                utf8("skipped"),
            ],
        );
        let mut defs = vec![utf8("def_id"), utf8("file"), utf8("name"), utf8("qualified_name"), utf8("kind")];
        defs.extend(span_fields(""));
        defs.extend([int("name_line"), int("name_col"), utf8("parent_id")]);
        put(SourceTable::Defs, defs);
        let mut calls = vec![
            utf8("file"),
            utf8("enclosing_def"),
            utf8("callee"),
            utf8("callee_text"),
            utf8("receiver"),
            utf8("kind"),
        ];
        calls.extend(span_fields(""));
        calls.extend([int("call_start_byte"), int("call_end_byte")]);
        put(SourceTable::Callsites, calls);
        let mut imports = vec![utf8("file"), utf8("enclosing_def"), utf8("module"), utf8("name"), utf8("alias")];
        imports.extend(span_fields(""));
        put(SourceTable::Imports, imports);
        let mut errors = vec![utf8("file"), utf8("message")];
        errors.extend(span_fields(""));
        put(SourceTable::Errors, errors);
        put(
            SourceTable::Documents,
            vec![utf8("document"), utf8("language"), int("occurrences"), int("symbols"), utf8("position_encoding")],
        );
        put(
            SourceTable::Occurrences,
            vec![
                utf8("document"),
                utf8("symbol"),
                int("start_line"),
                int("start_col"),
                int("end_line"),
                int("end_col"),
                int("roles"),
                Field::new("is_definition", DataType::Boolean, true),
                utf8("syntax_kind"),
            ],
        );
        put(
            SourceTable::Symbols,
            vec![
                utf8("symbol"),
                utf8("document"),
                utf8("kind"),
                utf8("display_name"),
                utf8("documentation"),
                Field::new(
                    "relationships",
                    DataType::List(Arc::new(Field::new("item", DataType::Struct(relationship_fields()), true))),
                    true,
                ),
            ],
        );
        m
    });
    SCHEMAS[&table].clone()
}

/// Column builder for one batch (every column nullable).
#[derive(Default)]
pub(crate) struct Cols {
    cols: Vec<ArrayRef>,
}

impl Cols {
    pub(crate) fn str<S: AsRef<str>>(mut self, v: impl IntoIterator<Item = Option<S>>) -> Self {
        self.cols.push(Arc::new(v.into_iter().collect::<StringArray>()));
        self
    }
    pub(crate) fn int(mut self, v: impl IntoIterator<Item = Option<i64>>) -> Self {
        self.cols.push(Arc::new(v.into_iter().collect::<Int64Array>()));
        self
    }
    pub(crate) fn bool(mut self, v: impl IntoIterator<Item = Option<bool>>) -> Self {
        self.cols.push(Arc::new(v.into_iter().collect::<BooleanArray>()));
        self
    }
    pub(crate) fn array(mut self, a: ArrayRef) -> Self {
        self.cols.push(a);
        self
    }
    fn spans<'a>(mut self, spans: impl Iterator<Item = &'a Span> + Clone) -> Self {
        type Get = fn(&Span) -> usize;
        let getters: [Get; 6] =
            [|s| s.start_byte, |s| s.end_byte, |s| s.start_line, |s| s.start_col, |s| s.end_line, |s| s.end_col];
        for g in getters {
            self = self.int(spans.clone().map(|s| Some(g(s) as i64)));
        }
        self
    }
    pub(crate) fn finish(self, table: SourceTable) -> RecordBatch {
        RecordBatch::try_new(schema(table), self.cols).expect("columns match the table's schema")
    }
}

/// A list-of-relationships column from per-row lists.
pub(crate) fn relationships(rows: &[Vec<(String, [bool; 4])>]) -> ArrayRef {
    let flat: Vec<&(String, [bool; 4])> = rows.iter().flatten().collect();
    let fields = relationship_fields();
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(flat.iter().map(|r| Some(r.0.as_str())).collect::<StringArray>())];
    for i in 0..4 {
        arrays.push(Arc::new(flat.iter().map(|r| Some(r.1[i])).collect::<BooleanArray>()));
    }
    let values = StructArray::new(fields.clone(), arrays, None);
    let offsets = OffsetBuffer::from_lengths(rows.iter().map(Vec::len));
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(fields), true)),
        offsets,
        Arc::new(values),
        None,
    ))
}

/// A file's row of the `files` table.
pub struct FileRow<'a> {
    /// Path relative to the root.
    pub path: &'a str,
    /// Language parsed as.
    pub language: &'a str,
    /// blake3 of the bytes.
    pub content_hash: &'a str,
    /// Bytes.
    pub size: usize,
    /// Lines.
    pub lines: usize,
    /// Why it was not parsed, if it was not.
    pub skipped: Option<&'a str>,
}

/// The batches of one source file (every table of a tree-sitter source).
pub fn code_batches(file: &FileRow, facts: &Facts) -> BTreeMap<SourceTable, RecordBatch> {
    let path = file.path;
    let mut out = BTreeMap::new();
    out.insert(
        SourceTable::Files,
        Cols::default()
            .str([Some(path)])
            .str([Some(file.language)])
            .str([Some(file.content_hash)])
            .int([Some(file.size as i64)])
            .int([Some(file.lines as i64)])
            .int([Some(facts.errors.len() as i64)])
            .str([file.skipped])
            .finish(SourceTable::Files),
    );
    let d = &facts.defs;
    out.insert(
        SourceTable::Defs,
        Cols::default()
            .str(d.iter().map(|x| Some(&x.id)))
            .str(d.iter().map(|_| Some(path)))
            .str(d.iter().map(|x| Some(&x.name)))
            .str(d.iter().map(|x| Some(&x.qualified)))
            .str(d.iter().map(|x| Some(x.kind)))
            .spans(d.iter().map(|x| &x.span))
            .int(d.iter().map(|x| Some(x.name_span.start_line as i64)))
            .int(d.iter().map(|x| Some(x.name_span.start_col as i64)))
            .str(d.iter().map(|x| x.parent.as_ref()))
            .finish(SourceTable::Defs),
    );
    let c = &facts.calls;
    out.insert(
        SourceTable::Callsites,
        Cols::default()
            .str(c.iter().map(|_| Some(path)))
            .str(c.iter().map(|x| x.enclosing.as_ref()))
            .str(c.iter().map(|x| Some(&x.callee)))
            .str(c.iter().map(|x| Some(&x.callee_text)))
            .str(c.iter().map(|x| x.receiver.as_ref()))
            .str(c.iter().map(|x| Some(x.kind)))
            .spans(c.iter().map(|x| &x.span))
            .int(c.iter().map(|x| Some(x.call_span.start_byte as i64)))
            .int(c.iter().map(|x| Some(x.call_span.end_byte as i64)))
            .finish(SourceTable::Callsites),
    );
    let i = &facts.imports;
    out.insert(
        SourceTable::Imports,
        Cols::default()
            .str(i.iter().map(|_| Some(path)))
            .str(i.iter().map(|x| x.enclosing.as_ref()))
            .str(i.iter().map(|x| Some(&x.module)))
            .str(i.iter().map(|x| x.name.as_ref()))
            .str(i.iter().map(|x| x.alias.as_ref()))
            .spans(i.iter().map(|x| &x.span))
            .finish(SourceTable::Imports),
    );
    let e = &facts.errors;
    out.insert(
        SourceTable::Errors,
        Cols::default()
            .str(e.iter().map(|_| Some(path)))
            .str(e.iter().map(|x| Some(&x.message)))
            .spans(e.iter().map(|x| &x.span))
            .finish(SourceTable::Errors),
    );
    out
}

/// The fragment schema: a `table` tag and every column of every table.
fn wide_schema(tables: &BTreeMap<SourceTable, RecordBatch>) -> SchemaRef {
    let mut fields = vec![Field::new("table", DataType::Utf8, false)];
    for t in tables.keys() {
        for f in schema(*t).fields() {
            if !fields.iter().any(|x| x.name() == f.name()) {
                fields.push(f.as_ref().clone());
            }
        }
    }
    Arc::new(Schema::new(fields))
}

/// One file's batches as one wide batch (`table` tag + every column).
fn to_wide(wide: &SchemaRef, tables: &BTreeMap<SourceTable, RecordBatch>) -> Result<Vec<RecordBatch>, String> {
    let mut batches = Vec::new();
    for (t, b) in tables {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![t.suffix(); b.num_rows()]))];
        for f in wide.fields().iter().skip(1) {
            cols.push(match b.column_by_name(f.name()) {
                Some(c) => c.clone(),
                None => new_null_array(f.data_type(), b.num_rows()),
            });
        }
        batches.push(RecordBatch::try_new(wide.clone(), cols).map_err(|e| e.to_string())?);
    }
    Ok(batches)
}

/// Footer key of a pack's index: `[[fragment key, rows], ...]` in row order.
const PACK_INDEX: &str = "relspec.fragments";
/// Footer key of a pack's tables (comma-separated suffixes).
const PACK_TABLES: &str = "relspec.fragment_tables";

/// Many files' fragments as the bytes of one Parquet pack: each file's rows
/// in turn, each file's key and row count in the footer (rows are found by
/// count, so row groups stay large and the footer small).
pub fn write_pack(entries: &[(String, &BTreeMap<SourceTable, RecordBatch>)]) -> Result<Vec<u8>, String> {
    use datafusion::parquet::file::metadata::KeyValue;
    let Some((_, first)) = entries.first() else { return Err("an empty pack".into()) };
    let wide = wide_schema(first);
    let mut buf = Vec::new();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, wide.clone(), None).map_err(|e| e.to_string())?;
    let mut index = Vec::with_capacity(entries.len());
    for (key, tables) in entries {
        let mut rows = 0;
        for b in to_wide(&wide, tables)? {
            rows += b.num_rows();
            w.write(&b).map_err(|e| e.to_string())?;
        }
        index.push(serde_json::json!([key, rows]));
    }
    let names: Vec<&str> = first.keys().map(|t| t.suffix()).collect();
    w.append_key_value_metadata(KeyValue::new(PACK_INDEX.to_string(), serde_json::Value::Array(index).to_string()));
    w.append_key_value_metadata(KeyValue::new(PACK_TABLES.to_string(), names.join(",")));
    w.close().map_err(|e| e.to_string())?;
    Ok(buf)
}

/// The fragment keys a pack holds, with their row counts (from its footer).
pub fn pack_index<R: datafusion::parquet::file::reader::ChunkReader + 'static>(
    file: R,
) -> Result<Vec<(String, usize)>, String> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let r = SerializedFileReader::new(file).map_err(|e| e.to_string())?;
    let kv = r.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    let raw = kv.iter().find(|k| k.key == PACK_INDEX).and_then(|k| k.value.clone()).ok_or("not a fragment pack")?;
    let v: Vec<(String, usize)> = serde_json::from_str(&raw).map_err(|e| e.to_string())?;
    Ok(v)
}

/// Every file's tables in a pack (its bytes, read whole: one read instead of
/// one per column chunk), by fragment key.
pub fn read_pack(bytes: bytes::Bytes, tables: &[SourceTable]) -> Result<Vec<(String, FileTables)>, String> {
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::record_batch::RecordBatchReader;
    let index = pack_index(bytes.clone())?;
    let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| e.to_string())?
        .with_batch_size(1 << 16)
        .build()
        .map_err(|e| e.to_string())?;
    let wide_schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let all = concat_batches(&wide_schema, &batches).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(index.len());
    let mut offset = 0;
    for (key, rows) in index {
        if offset + rows > all.num_rows() {
            return Err("pack index and rows disagree".into());
        }
        let part = all.slice(offset, rows);
        offset += rows;
        let tags = part.column(0).as_any().downcast_ref::<StringArray>().ok_or("pack without a table column")?;
        // A file's rows are written table by table: each table is one run of rows.
        let mut runs: HashMap<&str, (usize, usize)> = HashMap::new();
        let mut i = 0;
        while i < rows {
            let tag = tags.value(i);
            let start = i;
            while i < rows && tags.value(i) == tag {
                i += 1;
            }
            runs.insert(tag, (start, i - start));
        }
        let mut file_tables = BTreeMap::new();
        for t in tables {
            let (start, len) = runs.get(t.suffix()).copied().unwrap_or((0, 0));
            let picked = part.slice(start, len);
            let s = schema(*t);
            let cols: Vec<ArrayRef> = s
                .fields()
                .iter()
                .map(|f| picked.column_by_name(f.name()).cloned())
                .collect::<Option<_>>()
                .ok_or("pack misses a column")?;
            file_tables.insert(*t, RecordBatch::try_new(s, cols).map_err(|e| e.to_string())?);
        }
        out.push((key, file_tables));
    }
    Ok(out)
}
