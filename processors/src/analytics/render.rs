//! Answers as a person or a script wants them: an aligned table (numbers right-aligned and rounded,
//! timestamps to the second), CSV with a header, or JSON (an array of objects, nulls explicit).

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "table" => Some(Format::Table),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Renders `batches` in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String, arrow::error::ArrowError> {
    match format {
        Format::Table => Ok(table(batches)),
        Format::Csv => csv(batches),
        Format::Json => json(batches),
    }
}

/// A float rounded for reading: 1 decimal from 100 up, 2 from 0.1, 4 below; trailing zeros dropped.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        return v.to_string();
    }
    let text = if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    if trimmed == "-0" { "0".to_owned() } else { trimmed.to_owned() }
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

fn cell(array: &ArrayRef, formatter: &ArrayFormatter<'_>, row: usize) -> String {
    if array.is_null(row) {
        return "-".to_owned();
    }
    match array.data_type() {
        DataType::Float64 => {
            array.as_any().downcast_ref::<Float64Array>().map_or(String::new(), |a| number(a.value(row)))
        }
        DataType::Float32 | DataType::Decimal128(..) => {
            let text = formatter.value(row).to_string();
            text.parse::<f64>().map(number).unwrap_or(text)
        }
        DataType::Timestamp(..) => {
            // 2026-01-01T00:00:00.123Z → 2026-01-01 00:00:00
            let text = formatter.value(row).to_string();
            text.replace('T', " ").chars().take(19).collect()
        }
        _ => formatter.value(row).to_string(),
    }
}

/// An aligned text table; `(no rows)` when empty.
pub fn table(batches: &[RecordBatch]) -> String {
    let Some(first) = batches.first() else { return "(no rows)\n".to_owned() };
    let schema = first.schema();
    let headers: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let numeric: Vec<bool> = schema.fields().iter().map(|f| is_numeric(f.data_type())).collect();
    let options = FormatOptions::default().with_null("-");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if formatters.len() != batch.num_columns() {
            continue;
        }
        for row in 0..batch.num_rows() {
            rows.push(batch.columns().iter().zip(&formatters).map(|(c, f)| cell(c, f, row)).collect());
        }
    }
    if rows.is_empty() {
        return "(no rows)\n".to_owned();
    }
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([headers[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(
                |(i, c)| if numeric[i] { format!("{c:>w$}", w = widths[i]) } else { format!("{c:<w$}", w = widths[i]) },
            )
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    let mut out = String::new();
    line(&headers, &mut out);
    line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(), &mut out);
    for row in &rows {
        line(row, &mut out);
    }
    out.push_str(&format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" }));
    out
}

/// CSV with a header line.
pub fn csv(batches: &[RecordBatch]) -> Result<String, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
        for batch in batches {
            writer.write(batch)?;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A JSON array of objects, one per row, nulls explicit.
pub fn json(batches: &[RecordBatch]) -> Result<String, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        writer.write_batches(&refs)?;
        writer.finish()?;
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(if text.is_empty() { "[]".to_owned() } else { text })
}

/// The strings of column `index` across `batches` (for id lists).
pub fn strings(batches: &[RecordBatch], index: usize) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        // Any string type (the history's strings are read as views) as plain strings.
        let Some(col) = batch.columns().get(index).and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok()) else {
            continue;
        };
        if let Some(col) = col.as_any().downcast_ref::<StringArray>() {
            out.extend((0..col.len()).filter(|i| col.is_valid(*i)).map(|i| col.value(i).to_owned()));
        }
    }
    out
}

/// The values of numeric column `index` across `batches` as floats, nulls as `None` (one per row).
pub fn floats(batches: &[RecordBatch], index: usize) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for batch in batches {
        let Some(col) = batch.columns().get(index).and_then(|c| arrow::compute::cast(c, &DataType::Float64).ok())
        else {
            out.extend(std::iter::repeat_n(None, batch.num_rows()));
            continue;
        };
        if let Some(col) = col.as_any().downcast_ref::<arrow::array::Float64Array>() {
            out.extend(col.iter());
        }
    }
    out
}
