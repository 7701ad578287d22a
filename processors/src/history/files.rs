//! The history directory: Parquet files under `{table}/date=YYYY-MM-DD/`, grouped in segments.
//!
//! A segment is what the materializer consumed from one topic partition between two flushes: the offsets
//! `[start, end)`, and the files holding their rows (any tables, any days). Every file of a segment is
//! named `{topic}~{partition}~{start}~{end}.parquet`; the segment is committed when its manifest
//! `_segments/{topic}~{partition}~{start}~{end}.json` exists. Files and manifests are written under a
//! temporary name, synced and renamed into place, the manifest last. So on start:
//! - where each partition resumes is the end of its last committed segment (no loss, no duplicate);
//! - data files no manifest lists are the remains of a flush that crashed, and are deleted;
//! - a segment covered by a wider one is the remains of a compaction that crashed after its merged
//!   segment was committed, and is deleted.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::SeenIds;
use super::tables::{self, Rows};

/// What can go wrong with the history directory.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = HistoryError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io { path: path.to_owned(), source }
}

fn file_err(path: &Path) -> impl FnOnce(String) -> HistoryError + '_ {
    move |message| HistoryError::File { path: path.to_owned(), message }
}

/// One committed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub topic: String,
    pub partition: i32,
    /// First offset covered.
    pub start: i64,
    /// One past the last offset covered: where the partition resumes.
    pub end: i64,
    /// Files, relative to the history directory.
    pub files: Vec<String>,
    pub rows: u64,
}

impl Segment {
    pub fn name(&self) -> String {
        segment_name(&self.topic, self.partition, self.start, self.end)
    }
}

fn segment_name(topic: &str, partition: i32, start: i64, end: i64) -> String {
    format!("{topic}~{partition}~{start:020}~{end:020}")
}

/// The UTC calendar day of `ms` since the epoch, as `YYYY-MM-DD` (Howard Hinnant's civil-from-days).
pub fn day(ms: i64) -> String {
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Writes `batch` to `path` as Parquet (snappy, dictionary-encoded strings) through a temporary name.
fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        // Dictionary pages for every column: besides the repeating strings, scores and latencies have
        // few distinct values (measured slower to query when written plain: benches/README.md).
        .set_dictionary_enabled(true)
        .set_max_row_group_row_count(Some(128 * 1024))
        // Pages of 4,096 rows: with experiments sorted by name, a query for one name reads few pages.
        .set_data_page_row_count_limit(4096)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| file_err(&tmp)(e.to_string()))?;
    writer.write(batch).map_err(|e| file_err(&tmp)(e.to_string()))?;
    let file = writer.into_inner().map_err(|e| file_err(&tmp)(e.to_string()))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Reads every row of a Parquet file.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| file_err(path)(e.to_string()))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| file_err(path)(e.to_string()))
}

/// Reads every row of a file of `table`, in this version's columns ([`tables::conform`]).
fn read_table(table: &str, path: &Path) -> Result<Vec<RecordBatch>> {
    read_parquet(path)?.iter().map(|b| tables::conform(table, b).map_err(|e| file_err(path)(e.to_string()))).collect()
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| HistoryError::Invalid(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The strings of column `name` in `batch`.
fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>())
}

/// What recovery found and removed at open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub orphan_files: usize,
    pub superseded_segments: usize,
}

/// What a prune removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub partitions: usize,
    pub runs: usize,
    pub rewritten_files: usize,
}

/// The history directory.
#[derive(Debug, Clone)]
pub struct HistoryDir {
    root: PathBuf,
    /// The writer's lock (see [`HistoryDir::open`]).
    _lock: Option<Arc<File>>,
}

impl HistoryDir {
    /// Opens (creating) the directory as its one writer: takes the writer's lock (held as long as any
    /// clone of the returned value lives) and recovers from an interrupted flush or compaction. A second
    /// writer (a `history prune` while `serve` materializes) is refused rather than racing the first.
    pub fn open(root: &Path) -> Result<(Self, Recovery)> {
        for table in tables::TABLES {
            std::fs::create_dir_all(root.join(table)).map_err(io(root))?;
        }
        let manifests = root.join("_segments");
        std::fs::create_dir_all(&manifests).map_err(io(root))?;
        let lock_path = manifests.join(".writer.lock");
        let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        if let Err(e) = lock.try_lock() {
            return Err(HistoryError::Invalid(format!(
                "{}: another process is writing this history (a running `serve` with the history processor?): {e}",
                root.display()
            )));
        }
        let dir = Self { root: root.to_owned(), _lock: Some(Arc::new(lock)) };
        let recovery = dir.recover()?;
        Ok((dir, recovery))
    }

    /// Opens the directory to read its segments only: no lock, no recovery, nothing written.
    pub fn read_only(root: &Path) -> Self {
        Self { root: root.to_owned(), _lock: None }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn table_dir(&self, table: &str) -> PathBuf {
        self.root.join(table)
    }

    fn manifests(&self) -> PathBuf {
        self.root.join("_segments")
    }

    /// Committed segments, by topic and partition, in offset order.
    pub fn segments(&self) -> Result<Vec<Segment>> {
        let dir = self.manifests();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                out.push(serde_json::from_slice::<Segment>(&bytes).map_err(|e| file_err(&path)(e.to_string()))?);
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition, a.start, -a.end).cmp(&(&b.topic, b.partition, b.start, -b.end)));
        Ok(out)
    }

    /// Where each topic partition resumes: the end of its last committed segment.
    pub fn positions(&self) -> Result<BTreeMap<(String, i32), i64>> {
        let mut out = BTreeMap::new();
        for s in self.segments()? {
            let end = out.entry((s.topic.clone(), s.partition)).or_insert(s.end);
            *end = (*end).max(s.end);
        }
        Ok(out)
    }

    /// Every data file under the tables, relative to the root.
    fn data_files(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for table in tables::TABLES {
            let dir = self.table_dir(table);
            for day in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let day = day.map_err(io(&dir))?.path();
                if !day.is_dir() {
                    continue;
                }
                for file in std::fs::read_dir(&day).map_err(io(&day))? {
                    let path = file.map_err(io(&day))?.path();
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    if name.ends_with(".tmp") {
                        std::fs::remove_file(&path).map_err(io(&path))?;
                    } else if name.ends_with(".parquet")
                        && let Ok(rel) = path.strip_prefix(&self.root)
                    {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
            }
        }
        Ok(out)
    }

    fn recover(&self) -> Result<Recovery> {
        let mut recovery = Recovery::default();
        let segments = self.segments()?;
        // A segment inside a wider one of the same partition was merged by a compaction that did not finish
        // removing it.
        let mut kept: Vec<Segment> = Vec::new();
        for s in segments {
            let covered = kept.iter().any(|k| {
                k.topic == s.topic && k.partition == s.partition && k.start <= s.start && s.end <= k.end && *k != s
            });
            if covered {
                self.remove_segment(&s)?;
                recovery.superseded_segments += 1;
            } else {
                kept.push(s);
            }
        }
        let listed: HashSet<&String> = kept.iter().flat_map(|s| s.files.iter()).collect();
        for file in self.data_files()? {
            if !listed.contains(&file) {
                let path = self.root.join(&file);
                std::fs::remove_file(&path).map_err(io(&path))?;
                recovery.orphan_files += 1;
            }
        }
        for entry in std::fs::read_dir(self.manifests()).map_err(io(&self.manifests()))? {
            let path = entry.map_err(io(&self.manifests()))?.path();
            if path.to_string_lossy().ends_with(".tmp") {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        recovery.segments = kept.len();
        Ok(recovery)
    }

    fn remove_segment(&self, s: &Segment) -> Result<()> {
        let manifest = self.manifests().join(format!("{}.json", s.name()));
        std::fs::remove_file(&manifest).map_err(io(&manifest))?;
        for file in &s.files {
            let path = self.root.join(file);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io(&path)(e));
            }
        }
        Ok(())
    }

    /// Writes the rows of offsets `[start, end)` of one topic partition as a committed segment: a file
    /// per table and day, then the manifest. A segment without rows still records how far it read.
    pub fn write_segment(&self, topic: &str, partition: i32, start: i64, end: i64, rows: Rows) -> Result<Segment> {
        let name = segment_name(topic, partition, start, end);
        let count = rows.len() as u64;
        let mut files = Vec::new();
        for (table, days, batch) in rows.finish().map_err(|e| HistoryError::Invalid(e.to_string()))? {
            files.push(self.write_file(table, &day(days * 86_400_000), &name, &batch)?);
        }
        let segment = Segment { topic: topic.to_owned(), partition, start, end, files, rows: count };
        write_json(&self.manifests().join(format!("{name}.json")), &segment)?;
        Ok(segment)
    }

    fn write_file(&self, table: &str, date: &str, name: &str, batch: &RecordBatch) -> Result<String> {
        let dir = self.table_dir(table).join(format!("{}={date}", tables::DATE));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{name}.parquet"));
        write_parquet(&path, batch)?;
        Ok(format!("{table}/{}={date}/{name}.parquet", tables::DATE))
    }

    /// Merges runs of consecutive small segments of a partition (each under `target_rows`, together at
    /// most `target_rows`) into one segment with one file per table and day. Returns segments merged away.
    pub fn compact(&self, target_rows: u64) -> Result<usize> {
        let segments = self.segments()?;
        let mut groups: Vec<Vec<Segment>> = Vec::new();
        for s in segments {
            let joins = groups.last().is_some_and(|g| {
                let last = &g[g.len() - 1];
                last.topic == s.topic
                    && last.partition == s.partition
                    && last.end == s.start
                    && g.iter().map(|x| x.rows).sum::<u64>() + s.rows <= target_rows
            });
            if joins {
                groups.last_mut().expect("joins a group").push(s);
            } else {
                groups.push(vec![s]);
            }
        }
        let mut merged = 0;
        for group in groups.into_iter().filter(|g| g.len() > 1) {
            let (first, last) = (&group[0], &group[group.len() - 1]);
            let name = segment_name(&first.topic, first.partition, first.start, last.end);
            // Files of one table and day, across the group, become one file.
            let mut by_place: BTreeMap<(String, String), Vec<RecordBatch>> = BTreeMap::new();
            for file in group.iter().flat_map(|s| s.files.iter()) {
                let mut parts = file.splitn(3, '/');
                let (Some(table), Some(date_dir)) = (parts.next(), parts.next()) else { continue };
                let path = self.root.join(file);
                if !path.exists() {
                    continue; // pruned
                }
                by_place.entry((table.to_owned(), date_dir.to_owned())).or_default().extend(read_table(table, &path)?);
            }
            let mut files = Vec::new();
            for ((table, date_dir), batches) in by_place {
                let schema = tables::schema(&table);
                let batch = arrow::compute::concat_batches(&schema, &batches)
                    .and_then(|b| tables::sorted(&table, b))
                    .map_err(|e| HistoryError::Invalid(e.to_string()))?;
                let date = date_dir.trim_start_matches(&format!("{}=", tables::DATE)).to_owned();
                files.push(self.write_file(&table, &date, &name, &batch)?);
            }
            let rows = group.iter().map(|s| s.rows).sum();
            let segment = Segment {
                topic: first.topic.clone(),
                partition: first.partition,
                start: first.start,
                end: last.end,
                files,
                rows,
            };
            write_json(&self.manifests().join(format!("{name}.json")), &segment)?;
            for old in &group {
                self.remove_segment(old)?;
            }
            merged += group.len();
        }
        Ok(merged)
    }

    /// Deletes the `date=` partitions before `cutoff` (YYYY-MM-DD) in every table, and the rows of other
    /// tables that belong to the results deleted (a result's rows share its day, so this only catches rows
    /// filed under a later day, such as a rollback that finished after midnight).
    pub fn prune(&self, cutoff: &str) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        let mut runs: BTreeSet<String> = BTreeSet::new();
        for table in tables::TABLES {
            let dir = self.table_dir(table);
            for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let path = entry.map_err(io(&dir))?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let Some(date) = name.strip_prefix(&format!("{}=", tables::DATE)) else { continue };
                if date >= cutoff {
                    continue;
                }
                if table == tables::EXPERIMENTS {
                    for file in std::fs::read_dir(&path).map_err(io(&path))? {
                        let file = file.map_err(io(&path))?.path();
                        for batch in read_parquet(&file)? {
                            if let Some(ids) = strings(&batch, "run_id") {
                                runs.extend(ids.iter().flatten().map(str::to_owned));
                            }
                        }
                    }
                }
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
                pruned.partitions += 1;
            }
        }
        pruned.runs = runs.len();
        if runs.is_empty() {
            return Ok(pruned);
        }
        for table in [tables::PARAMETERS, tables::TAGS, tables::ROLLBACK_EVENTS] {
            for file in self.data_files()?.into_iter().filter(|f| f.starts_with(&format!("{table}/"))) {
                let path = self.root.join(&file);
                let batches = read_table(table, &path)?;
                let mut changed = false;
                let mut kept = Vec::new();
                for batch in batches {
                    let Some(ids) = strings(&batch, "run_id") else { continue };
                    let keep: BooleanArray =
                        ids.iter().map(|id| Some(!id.is_some_and(|id| runs.contains(id)))).collect();
                    changed |= keep.true_count() < batch.num_rows();
                    kept.push(
                        arrow::compute::filter_record_batch(&batch, &keep)
                            .map_err(|e| HistoryError::Invalid(e.to_string()))?,
                    );
                }
                if changed {
                    let batch = arrow::compute::concat_batches(&tables::schema(table), &kept)
                        .map_err(|e| HistoryError::Invalid(e.to_string()))?;
                    write_parquet(&path, &batch)?;
                    pruned.rewritten_files += 1;
                }
            }
        }
        Ok(pruned)
    }

    /// Event ids in the experiments and ab_tests tables (the materializer drops a result or an A/B
    /// report published twice).
    pub fn experiment_ids(&self) -> Result<SeenIds> {
        let mut ids = SeenIds::default();
        let kept = [format!("{}/", tables::EXPERIMENTS), format!("{}/", tables::AB_TESTS)];
        for file in self.data_files()?.into_iter().filter(|f| kept.iter().any(|k| f.starts_with(k))) {
            for batch in read_parquet(&self.root.join(file))? {
                if let Some(col) = strings(&batch, "event_id") {
                    (0..col.len()).filter(|i| col.is_valid(*i)).for_each(|i| {
                        ids.insert(col.value(i));
                    });
                }
            }
        }
        Ok(ids)
    }
}
