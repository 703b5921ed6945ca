//! Column type names as users write them in schema hints and contracts.

use arrow_schema::{DataType, TimeUnit};
use std::str::FromStr;

/// Parse a type name: SQL names (`bigint`, `varchar`, `double`, `decimal(10,2)`,
/// `timestamp`) or Arrow names (`Int64`, `Utf8`, `Timestamp(Microsecond, None)`).
pub fn parse_type(name: &str) -> Result<DataType, String> {
    let lower = name.trim().to_ascii_lowercase();
    let t = match lower.as_str() {
        "bool" | "boolean" => DataType::Boolean,
        "tinyint" | "int8" => DataType::Int8,
        "smallint" | "int16" => DataType::Int16,
        "int" | "integer" | "int32" => DataType::Int32,
        "bigint" | "long" | "int64" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float" | "real" | "float32" => DataType::Float32,
        "double" | "float64" => DataType::Float64,
        "string" | "text" | "varchar" | "utf8" => DataType::Utf8,
        "date" | "date32" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        "binary" | "bytea" => DataType::Binary,
        _ => {
            if let Some(args) = lower.strip_prefix("decimal(").and_then(|s| s.strip_suffix(')')) {
                let mut it = args.split(',').map(|s| s.trim());
                let p: u8 = it.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad(name))?;
                let s: i8 = it.next().map(|s| s.parse().map_err(|_| bad(name))).transpose()?.unwrap_or(0);
                return Ok(DataType::Decimal128(p, s));
            }
            return DataType::from_str(name.trim()).map_err(|_| bad(name));
        }
    };
    Ok(t)
}

fn bad(name: &str) -> String {
    format!(
        "unknown type `{name}`; use a SQL name (bigint, int, double, string, boolean, date, timestamp, decimal(p,s)) or an Arrow name (Int64, Utf8, ...)"
    )
}

/// The family a type belongs to for contract checks: string encodings
/// (Utf8, LargeUtf8, Utf8View) are one family, and so are binary encodings
/// and dictionary-encoded values of a family.
pub fn type_family(t: &DataType) -> DataType {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, v) => type_family(v),
        other => other.clone(),
    }
}

/// A short, stable name for a type in messages.
pub fn type_name(t: &DataType) -> String {
    format!("{t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sql_and_arrow_names() {
        assert_eq!(parse_type("BIGINT").unwrap(), DataType::Int64);
        assert_eq!(parse_type("Int64").unwrap(), DataType::Int64);
        assert_eq!(parse_type("string").unwrap(), DataType::Utf8);
        assert_eq!(parse_type("decimal(10, 2)").unwrap(), DataType::Decimal128(10, 2));
        assert!(parse_type("nope").is_err());
        assert_eq!(type_family(&DataType::Utf8View), DataType::Utf8);
    }
}
