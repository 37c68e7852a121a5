//! Results of statements and their three renderings: an aligned table, CSV and JSON.

use std::fmt;

use crate::error::{Error, Result};

/// One cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Absent (a product without a price, an attribute it does not have).
    Null,
    /// A whole number.
    Int(i64),
    /// A number.
    Float(f64),
    /// Text.
    Text(String),
}

impl Value {
    /// A score or rating as the shortest decimal that reads back as the same `f32`.
    pub(crate) fn from_f32(x: f32) -> Value {
        match x.to_string().parse::<f64>() {
            Ok(v) => Value::Float(v),
            Err(_) => Value::Float(f64::from(x)),
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Text(s) => serde_json::Value::String(s.clone()),
        }
    }

    fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_))
    }

    /// Orders values of a column: numbers numerically, text by code point, `NULL` last.
    pub fn sort_cmp(&self, other: &Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            (a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => a.to_string().cmp(&b.to_string()),
            },
        }
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// The result of one statement: rows under column headings, or a status line for
/// statements that return no rows (writes, `TRAIN`, `IMPORT`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultSet {
    /// Column headings.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Value>>,
    /// What a statement without rows did, e.g. `inserted 2 products (seq 7)`.
    pub status: Option<String>,
}

/// Widest cell shown in a table, in terminal columns; longer text is cut with `…`.
const MAX_CELL_WIDTH: usize = 72;

/// Terminal columns a character takes: 2 for East Asian wide characters (CJK, Hangul, full
/// width forms, most emoji), 0 for combining marks and controls, 1 otherwise.
fn char_width(c: char) -> usize {
    let u = c as u32;
    if c.is_control() || (0x300..=0x36F).contains(&u) || (0x200B..=0x200F).contains(&u) {
        return 0;
    }
    let wide = matches!(u,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F | 0x1F900..=0x1F9FF | 0x20000..=0x3FFFD);
    if wide {
        2
    } else {
        1
    }
}

fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Cuts `s` to at most `max` columns, ending in `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

impl ResultSet {
    /// A result with only a status line.
    pub fn status(message: impl Into<String>) -> Self {
        ResultSet {
            status: Some(message.into()),
            ..ResultSet::default()
        }
    }

    /// Whether the result has columns (as opposed to only a status line).
    pub fn has_rows(&self) -> bool {
        !self.columns.is_empty()
    }

    /// An aligned table, numbers right-aligned, multi-line cells (explanations) kept on
    /// their own lines, then `(n rows)`; or the status line.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if self.has_rows() {
            let cells: Vec<Vec<Vec<String>>> = self
                .rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| {
                            // Multi-line cells (explanations) are shown whole: their lines
                            // are the point.
                            let text = v.to_string();
                            let max = if text.contains('\n') {
                                usize::MAX
                            } else {
                                MAX_CELL_WIDTH
                            };
                            text.lines().map(|l| clip(l, max)).collect()
                        })
                        .collect()
                })
                .collect();
            let mut widths: Vec<usize> = self.columns.iter().map(|c| width(c)).collect();
            for row in &cells {
                for (i, cell) in row.iter().enumerate() {
                    if let Some(w) = widths.get_mut(i) {
                        *w = (*w).max(cell.iter().map(|l| width(l)).max().unwrap_or(0));
                    }
                }
            }
            let pad = |s: &str, w: usize, right: bool| {
                let fill = " ".repeat(w.saturating_sub(width(s)));
                if right {
                    format!("{fill}{s}")
                } else {
                    format!("{s}{fill}")
                }
            };
            let header: Vec<String> = self
                .columns
                .iter()
                .zip(&widths)
                .map(|(c, w)| pad(c, *w, false))
                .collect();
            out.push_str(header.join(" | ").trim_end());
            out.push('\n');
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("-+-"));
            out.push('\n');
            for (row, values) in cells.iter().zip(&self.rows) {
                let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
                for line in 0..height {
                    let parts: Vec<String> = row
                        .iter()
                        .zip(&widths)
                        .zip(values)
                        .map(|((cell, w), v)| {
                            pad(cell.get(line).map_or("", String::as_str), *w, v.is_number())
                        })
                        .collect();
                    out.push_str(parts.join(" | ").trim_end());
                    out.push('\n');
                }
            }
            let n = self.rows.len();
            out.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
        }
        if let Some(s) = &self.status {
            out.push_str(s);
            if !s.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// CSV with a header line; a status-only result gives an empty string.
    ///
    /// # Errors
    /// [`Error::Backend`] if the CSV writer fails (it writes to memory, so it does not).
    pub fn to_csv(&self) -> Result<String> {
        if !self.has_rows() {
            return Ok(String::new());
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| Error::backend("csv", e);
        w.write_record(&self.columns).map_err(csv_err)?;
        for row in &self.rows {
            w.write_record(row.iter().map(|v| match v {
                Value::Null => String::new(),
                other => other.to_string(),
            }))
            .map_err(csv_err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::backend("csv", e.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `{"columns": [..], "rows": [{column: value, ..}, ..]}`, plus `"status"` when set.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        if self.has_rows() {
            obj.insert(
                "columns".into(),
                serde_json::Value::Array(
                    self.columns
                        .iter()
                        .map(|c| serde_json::Value::String(c.clone()))
                        .collect(),
                ),
            );
            let rows = self
                .rows
                .iter()
                .map(|r| {
                    let mut m = serde_json::Map::new();
                    for (c, v) in self.columns.iter().zip(r) {
                        m.insert(c.clone(), v.to_json());
                    }
                    serde_json::Value::Object(m)
                })
                .collect();
            obj.insert("rows".into(), serde_json::Value::Array(rows));
        }
        if let Some(s) = &self.status {
            obj.insert("status".into(), serde_json::Value::String(s.clone()));
        }
        serde_json::Value::Object(obj)
    }
}

impl fmt::Display for ResultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_characters_align() {
        let r = ResultSet {
            columns: vec!["title".into(), "price".into()],
            rows: vec![
                vec![Value::Text("跑步鞋".into()), Value::Float(59.9)],
                vec![Value::Text("shoe".into()), Value::Int(120)],
            ],
            status: None,
        };
        let t = r.to_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "跑步鞋 |  59.9");
        assert_eq!(lines[3], "shoe   |   120");
        assert_eq!(lines[4], "(2 rows)");
    }
}
