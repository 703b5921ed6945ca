//! `normalize_path`: lexical path normalization as a native scalar UDF
//! (immutable; Arrow string arrays in, a string array out).

use datafusion::arrow::array::{Array, ArrayRef, LargeStringArray, StringArray, StringViewArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use std::sync::Arc;

/// `normalize_path(text) -> text`: lexical path normalization (native UDF, immutable).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NormalizePath {
    signature: Signature,
}

impl NormalizePath {
    /// A new instance.
    pub fn new() -> Self {
        NormalizePath {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8View]),
                    TypeSignature::Exact(vec![DataType::LargeUtf8]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl Default for NormalizePath {
    fn default() -> Self {
        Self::new()
    }
}

/// Lexically normalize a `/`-separated path.
pub fn normalize_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

impl ScalarUDFImpl for NormalizePath {
    fn name(&self) -> &str {
        "normalize_path"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Scalar(s) => {
                let v = match s {
                    ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => {
                        v.as_deref().map(normalize_path)
                    }
                    other => return Err(DataFusionError::Plan(format!("normalize_path expects text, got {other:?}"))),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(v)))
            }
            ColumnarValue::Array(a) => {
                let out: StringArray = if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
                    s.iter().map(|v| v.map(normalize_path)).collect()
                } else if let Some(s) = a.as_any().downcast_ref::<StringViewArray>() {
                    s.iter().map(|v| v.map(normalize_path)).collect()
                } else if let Some(s) = a.as_any().downcast_ref::<LargeStringArray>() {
                    s.iter().map(|v| v.map(normalize_path)).collect()
                } else {
                    return Err(DataFusionError::Plan(format!("normalize_path expects text, got {}", a.data_type())));
                };
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_path("./a//b/../c"), "a/c");
        assert_eq!(normalize_path("/x/../../y"), "/y");
        assert_eq!(normalize_path("../a"), "../a");
        assert_eq!(normalize_path("a/.."), ".");
    }
}
