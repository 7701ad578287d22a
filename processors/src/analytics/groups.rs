//! The first stage of `summary`: the experiments table folded into its (layer, fault type, region,
//! status) groups, computed on the Parquet dictionary codes of those four columns.
//!
//! Why not in SQL: DataFusion 55 groups string columns by their values (hashing and comparing the
//! strings of every row), and Arrow dictionaries through its row format, which is slower still; that
//! stage was ~85% of summary's time and left it at 1.4× DuckDB's, which groups on the codes. The
//! materializer writes these columns dictionary-encoded (a handful of distinct values a file), so the
//! Parquet reader can hand them over as dictionary arrays: each batch then folds its rows by their four
//! codes into a small dense table, and only that table's few non-empty cells are looked up by value.
//! The rollup into the four sections stays SQL (`summary_rollup_sql`), and `summary_sql` is the same
//! answer in one statement (DuckDB runs it in the benchmark; a test holds the two paths equal).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Float64Builder, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

use super::{AnalyticsError, Result};

/// The grouping columns, in the order of the groups' key.
pub const KEYS: [&str; 4] = ["layer", "fault_type", "region", "status"];

/// The measured column.
const SCORE: &str = "resilience_score";

/// Rows a batch; a batch's dense table has one cell per combination of its four dictionaries' values.
const BATCH_ROWS: usize = 8192;

/// Above this many combinations (2.5 MiB of cells) a batch is folded row by row through the hash map.
const MAX_DENSE_CELLS: usize = 1 << 16;

/// How often the listing is retried when a file vanished between listing and reading (compaction or
/// prune replaced it under a running summary).
const ATTEMPTS: usize = 3;

/// The columns of the groups: the four keys, `n` rows, and of their non-null scores the sum `s`, count
/// `c`, minimum `lo` and maximum `hi` (`s`, `lo`, `hi` null where `c` is 0), as SQL's
/// `count(*), sum(score), count(score), min(score), max(score) ... GROUP BY` answers them.
pub fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = KEYS.iter().map(|k| Field::new(*k, DataType::Utf8, true)).collect();
    fields.push(Field::new("n", DataType::Int64, false));
    fields.push(Field::new("s", DataType::Float64, true));
    fields.push(Field::new("c", DataType::Int64, false));
    fields.push(Field::new("lo", DataType::Float64, true));
    fields.push(Field::new("hi", DataType::Float64, true));
    Arc::new(Schema::new(fields))
}

/// One group's running totals.
#[derive(Debug, Clone, Copy)]
struct Acc {
    n: i64,
    s: f64,
    c: i64,
    lo: f64,
    hi: f64,
}

impl Acc {
    fn add(&mut self, score: Option<f64>) {
        self.n += 1;
        if let Some(v) = score {
            self.add_score(v);
        }
    }

    fn add_score(&mut self, v: f64) {
        lower(&mut self.lo, v);
        raise(&mut self.hi, v);
        self.s += v;
        self.c += 1;
    }

    fn merge(&mut self, other: &Acc) {
        if other.c > 0 {
            lower(&mut self.lo, other.lo);
            raise(&mut self.hi, other.hi);
        }
        self.n += other.n;
        self.s += other.s;
        self.c += other.c;
    }
}

impl Default for Acc {
    fn default() -> Self {
        Self { n: 0, s: 0.0, c: 0, lo: f64::MAX, hi: f64::MIN }
    }
}

/// DataFusion's grouped `min` of floats, followed to the letter (NaN included): a value replaces the
/// current one when it is smaller or the two do not compare, from a start of `f64::MAX`.
fn lower(current: &mut f64, value: f64) {
    if matches!(value.partial_cmp(current), Some(std::cmp::Ordering::Less) | None) {
        *current = value;
    }
}

/// DataFusion's grouped `max` of floats: as [`lower`], from `f64::MIN`.
fn raise(current: &mut f64, value: f64) {
    if matches!(value.partial_cmp(current), Some(std::cmp::Ordering::Greater) | None) {
        *current = value;
    }
}

/// Values seen in one key column, numbered; 0 stands for null.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<String, u32>,
    values: Vec<String>,
}

impl Interner {
    fn id(&mut self, value: &str) -> u32 {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        self.values.push(value.to_owned());
        let id = self.values.len() as u32;
        self.ids.insert(value.to_owned(), id);
        id
    }

    fn value(&self, id: u32) -> Option<&str> {
        id.checked_sub(1).map(|i| self.values[i as usize].as_str())
    }
}

/// Groups folded from a share of the files, keyed by interned values.
#[derive(Debug, Default)]
struct Groups {
    interners: [Interner; 4],
    accs: HashMap<[u32; 4], Acc>,
    /// A batch's cells (one per combination of its dictionaries' codes), all zero between batches,
    /// and the cells the current batch touched.
    dense: Vec<Acc>,
    touched: Vec<usize>,
    /// The current batch's cell of each row.
    row_cells: Vec<usize>,
}

impl Groups {
    /// Folds one batch whose key columns are dictionary arrays.
    fn fold(&mut self, keys: [&DictionaryArray<Int32Type>; 4], scores: Option<&Float64Array>) -> Result<()> {
        // Per key column: the interned id of each dictionary entry, then 0 for null at the end.
        let mut ids: [Vec<u32>; 4] = Default::default();
        for (c, dict) in keys.iter().enumerate() {
            let values = dict.values().as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                AnalyticsError::Engine(format!(
                    "{}: dictionary of {}, expected strings",
                    KEYS[c],
                    dict.values().data_type()
                ))
            })?;
            ids[c] = values.iter().map(|v| v.map_or(0, |v| self.interners[c].id(v))).collect();
            ids[c].push(0);
        }
        let widths: [usize; 4] = std::array::from_fn(|c| ids[c].len());
        // A row's code in a column: its key, or the null slot after the dictionary's entries.
        let code = |c: usize, row: usize| -> usize {
            if keys[c].is_null(row) { widths[c] - 1 } else { keys[c].keys().value(row) as usize }
        };
        let score = |row: usize| scores.and_then(|s| s.is_valid(row).then(|| s.value(row)));
        let cells = widths.iter().try_fold(1usize, |a, w| a.checked_mul(*w)).unwrap_or(usize::MAX);
        let rows = keys[0].len();
        if cells > MAX_DENSE_CELLS {
            for row in 0..rows {
                let key: [u32; 4] = std::array::from_fn(|c| ids[c][code(c, row)]);
                self.accs.entry(key).or_default().add(score(row));
            }
            return Ok(());
        }
        if self.dense.len() < cells {
            self.dense.resize(cells, Acc::default());
        }
        // Each row's cell, built a column at a time: ((c3 * w2 + c2) * w1 + c1) * w0 + c0.
        let row_cells = &mut self.row_cells;
        row_cells.clear();
        row_cells.resize(rows, 0);
        for c in (0..4).rev() {
            let width = widths[c];
            if keys[c].null_count() == 0 {
                // The keys of a dictionary array are within its values (checked when it was built).
                for (cell, key) in row_cells.iter_mut().zip(keys[c].keys().values()) {
                    *cell = *cell * width + *key as usize;
                }
            } else {
                for (row, cell) in row_cells.iter_mut().enumerate() {
                    *cell = *cell * width + code(c, row);
                }
            }
        }
        let dense = &mut self.dense;
        let touched = &mut self.touched;
        match scores {
            Some(s) if s.null_count() == 0 => {
                for (cell, v) in row_cells.iter().zip(s.values()) {
                    let acc = &mut dense[*cell];
                    if acc.n == 0 {
                        touched.push(*cell);
                    }
                    acc.add(Some(*v));
                }
            }
            _ => {
                for (row, cell) in row_cells.iter().enumerate() {
                    let acc = &mut dense[*cell];
                    if acc.n == 0 {
                        touched.push(*cell);
                    }
                    acc.add(score(row));
                }
            }
        }
        for cell in touched.drain(..) {
            let acc = std::mem::take(&mut dense[cell]);
            let mut rest = cell;
            let key: [u32; 4] = std::array::from_fn(|c| {
                let code = rest % widths[c];
                rest /= widths[c];
                ids[c][code]
            });
            self.accs.entry(key).or_default().merge(&acc);
        }
        Ok(())
    }

    /// Adds another share's groups (their ids are its own, so they are mapped through the values).
    fn merge(&mut self, other: Groups) {
        for (key, acc) in other.accs {
            let key: [u32; 4] =
                std::array::from_fn(|c| other.interners[c].value(key[c]).map_or(0, |v| self.interners[c].id(v)));
            self.accs.entry(key).or_default().merge(&acc);
        }
    }

    fn into_batch(self) -> Result<RecordBatch> {
        let mut accs: Vec<([u32; 4], Acc)> = self.accs.into_iter().collect();
        accs.sort_by_key(|(key, _)| *key);
        let mut columns: Vec<ArrayRef> = (0..4)
            .map(|c| {
                let values: StringArray = accs.iter().map(|(key, _)| self.interners[c].value(key[c])).collect();
                Arc::new(values) as ArrayRef
            })
            .collect();
        let scored = |f: fn(&Acc) -> f64| -> ArrayRef {
            let mut b = Float64Builder::with_capacity(accs.len());
            for (_, a) in &accs {
                b.append_option((a.c > 0).then(|| f(a)));
            }
            Arc::new(b.finish())
        };
        columns.push(Arc::new(Int64Array::from_iter_values(accs.iter().map(|(_, a)| a.n))));
        columns.push(scored(|a| a.s));
        columns.push(Arc::new(Int64Array::from_iter_values(accs.iter().map(|(_, a)| a.c))));
        columns.push(scored(|a| a.lo));
        columns.push(scored(|a| a.hi));
        RecordBatch::try_new(schema(), columns).map_err(|e| AnalyticsError::Engine(e.to_string()))
    }
}

/// A share of the work: row groups of one file.
#[derive(Debug, Clone)]
struct Part {
    path: PathBuf,
    metadata: ArrowReaderMetadata,
    row_groups: Vec<usize>,
    rows: i64,
}

#[derive(Debug)]
enum Failure {
    /// A file listed is gone (replaced by compaction or prune): list again.
    Vanished,
    Other(AnalyticsError),
}

impl From<AnalyticsError> for Failure {
    fn from(e: AnalyticsError) -> Self {
        Failure::Other(e)
    }
}

fn open(path: &Path) -> std::result::Result<File, Failure> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Failure::Vanished,
        _ => Failure::Other(AnalyticsError::Engine(format!("{}: {e}", path.display()))),
    })
}

fn parquet_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> Failure + '_ {
    move |e| Failure::Other(AnalyticsError::Engine(format!("{}: {e}", path.display())))
}

/// The data files of the table under `dir`: non-empty `*.parquet` in its `date=` folders, as
/// DataFusion's listing of the same table finds them (temporary files are not data).
fn list(dir: &Path) -> std::result::Result<Vec<PathBuf>, Failure> {
    let read = |d: &Path| {
        std::fs::read_dir(d).map_err(|e| match e.kind() {
            // A day pruned, or the table not yet written, between listing and reading.
            std::io::ErrorKind::NotFound => Failure::Vanished,
            _ => Failure::Other(AnalyticsError::Engine(format!("{}: {e}", d.display()))),
        })
    };
    let entry_err = |e: std::io::Error| Failure::Other(AnalyticsError::Engine(e.to_string()));
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok(files);
    }
    for day in read(dir)? {
        let day = day.map_err(entry_err)?.path();
        let is_day = day.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("date="));
        if !is_day || !day.is_dir() {
            continue;
        }
        for file in read(&day)? {
            let file = file.map_err(entry_err)?;
            let path = file.path();
            if path.extension().is_some_and(|x| x == "parquet") && file.metadata().is_ok_and(|m| m.len() > 0) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a file's footer with the key columns typed as dictionaries (the reader then keeps Parquet's
/// dictionary pages as they are instead of expanding them into strings).
fn plan(path: &Path) -> std::result::Result<Vec<Part>, Failure> {
    let file = open(path)?;
    let plain = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(parquet_err(path))?;
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let fields: Vec<Field> = plain
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if KEYS.contains(&f.name().as_str()) {
                f.as_ref().clone().with_data_type(dictionary.clone())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    for key in KEYS {
        if !fields.iter().any(|f| f.name() == key) {
            return Err(AnalyticsError::Engine(format!("{}: no column {key}", path.display())).into());
        }
    }
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)));
    let metadata = ArrowReaderMetadata::try_new(plain.metadata().clone(), options).map_err(parquet_err(path))?;
    let row_groups = metadata.metadata().row_groups();
    Ok((0..row_groups.len())
        .map(|i| Part {
            path: path.to_owned(),
            metadata: metadata.clone(),
            row_groups: vec![i],
            rows: row_groups[i].num_rows(),
        })
        .collect())
}

/// Folds a share of the row groups.
fn fold(parts: &[Part]) -> std::result::Result<Groups, Failure> {
    let mut groups = Groups::default();
    for part in parts {
        let file = open(&part.path)?;
        let schema = part.metadata.schema().clone();
        let mut wanted: Vec<usize> = KEYS.iter().filter_map(|k| schema.index_of(k).ok()).collect();
        wanted.extend(schema.index_of(SCORE).ok());
        let mask = ProjectionMask::roots(part.metadata.parquet_schema(), wanted);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, part.metadata.clone())
            .with_projection(mask)
            .with_row_groups(part.row_groups.clone())
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(parquet_err(&part.path))?;
        for batch in reader {
            let batch = batch.map_err(|e| AnalyticsError::Engine(format!("{}: {e}", part.path.display())))?;
            let key = |k: &str| {
                batch
                    .column_by_name(k)
                    .and_then(|c| c.as_any().downcast_ref::<DictionaryArray<Int32Type>>())
                    .ok_or_else(|| {
                        AnalyticsError::Engine(format!("{}: {k} not read as a dictionary", part.path.display()))
                    })
            };
            let keys = [key(KEYS[0])?, key(KEYS[1])?, key(KEYS[2])?, key(KEYS[3])?];
            let scores = match batch.column_by_name(SCORE) {
                None => None,
                Some(c) => Some(c.as_any().downcast_ref::<Float64Array>().ok_or_else(|| {
                    AnalyticsError::Engine(format!(
                        "{}: {SCORE} is {}, expected Float64",
                        part.path.display(),
                        c.data_type()
                    ))
                })?),
            };
            groups.fold(keys, scores)?;
        }
    }
    Ok(groups)
}

/// Splits the parts into `n` shares of about as many rows each (largest first, each to the lightest share).
fn shares(mut parts: Vec<Part>, n: usize) -> Vec<Vec<Part>> {
    parts.sort_by_key(|p| std::cmp::Reverse(p.rows));
    let mut shares: Vec<(i64, Vec<Part>)> = (0..n.max(1)).map(|_| (0, Vec::new())).collect();
    for part in parts {
        let lightest = shares.iter_mut().min_by_key(|(rows, _)| *rows).expect("at least one share");
        lightest.0 += part.rows;
        lightest.1.push(part);
    }
    shares.into_iter().map(|(_, p)| p).filter(|p| !p.is_empty()).collect()
}

async fn attempt(dir: &Path) -> std::result::Result<RecordBatch, Failure> {
    let dir = dir.to_owned();
    let planned = tokio::task::spawn_blocking(move || -> std::result::Result<Vec<Part>, Failure> {
        let mut parts = Vec::new();
        for file in list(&dir)? {
            parts.extend(plan(&file)?);
        }
        Ok(parts)
    })
    .await
    .map_err(|e| AnalyticsError::Engine(e.to_string()))??;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tasks: Vec<_> =
        shares(planned, threads).into_iter().map(|share| tokio::task::spawn_blocking(move || fold(&share))).collect();
    // Every share is awaited, failed or not, so that no reader is left running beside a retry.
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.map_err(|e| AnalyticsError::Engine(e.to_string()))?);
    }
    let mut all = Groups::default();
    for groups in results {
        all.merge(groups?);
    }
    Ok(all.into_batch()?)
}

/// The groups of the experiments table whose files are under `dir` (its `date=` folders).
pub async fn experiment_groups(dir: &Path) -> Result<RecordBatch> {
    for _ in 0..ATTEMPTS {
        match attempt(dir).await {
            Ok(batch) => return Ok(batch),
            Err(Failure::Vanished) => continue,
            Err(Failure::Other(e)) => return Err(e),
        }
    }
    Err(AnalyticsError::Engine(format!(
        "{}: files kept changing while being read ({ATTEMPTS} attempts); try again",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Array, DictionaryArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Int32Type;

    use super::*;

    type Key = [Option<String>; 4];

    /// A row: its four keys (some null) and its score (some null).
    fn rows(n: usize, vocabulary: usize, seed: u64) -> Vec<(Key, Option<f64>)> {
        let mut state = seed;
        let mut next = move |m: u64| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % m
        };
        (0..n)
            .map(|_| {
                let key: Key = std::array::from_fn(|c| match next(vocabulary as u64 + 1) {
                    0 => None,
                    v => Some(format!("{}-{v}", KEYS[c])),
                });
                let score = (next(5) != 0).then(|| next(10_000) as f64 / 100.0);
                (key, score)
            })
            .collect()
    }

    /// What SQL's GROUP BY answers, computed the plain way.
    fn expected(rows: &[(Key, Option<f64>)]) -> BTreeMap<Key, (i64, f64, i64, f64, f64)> {
        let mut out: BTreeMap<Key, (i64, f64, i64, f64, f64)> = BTreeMap::new();
        for (key, score) in rows {
            let e = out.entry(key.clone()).or_insert((0, 0.0, 0, f64::MAX, f64::MIN));
            e.0 += 1;
            if let Some(v) = score {
                (e.1, e.2, e.3, e.4) = (e.1 + v, e.2 + 1, e.3.min(*v), e.4.max(*v));
            }
        }
        out
    }

    /// Folds `rows` in batches of `batch` rows, each cut out of a larger array (a slice with an offset).
    fn folded(rows: &[(Key, Option<f64>)], batch: usize) -> BTreeMap<Key, (i64, f64, i64, f64, f64)> {
        let mut groups = Groups::default();
        for chunk in rows.chunks(batch) {
            // One padding row on each side, so the arrays the fold sees are slices at offset 1.
            let padded: Vec<&(Key, Option<f64>)> = chunk.first().into_iter().chain(chunk).chain(chunk.last()).collect();
            let keys: Vec<DictionaryArray<Int32Type>> = (0..4)
                .map(|c| {
                    let whole: DictionaryArray<Int32Type> = padded.iter().map(|(k, _)| k[c].as_deref()).collect();
                    whole.slice(1, chunk.len())
                })
                .collect();
            let scores: Float64Array = padded.iter().map(|(_, s)| *s).collect();
            let scores = scores.slice(1, chunk.len());
            groups.fold([&keys[0], &keys[1], &keys[2], &keys[3]], Some(&scores)).expect("fold");
        }
        let batch = groups.into_batch().expect("batch");
        let text = |i: usize| batch.column(i).as_any().downcast_ref::<StringArray>().expect("keys").clone();
        let int = |i: usize| batch.column(i).as_any().downcast_ref::<Int64Array>().expect("ints").clone();
        let float = |i: usize| batch.column(i).as_any().downcast_ref::<Float64Array>().expect("floats").clone();
        let (keys, n, s, c, lo, hi) =
            ([text(0), text(1), text(2), text(3)], int(4), float(5), int(6), float(7), float(8));
        (0..batch.num_rows())
            .map(|r| {
                let key: Key = std::array::from_fn(|k| keys[k].is_valid(r).then(|| keys[k].value(r).to_owned()));
                let scored = c.value(r) > 0;
                assert_eq!(s.is_valid(r) && lo.is_valid(r) && hi.is_valid(r), scored, "{key:?}");
                let value = if scored {
                    (n.value(r), s.value(r), c.value(r), lo.value(r), hi.value(r))
                } else {
                    (n.value(r), 0.0, 0, f64::MAX, f64::MIN)
                };
                (key, value)
            })
            .collect()
    }

    fn assert_same(
        actual: &BTreeMap<Key, (i64, f64, i64, f64, f64)>,
        expected: &BTreeMap<Key, (i64, f64, i64, f64, f64)>,
    ) {
        assert_eq!(actual.len(), expected.len());
        for ((ka, a), (ke, e)) in actual.iter().zip(expected) {
            assert_eq!(ka, ke);
            assert_eq!((a.0, a.2, a.3, a.4), (e.0, e.2, e.3, e.4), "{ka:?}");
            assert!((a.1 - e.1).abs() < 1e-6 * e.1.abs().max(1.0), "{ka:?}: {} vs {}", a.1, e.1);
        }
    }

    #[test]
    fn folding_on_codes_answers_as_group_by_does() {
        // Few values (the dense table) and many (more combinations than it holds: the hash map), with
        // null keys, null scores and sliced arrays.
        for (vocabulary, batch, seed) in [(3, 100, 1), (3, 4_096, 2), (20, 1_000, 3), (20, 7, 4)] {
            let rows = rows(20_000, vocabulary, seed);
            assert_same(&folded(&rows, batch), &expected(&rows));
        }
    }
}
