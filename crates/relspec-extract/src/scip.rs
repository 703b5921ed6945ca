//! A SCIP index (`index.scip`, protobuf) as three tables: documents,
//! occurrences and symbols (the documents' symbols and the external ones).

use crate::tables::{Cols, relationships};
use datafusion::arrow::array::RecordBatch;
use protobuf::Message;
use relspec_spec::workspace::SourceTable;
use std::collections::BTreeMap;

fn enum_name<E: protobuf::Enum + std::fmt::Debug>(e: protobuf::EnumOrUnknown<E>) -> String {
    match e.enum_value() {
        Ok(v) => format!("{v:?}"),
        Err(n) => n.to_string(),
    }
}

/// Decode an index into its tables; a malformed index is an error.
pub fn scip_batches(bytes: &[u8]) -> Result<BTreeMap<SourceTable, RecordBatch>, String> {
    let index = scip::types::Index::parse_from_bytes(bytes).map_err(|e| format!("not a SCIP index: {e}"))?;
    let docs = &index.documents;
    let mut out = BTreeMap::new();
    out.insert(
        SourceTable::Documents,
        Cols::default()
            .str(docs.iter().map(|d| Some(&d.relative_path)))
            .str(docs.iter().map(|d| Some(&d.language)))
            .int(docs.iter().map(|d| Some(d.occurrences.len() as i64)))
            .int(docs.iter().map(|d| Some(d.symbols.len() as i64)))
            .str(docs.iter().map(|d| Some(enum_name(d.position_encoding))))
            .finish(SourceTable::Documents),
    );
    // Occurrences: ranges are [line, col, end_col] (one line) or [line, col, end_line, end_col].
    let occ: Vec<(&str, &scip::types::Occurrence)> =
        docs.iter().flat_map(|d| d.occurrences.iter().map(move |o| (d.relative_path.as_str(), o))).collect();
    let range = |o: &scip::types::Occurrence, i: usize| -> Option<i64> {
        let r = &o.range;
        let v = match (r.len(), i) {
            (3, 0) | (3, 2) => r[0],
            (3, 1) => r[1],
            (3, 3) => r[2],
            (4, i) => r[i],
            _ => return None,
        };
        Some(v as i64)
    };
    let definition = scip::types::SymbolRole::Definition as i32;
    out.insert(
        SourceTable::Occurrences,
        Cols::default()
            .str(occ.iter().map(|(d, _)| Some(*d)))
            .str(occ.iter().map(|(_, o)| Some(&o.symbol)))
            .int(occ.iter().map(|(_, o)| range(o, 0)))
            .int(occ.iter().map(|(_, o)| range(o, 1)))
            .int(occ.iter().map(|(_, o)| range(o, 2)))
            .int(occ.iter().map(|(_, o)| range(o, 3)))
            .int(occ.iter().map(|(_, o)| Some(o.symbol_roles as i64)))
            .bool(occ.iter().map(|(_, o)| Some(o.symbol_roles & definition != 0)))
            .str(occ.iter().map(|(_, o)| Some(enum_name(o.syntax_kind))))
            .finish(SourceTable::Occurrences),
    );
    let syms: Vec<(Option<&str>, &scip::types::SymbolInformation)> = docs
        .iter()
        .flat_map(|d| d.symbols.iter().map(move |s| (Some(d.relative_path.as_str()), s)))
        .chain(index.external_symbols.iter().map(|s| (None, s)))
        .collect();
    let rels: Vec<Vec<(String, [bool; 4])>> = syms
        .iter()
        .map(|(_, s)| {
            s.relationships
                .iter()
                .map(|r| {
                    (r.symbol.clone(), [r.is_reference, r.is_implementation, r.is_type_definition, r.is_definition])
                })
                .collect()
        })
        .collect();
    out.insert(
        SourceTable::Symbols,
        Cols::default()
            .str(syms.iter().map(|(_, s)| Some(&s.symbol)))
            .str(syms.iter().map(|(d, _)| *d))
            .str(syms.iter().map(|(_, s)| Some(enum_name(s.kind))))
            .str(syms.iter().map(|(_, s)| Some(&s.display_name)))
            .str(syms.iter().map(|(_, s)| Some(s.documentation.join("\n\n"))))
            .array(relationships(&rels))
            .finish(SourceTable::Symbols),
    );
    Ok(out)
}
