//! The sync controller (`zonewall sync`): firewall commits -> the `firewall` tier of
//! ZonePolicy objects, in the cluster or in a directory.
//!
//! ```text
//! source (file | Panorama: config audit -> running config)  --poll every 90-100 % of interval-->
//!   parse -> resolve -> translate = Desired (last good kept)
//!   --> target: Kubernetes (watch -> TierCache -> plan -> apply/delete + Event + audit)
//!            or directory  (compare -> publish one generation + audit)
//! ```
//!
//! Guarantees:
//! - an invalid, truncated or untranslatable configuration never replaces the last good
//!   desired state: it is reported (log, counter) and the target stays as it is;
//! - Panorama unreachable changes nothing, and is reported every interval;
//! - in Kubernetes, the controller owns the whole `firewall` tier: any object it did not
//!   produce is removed and any edit restored, as soon as the watch reports it and at the
//!   latest one interval later, but only from a complete list (see [`cache`]);
//! - ownership is on the objects (labels, spec hash annotation), so a restart changes nothing;
//! - applying the same desired state twice performs no operation.

pub mod audit;
pub mod audit_format;
pub mod cache;
pub mod cli;
pub mod desired;
pub mod kube;
pub mod plan;
pub mod source;
pub mod stats;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::firewall::panos::parse::ParseMemo;
use crate::firewall::panos::resolve::ResolveMemo;
use crate::firewall::panos::{self, Limits, ResolveOptions};
use crate::metrics::{DriftAction, Readiness, SyncErrorKind, SyncMetrics};
use crate::policy::directory::{self, ObjectFile};
use crate::policy::load::parse_documents;
use crate::policy::resource::Mode;
use crate::translate::{self, FIREWALL_FILE_PREFIX, TranslateMemo, TranslateOptions};

pub use audit::{AuditLog, AuditRecord, AuditSink};
pub use cli::{SyncArgs, run_cli};
pub use desired::{CommitInfo, Desired};
pub use plan::{Change, ChangeKind, plan};
pub use source::{Fetched, Source, SourceError};
pub use stats::SyncStats;

use self::desired::DesiredObject;
use self::kube::KubeTarget;

/// Where the tier is written.
pub enum Target {
    Kubernetes(Box<KubeTarget>),
    Directory {
        dir: PathBuf,
        /// What the directory holds (object file name -> what is known of it), once read or
        /// written.
        published: Option<BTreeMap<String, OnDisk>>,
    },
}

/// One object file of an output directory, as the controller knows it.
#[derive(Clone, Debug)]
pub enum OnDisk {
    /// Written (or verified) by this controller as `from`'s object of the same name; the
    /// stamp taken then tells a later edit by someone else.
    Written {
        from: Arc<Desired>,
        stamp: Option<FileStamp>,
        text_hash: String,
    },
    /// Read from the directory: at start, after a failed publication, or after its stamp
    /// changed (`edited`: someone else wrote it while the controller ran). `known` when the
    /// generation's manifest records exactly this text.
    Read {
        text: String,
        edited: bool,
        known: Option<Known>,
    },
    /// Written by this controller and since removed by someone else.
    Missing,
}

/// What an output directory's manifest records of a file the controller wrote: the object's
/// fingerprint and the hash of the file's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    fingerprint: String,
    text_hash: String,
}

/// The manifest of a publication: `FILE<TAB>FINGERPRINT<TAB>TEXT-HASH` per line.
fn manifest_text(entries: &BTreeMap<String, Known>) -> String {
    let mut text = String::new();
    for (file, known) in entries {
        text.push_str(&format!(
            "{file}\t{}\t{}\n",
            known.fingerprint, known.text_hash
        ));
    }
    text
}

fn parse_manifest(text: &str) -> BTreeMap<String, Known> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (file, fingerprint, text_hash) = (fields.next()?, fields.next()?, fields.next()?);
            Some((
                file.to_string(),
                Known {
                    fingerprint: fingerprint.to_string(),
                    text_hash: text_hash.to_string(),
                },
            ))
        })
        .collect()
}

/// What tells a file apart from the one the controller wrote: an editor's rewrite changes the
/// inode, an edit in place the size or modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    /// The stamp of the file `path` names (following the visible symlink to its generation).
    fn of(path: &std::path::Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
        })
    }
}

impl Target {
    pub fn directory(dir: PathBuf) -> Self {
        Target::Directory {
            dir,
            published: None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Kubernetes(_) => "kubernetes".to_string(),
            Target::Directory { dir, .. } => format!("directory:{}", dir.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "{0}; the last good policy stays in place: fix the configuration (and commit again in Panorama)"
    )]
    InvalidConfig(String),
    #[error(
        "{0}; the last good policy stays in place: fix the rule or zone named (and commit again in Panorama)"
    )]
    Untranslatable(String),
    #[error("{0}")]
    Apply(String),
    #[error(
        "the list of ZonePolicy objects did not complete within {0:?}; check the API server and that this ServiceAccount may list and watch zonepolicies"
    )]
    ListTimeout(Duration),
}

impl SyncError {
    /// 2 for input the operator must fix, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            SyncError::InvalidConfig(_) | SyncError::Untranslatable(_) => 2,
            _ => 1,
        }
    }
}

/// What one reconcile did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub applied: usize,
    pub deleted: usize,
    pub remediated: usize,
    /// Of the remediations: objects put back, and objects removed.
    pub restored: usize,
    pub removed: usize,
    pub failed: usize,
    /// Audit records that could not be written.
    pub audit_failures: usize,
    /// The cluster view was not complete yet: nothing was done.
    pub waiting_for_list: bool,
}

impl Reconciled {
    pub fn operations(&self) -> usize {
        self.applied + self.deleted
    }
}

/// Settings of a [`Controller`] that are not its source or target.
#[derive(Clone, Debug)]
pub struct Options {
    pub device_group: Option<String>,
    pub mode: Mode,
}

pub struct Controller {
    pub source: Source,
    pub target: Target,
    options: Options,
    /// The last good desired state (shared with what a directory target remembers it wrote).
    desired: Option<Arc<Desired>>,
    /// When the desired state changed and has not been fully applied yet.
    pending_since: Option<Instant>,
    audit: Arc<AuditLog>,
    pub stats: Arc<SyncStats>,
    metrics: Option<SyncMetrics>,
    /// Set ready after the first pass that left the target equal to the desired state.
    readiness: Option<Readiness>,
    /// What the last pass leaves for the next; none for `--once`.
    memo: Option<Memo>,
}

/// What translating one configuration leaves for the next (see [`ParseMemo`],
/// [`ResolveMemo`] and [`TranslateMemo`]).
#[derive(Default)]
pub struct Memo {
    /// Configurations that were read by reading one changed rule again.
    pub edits: usize,
    parse: ParseMemo,
    resolve: ResolveMemo,
    translate: TranslateMemo,
    /// The objects made from the last translation, by name.
    objects: BTreeMap<String, Arc<DesiredObject>>,
}

/// Parses, resolves and translates one configuration, taking over from `memo` what the
/// previous one already resolved; without a memo (`--once`, `--diff`), one pass that keeps
/// nothing.
pub fn translate_fetched(
    fetched: &Fetched,
    options: &Options,
    mut memo: Option<&mut Memo>,
) -> Result<Desired, SyncError> {
    let mut phases = Phases::start();
    let limits = Limits::default();
    let resolve_options = ResolveOptions {
        device_group: options.device_group.clone(),
        ..ResolveOptions::default()
    };
    let resolved = match memo.as_deref_mut() {
        Some(memo) => resolve_remembered(fetched, &resolve_options, limits, memo, &mut phases)?,
        None => {
            let config =
                panos::parse_config(&fetched.text, &fetched.origin, limits).map_err(invalid)?;
            phases.mark("parse");
            let resolved = panos::resolve(&config, &resolve_options).map_err(invalid)?;
            drop(config);
            phases.mark("resolve");
            resolved
        }
    };
    // Each warning is also in the status of the object holding the rule; a large Panorama
    // has thousands, so the log gets one line per configuration and the details at debug.
    if !resolved.warnings.is_empty() {
        warn!(
            origin = %fetched.origin,
            warnings = resolved.warnings.len(),
            "rules not translated exactly (see status.warnings of the ZonePolicy objects, or run with ZONEWALL_LOG=debug)"
        );
    }
    for warning in &resolved.warnings {
        tracing::debug!(origin = %fetched.origin, "{warning}");
    }
    let translate_options = TranslateOptions {
        mode: options.mode,
        // YAML only for what changes in an output directory, and never for the API server.
        documents: false,
        commit: fetched
            .commit
            .as_ref()
            .and_then(|commit| commit.id)
            .map(|id| id.to_string()),
        ..TranslateOptions::default()
    };
    let untranslatable = |e: translate::TranslateError| SyncError::Untranslatable(e.to_string());
    let warnings = resolved.warnings.len();
    let (origin, device_group, commit) = (
        fetched.origin.clone(),
        options.device_group.clone(),
        fetched.commit.clone(),
    );
    let desired = match memo {
        Some(memo) => {
            let translated = memo
                .translate
                .translate(resolved, &translate_options)
                .map_err(untranslatable)?;
            phases.mark("translate");
            let desired = Desired::from_translated(
                translated,
                &memo.objects,
                origin,
                device_group,
                commit,
                warnings,
            );
            memo.objects.clone_from(&desired.objects);
            desired
        }
        None => {
            let translation =
                translate::translate(&resolved, &translate_options).map_err(untranslatable)?;
            phases.mark("translate");
            Desired::from_translation(translation, origin, device_group, commit, warnings)
        }
    };
    phases.mark("hash");
    phases.log(&fetched.origin);
    Ok(desired)
}

/// A configuration that cannot be read or resolved.
fn invalid(error: panos::PanosError) -> SyncError {
    SyncError::InvalidConfig(error.to_string())
}

/// Parses and resolves through `memo`: a commit that changed one rule reads that rule again
/// and takes everything else over.
fn resolve_remembered(
    fetched: &Fetched,
    resolve_options: &ResolveOptions,
    limits: Limits,
    memo: &mut Memo,
    phases: &mut Phases,
) -> Result<panos::Resolved, SyncError> {
    let edited = memo
        .parse
        .edited_rule(&fetched.text, &fetched.origin, limits)
        .and_then(|edit| {
            let span = edit.span.clone();
            Some((memo.resolve.resolve_edit(edit, resolve_options)?, span))
        });
    if let Some((resolved, span)) = edited {
        let resolved = resolved.map_err(invalid)?;
        memo.parse.edited(&fetched.text, &span);
        memo.edits += 1;
        phases.mark("read one rule again and resolve");
        return Ok(resolved);
    }
    let config = memo
        .parse
        .parse(&fetched.text, &fetched.origin, limits)
        .map_err(invalid)?;
    phases.mark("parse");
    let resolved = memo
        .resolve
        .resolve(config, resolve_options)
        .map_err(invalid)?;
    phases.mark("resolve");
    Ok(resolved)
}

/// Wall time of the phases of one pass, logged at debug level: where a commit's latency goes.
struct Phases {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Self {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.done.push((phase, now - self.last));
        self.last = now;
    }

    fn log(&self, what: &str) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let text: Vec<String> = self
                .done
                .iter()
                .map(|(phase, took)| format!("{phase} {} ms", took.as_millis()))
                .collect();
            tracing::debug!(%what, phases = %text.join(", "), "sync phase timings");
        }
    }
}

/// The interval shortened by up to 10 %, so that several controllers do not poll Panorama in
/// step. Only ever shorter: a commit is noticed at most `interval` after it appears.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.1 * fastrand::f64())
}

impl Controller {
    pub fn new(source: Source, target: Target, options: Options, audit: Arc<AuditLog>) -> Self {
        Controller {
            source,
            target,
            options,
            desired: None,
            pending_since: None,
            audit,
            stats: Arc::new(SyncStats::default()),
            metrics: None,
            readiness: None,
            memo: Some(Memo::default()),
        }
    }

    /// `/readyz` turns ready once the first desired state is fully applied.
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Also records into the Prometheus families of the sync controller.
    pub fn with_metrics(mut self, metrics: SyncMetrics) -> Self {
        if let Target::Kubernetes(kube) = &mut self.target {
            kube.set_metrics(metrics.clone());
        }
        self.metrics = Some(metrics);
        self
    }

    fn record_error(&self, kind: SyncErrorKind) {
        if let Some(metrics) = &self.metrics {
            metrics.record_error(kind);
        }
    }

    /// The last good desired state, if any.
    pub fn desired(&self) -> Option<&Desired> {
        self.desired.as_deref()
    }

    /// Polls the source; a new valid configuration becomes the desired state. Returns whether
    /// the desired state changed. Errors leave the desired state as it was.
    pub async fn refresh(&mut self) -> Result<bool, SyncError> {
        let mut phases = Phases::start();
        let fetched = match self.source.poll().await {
            Ok(None) => return Ok(false),
            Ok(Some(fetched)) => fetched,
            Err(error) => {
                SyncStats::add(&self.stats.errors_source, 1);
                self.record_error(match error {
                    SourceError::File { .. } => SyncErrorKind::Config,
                    _ => SyncErrorKind::Panorama,
                });
                return Err(error.into());
            }
        };
        let noticed = Instant::now();
        phases.mark("read");
        phases.log(&fetched.origin);
        SyncStats::add(&self.stats.commits_seen, 1);
        // Whatever the outcome, this version has been handled: an invalid configuration is
        // not fetched and reported again until the source changes.
        self.source.mark_handled(fetched.marker.clone());
        let desired = match translate_fetched(&fetched, &self.options, self.memo.as_mut()) {
            Ok(desired) => desired,
            Err(error) => {
                SyncStats::add(&self.stats.errors_config, 1);
                self.record_error(match error {
                    SyncError::Untranslatable(_) => SyncErrorKind::Translate,
                    _ => SyncErrorKind::Config,
                });
                return Err(error);
            }
        };
        info!(
            origin = %desired.origin,
            commit = ?desired.commit,
            objects = desired.objects.len(),
            warnings = desired.warnings,
            "new firewall configuration translated"
        );
        let changed = self
            .desired
            .as_ref()
            .is_none_or(|current| !current.same_objects(&desired));
        self.desired = Some(Arc::new(desired));
        if changed && self.pending_since.is_none() {
            self.pending_since = Some(noticed);
        }
        Ok(changed)
    }

    /// Makes the target equal to the desired state (nothing when there is none yet).
    pub async fn reconcile(&mut self) -> Reconciled {
        let Some(desired) = self.desired.as_ref() else {
            return Reconciled::default();
        };
        let mut phases = Phases::start();
        let report = match &mut self.target {
            Target::Kubernetes(kube) => {
                reconcile_kube(kube.as_ref(), desired, &self.audit, &self.stats).await
            }
            Target::Directory { dir, published } => {
                reconcile_directory(dir, published, desired, &self.audit, &self.stats)
            }
        };
        if report.operations() > 0 || report.failed > 0 {
            phases.mark("plan and apply");
            phases.log(&self.target.describe());
        }
        if let Some(metrics) = &self.metrics {
            metrics.record_objects(report.applied as u64, report.deleted as u64);
            for _ in 0..report.restored {
                metrics.record_drift_remediation(DriftAction::Restored);
            }
            for _ in 0..report.removed {
                metrics.record_drift_remediation(DriftAction::Deleted);
            }
            for _ in 0..report.failed {
                metrics.record_error(match self.target {
                    Target::Kubernetes(_) => SyncErrorKind::Apply,
                    Target::Directory { .. } => SyncErrorKind::Output,
                });
            }
            for _ in 0..report.audit_failures {
                metrics.record_error(SyncErrorKind::Audit);
            }
        }
        if report.failed == 0 && !report.waiting_for_list {
            self.stats.mark_success();
            if let Some(metrics) = &self.metrics {
                metrics.record_sync_success(std::time::SystemTime::now());
            }
            if let Some(readiness) = &self.readiness
                && self.desired.is_some()
            {
                readiness.set_ready();
            }
            if let Some(since) = self.pending_since.take() {
                if let Some(metrics) = &self.metrics {
                    metrics.record_commit_applied(since.elapsed());
                }
                let millis = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                SyncStats::set(&self.stats.last_commit_to_applied_millis, millis);
                SyncStats::add(&self.stats.commits_applied, 1);
                info!(
                    applied = report.applied,
                    deleted = report.deleted,
                    millis,
                    "firewall tier is up to date"
                );
            }
        }
        report
    }

    /// Waits until the cluster view is complete (Kubernetes) or returns at once.
    pub async fn wait_for_list(&self, limit: Duration) -> Result<(), SyncError> {
        let Target::Kubernetes(kube) = &self.target else {
            return Ok(());
        };
        let started = Instant::now();
        while !kube.ready() {
            if started.elapsed() > limit {
                return Err(SyncError::ListTimeout(limit));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// `--once`: read the source, apply, return. Fails when the source cannot be read, the
    /// configuration is invalid or an operation failed.
    pub async fn run_once(&mut self, list_limit: Duration) -> Result<Reconciled, SyncError> {
        // One pass: nothing to keep for a next one.
        self.memo = None;
        self.refresh().await?;
        self.wait_for_list(list_limit).await?;
        let report = self.reconcile().await;
        if report.failed > 0 {
            return Err(SyncError::Apply(format!(
                "{} operation(s) failed; see the log and the audit records",
                report.failed
            )));
        }
        Ok(report)
    }

    /// `--diff`: what the candidate configuration would change, applying nothing.
    pub async fn diff(&mut self, list_limit: Duration) -> Result<Vec<Change>, SyncError> {
        let fetched = self.source.candidate().await?;
        // The candidate is not what the controller runs: nothing of it is kept.
        let desired = translate_fetched(&fetched, &self.options, None)?;
        match &mut self.target {
            Target::Kubernetes(kube) => {
                let started = Instant::now();
                loop {
                    if let Some(changes) = kube.plan(&desired) {
                        return Ok(changes);
                    }
                    if started.elapsed() > list_limit {
                        return Err(SyncError::ListTimeout(list_limit));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Target::Directory { dir, published } => {
                let mut current = match published {
                    Some(current) => current.clone(),
                    None => read_published(dir).map_err(SyncError::Apply)?,
                };
                notice_edits(dir, &mut current);
                directory_plan(&current, &desired)
                    .map(|plan| plan.changes)
                    .map_err(|e| SyncError::Apply(e.to_string()))
            }
        }
    }

    /// The controller loop: poll every interval (jittered), reconcile after each poll and
    /// whenever the cluster reports a change, until `cancel`.
    pub async fn run(mut self, interval: Duration, cancel: CancellationToken) {
        let changed = match &self.target {
            Target::Kubernetes(kube) => {
                kube.spawn_watch(cancel.child_token());
                Some(Arc::clone(&kube.changed))
            }
            Target::Directory { .. } => None,
        };
        let mut degraded = false;
        // Polls are spaced from one poll's start to the next, not from the end of the work a
        // poll caused: a commit that takes seconds to translate does not delay the next look.
        let mut next_poll = tokio::time::Instant::now();
        loop {
            next_poll += jittered(interval);
            match self.refresh().await {
                Ok(_) => {
                    if degraded {
                        info!(origin = %self.source.origin(), "firewall source is reachable again");
                        degraded = false;
                    }
                }
                Err(error @ (SyncError::InvalidConfig(_) | SyncError::Untranslatable(_))) => {
                    error!(%error, "rejected the new firewall configuration");
                }
                Err(error) => {
                    degraded = true;
                    warn!(%error, "cannot read the firewall source; the applied policy stays as it is");
                }
            }
            self.reconcile().await;
            // The commit is applied: what it replaced can go now.
            if let Some(memo) = &mut self.memo {
                memo.resolve.free_retired();
                memo.translate.free_retired();
            }
            let now = tokio::time::Instant::now();
            if next_poll < now {
                next_poll = now;
            }
            let deadline = next_poll;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep_until(deadline) => break,
                    () = async {
                        match &changed {
                            Some(notify) => notify.notified().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        // Let a burst of watch events settle, then fix drift right away.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        self.reconcile().await;
                    }
                }
            }
        }
    }
}

async fn reconcile_kube(
    kube: &KubeTarget,
    desired: &Desired,
    audit: &AuditLog,
    stats: &SyncStats,
) -> Reconciled {
    let Some(changes) = kube.plan(desired) else {
        return Reconciled {
            waiting_for_list: true,
            ..Reconciled::default()
        };
    };
    let mut report = Reconciled::default();
    for change in &changes {
        let result = if change.kind.is_delete() {
            kube.delete(change).await
        } else {
            match desired.objects.get(&change.name) {
                Some(object) => kube.apply(object).await,
                None => continue,
            }
        };
        let result = result.map_err(|e| e.to_string());
        match &result {
            Ok(()) if change.kind.is_delete() => {
                report.deleted += 1;
                SyncStats::add(&stats.objects_deleted, 1);
            }
            Ok(()) => {
                report.applied += 1;
                SyncStats::add(&stats.objects_applied, 1);
            }
            Err(error) => {
                report.failed += 1;
                SyncStats::add(&stats.errors_apply, 1);
                error!(object = %change.name, operation = change.kind.as_str(), %error, "operation on the firewall tier failed; retried next interval");
            }
        }
        if result.is_ok() && change.kind.is_remediation() {
            report.remediated += 1;
            if change.kind == ChangeKind::Restore {
                report.restored += 1;
            } else {
                report.removed += 1;
            }
            SyncStats::add(&stats.drift_remediations, 1);
            warn!(object = %change.name, operation = change.kind.as_str(), "drift in the firewall tier remediated");
        }
        let written = audit.record(&AuditRecord::for_change(
            change,
            "kubernetes",
            &desired.origin,
            desired.device_group.as_deref(),
            desired.commit.as_ref(),
            result.clone(),
        ));
        if !written {
            report.audit_failures += 1;
        }
        kube.publish_event(change, desired.commit.as_ref(), &result)
            .await;
    }
    report
}

/// The object files a directory holds now (only this controller's, by name prefix).
fn read_published(dir: &std::path::Path) -> Result<BTreeMap<String, OnDisk>, String> {
    if !dir.exists() {
        return Ok(BTreeMap::new());
    }
    let files = directory::read_set(dir).map_err(|e| e.to_string())?;
    // A file whose text is the one the manifest records is known without parsing it or
    // writing the desired object's YAML to compare. An unreadable manifest only costs that.
    let manifest = directory::read_manifest(dir)
        .ok()
        .flatten()
        .map(|text| parse_manifest(&text))
        .unwrap_or_default();
    Ok(files
        .into_iter()
        .filter_map(|file| {
            let name = file.path.file_name()?.to_string_lossy().into_owned();
            let known = manifest
                .get(&name)
                .filter(|known| known.text_hash == desired::text_hash(&file.text))
                .cloned();
            name.starts_with(FIREWALL_FILE_PREFIX).then_some((
                name,
                OnDisk::Read {
                    text: file.text,
                    edited: false,
                    known,
                },
            ))
        })
        .collect())
}

/// Turns every file the controller wrote whose stamp changed into what is there now: edited
/// (its text) or missing. A few `stat` calls; a file is read only when its stamp differs.
fn notice_edits(dir: &std::path::Path, current: &mut BTreeMap<String, OnDisk>) {
    for (file, entry) in current.iter_mut() {
        let OnDisk::Written { stamp, .. } = entry else {
            continue;
        };
        let path = dir.join(file);
        let now = FileStamp::of(&path);
        if now.is_some() && now == *stamp {
            continue;
        }
        warn!(file = %path.display(), "an object file of the output directory was changed by someone else; it is put back");
        *entry = match std::fs::read_to_string(&path) {
            Ok(text) => OnDisk::Read {
                text,
                edited: true,
                known: None,
            },
            Err(_) => OnDisk::Missing,
        };
    }
}

/// What publishing the desired state into a directory takes.
struct DirectoryPlan {
    changes: Vec<Change>,
    /// Files to write: changed objects, and unchanged ones found by reading the directory.
    write: Vec<ObjectFile>,
    /// Files of the current generation that stay as they are (linked, not written again).
    keep: Vec<String>,
    /// Every file of the new set, for its manifest.
    manifest: BTreeMap<String, Known>,
}

/// The changes that make the directory hold `desired`. YAML is written only for objects
/// whose fingerprint differs from what the controller wrote (or, for files it did not write
/// in this run, to compare with their text); a previous file is parsed only when it changed,
/// for the audit record.
fn directory_plan(
    current: &BTreeMap<String, OnDisk>,
    desired: &Desired,
) -> Result<DirectoryPlan, translate::TranslateError> {
    let old_spec = |text: &str| {
        parse_documents(text, "output directory")
            .ok()
            .and_then(|mut policies| policies.pop())
            .map(|policy| policy.spec)
    };
    let mut plan = DirectoryPlan {
        changes: Vec::new(),
        write: Vec::new(),
        keep: Vec::new(),
        manifest: BTreeMap::new(),
    };
    let mut wanted = std::collections::BTreeSet::new();
    for (name, object) in &desired.objects {
        let file = format!("{name}.yaml");
        wanted.insert(file.clone());
        let (kind, previous, document) = match current.get(&file) {
            None => (ChangeKind::Create, None, None),
            Some(OnDisk::Missing) => (ChangeKind::Restore, None, None),
            Some(OnDisk::Written {
                from, text_hash, ..
            }) => match from.objects.get(name) {
                Some(before) if before.fingerprint == object.fingerprint => {
                    plan.manifest.insert(
                        file.clone(),
                        Known {
                            fingerprint: object.fingerprint.clone(),
                            text_hash: text_hash.clone(),
                        },
                    );
                    plan.keep.push(file);
                    continue;
                }
                before => (
                    ChangeKind::Update,
                    before.map(|before| Cow::Borrowed(&before.policy.spec)),
                    None,
                ),
            },
            Some(OnDisk::Read {
                known: Some(known), ..
            }) if known.fingerprint == object.fingerprint => {
                plan.manifest.insert(file.clone(), known.clone());
                plan.keep.push(file);
                continue;
            }
            Some(OnDisk::Read { text, edited, .. }) => {
                let document = object.document()?;
                if *text == document {
                    plan.manifest.insert(
                        file.clone(),
                        Known {
                            fingerprint: object.fingerprint.clone(),
                            text_hash: desired::text_hash(&document),
                        },
                    );
                    plan.write.push(ObjectFile {
                        name: file,
                        content: document,
                    });
                    continue;
                }
                let kind = if *edited {
                    ChangeKind::Restore
                } else {
                    ChangeKind::Update
                };
                (kind, old_spec(text).map(Cow::Owned), Some(document))
            }
        };
        let content = match document {
            Some(document) => document,
            None => object.document()?,
        };
        plan.manifest.insert(
            file.clone(),
            Known {
                fingerprint: object.fingerprint.clone(),
                text_hash: desired::text_hash(&content),
            },
        );
        plan.write.push(ObjectFile {
            name: file,
            content,
        });
        plan.changes.push(Change {
            kind,
            name: name.clone(),
            zone: object.policy.spec.zone.clone(),
            rules: desired::rules_involved(previous.as_deref(), Some(&object.policy.spec)),
            live_hash: previous.as_deref().map(desired::spec_hash),
            desired_hash: Some(object.hash.clone()),
            live: None,
        });
    }
    for (file, entry) in current {
        if wanted.contains(file) {
            continue;
        }
        let name = file.trim_end_matches(".yaml").to_string();
        let previous = match entry {
            OnDisk::Written { from, .. } => from
                .objects
                .get(&name)
                .map(|object| Cow::Borrowed(&object.policy.spec)),
            OnDisk::Read { text, .. } => old_spec(text).map(Cow::Owned),
            // Removed by someone else and no longer wanted: nothing to do.
            OnDisk::Missing => continue,
        };
        plan.changes.push(Change {
            kind: ChangeKind::DeleteStale,
            zone: previous
                .as_ref()
                .map(|spec| spec.zone.clone())
                .unwrap_or_default(),
            rules: desired::rules_involved(previous.as_deref(), None),
            live_hash: previous.as_deref().map(desired::spec_hash),
            name,
            desired_hash: None,
            live: None,
        });
    }
    Ok(plan)
}

/// Publishes `write` and, written again rather than linked, the `keep` files.
fn write_all(
    dir: &std::path::Path,
    desired: &Desired,
    mut write: Vec<ObjectFile>,
    keep: &[String],
    manifest: &str,
) -> Result<(), String> {
    for file in keep {
        let name = file.trim_end_matches(".yaml");
        let object = desired
            .objects
            .get(name)
            .ok_or_else(|| format!("{file} is not a desired object"))?;
        write.push(ObjectFile {
            name: file.clone(),
            content: object.document().map_err(|e| e.to_string())?,
        });
    }
    directory::publish_keeping(dir, &write, &[], Some(manifest), FIREWALL_FILE_PREFIX)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The entries of a directory that now holds exactly `desired` (the files of `manifest`),
/// each file stamped.
fn written(
    dir: &std::path::Path,
    desired: &Arc<Desired>,
    manifest: &BTreeMap<String, Known>,
) -> BTreeMap<String, OnDisk> {
    manifest
        .iter()
        .map(|(file, known)| {
            let stamp = FileStamp::of(&dir.join(file));
            (
                file.clone(),
                OnDisk::Written {
                    from: Arc::clone(desired),
                    stamp,
                    text_hash: known.text_hash.clone(),
                },
            )
        })
        .collect()
}

fn reconcile_directory(
    dir: &std::path::Path,
    published: &mut Option<BTreeMap<String, OnDisk>>,
    desired: &Arc<Desired>,
    audit: &AuditLog,
    stats: &SyncStats,
) -> Reconciled {
    let mut report = Reconciled::default();
    let mut current = match published.take() {
        Some(current) => current,
        None => match read_published(dir) {
            Ok(current) => current,
            Err(error) => {
                // Unreadable: publish anyway, every object counted as created.
                warn!(dir = %dir.display(), %error, "cannot read the output directory's current set");
                BTreeMap::new()
            }
        },
    };
    notice_edits(dir, &mut current);
    let plan = match directory_plan(&current, desired) {
        Ok(plan) => plan,
        Err(error) => {
            report.failed = 1;
            SyncStats::add(&stats.errors_apply, 1);
            error!(dir = %dir.display(), %error, "cannot write the firewall tier as YAML; retried next interval");
            return report;
        }
    };
    if plan.changes.is_empty() {
        // Every file is the desired object's: remember them as written, so that the next
        // pass compares fingerprints and stamps instead of text.
        *published = Some(written(dir, desired, &plan.manifest));
        return report;
    }
    let changes = plan.changes;
    let manifest = manifest_text(&plan.manifest);
    let mut result = directory::publish_keeping(
        dir,
        &plan.write,
        &plan.keep,
        Some(&manifest),
        FIREWALL_FILE_PREFIX,
    )
    .map(|_| ())
    .map_err(|e| e.to_string());
    if let Err(error) = &result
        && !plan.keep.is_empty()
    {
        // An unchanged file could not be taken from the current generation (someone removed
        // it there): write every file instead.
        warn!(dir = %dir.display(), %error, "cannot carry the unchanged files into the new generation; writing them all");
        result = write_all(dir, desired, plan.write, &plan.keep, &manifest);
    }
    let target = format!("directory:{}", dir.display());
    for change in &changes {
        let written = audit.record(&AuditRecord::for_change(
            change,
            &target,
            &desired.origin,
            desired.device_group.as_deref(),
            desired.commit.as_ref(),
            result.clone(),
        ));
        if !written {
            report.audit_failures += 1;
        }
    }
    match result {
        Ok(()) => {
            for change in &changes {
                if change.kind.is_delete() {
                    report.deleted += 1;
                    SyncStats::add(&stats.objects_deleted, 1);
                } else {
                    report.applied += 1;
                    SyncStats::add(&stats.objects_applied, 1);
                }
                if change.kind.is_remediation() {
                    report.remediated += 1;
                    report.restored += 1;
                    SyncStats::add(&stats.drift_remediations, 1);
                    warn!(object = %change.name, "drift in the output directory remediated");
                }
            }
            *published = Some(written(dir, desired, &plan.manifest));
        }
        Err(error) => {
            report.failed = changes.len();
            SyncStats::add(&stats.errors_apply, 1);
            error!(dir = %dir.display(), %error, "cannot publish the firewall tier; the previous set stays current; retried next interval");
            // Read the directory again next time: the failure may have been partial.
            *published = None;
        }
    }
    report
}

/// Human-readable lines for `--diff`.
pub fn describe_changes(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no change: the candidate configuration matches what is applied\n".to_string();
    }
    let mut out = String::new();
    for change in changes {
        out.push_str(&format!(
            "{:<15} {} (zone {})",
            change.kind.as_str(),
            change.name,
            change.zone
        ));
        if !change.rules.is_empty() {
            out.push_str(&format!(": {}", change.rules.join(", ")));
        }
        out.push('\n');
    }
    out
}

#[doc(hidden)]
pub fn target_name(target: &Target) -> String {
    target.describe()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/panorama.xml");

    fn fetched(text: &str) -> Fetched {
        Fetched {
            text: text.to_string(),
            origin: "panorama.xml".to_string(),
            commit: None,
            marker: source::Marker::Unknown,
        }
    }

    /// Asserts that a pass through `memo` and a plain pass agree: the same objects with the
    /// same content, or the same error.
    fn same_as_plain(memo: &mut Memo, text: &str, options: &Options, what: &str) {
        let remembered = translate_fetched(&fetched(text), options, Some(memo));
        let fresh = translate_fetched(&fetched(text), options, None);
        match (remembered, fresh) {
            (Ok(remembered), Ok(fresh)) => {
                let names = |d: &Desired| d.objects.keys().cloned().collect::<Vec<_>>();
                assert_eq!(names(&remembered), names(&fresh), "{what}");
                for (name, object) in &fresh.objects {
                    let kept = &remembered.objects[name];
                    assert_eq!(kept.hash, object.hash, "{what}: {name}");
                    assert_eq!(kept.fingerprint, object.fingerprint, "{what}: {name}");
                }
            }
            (Err(remembered), Err(fresh)) => {
                assert_eq!(remembered.to_string(), fresh.to_string(), "{what}")
            }
            (remembered, fresh) => panic!("{what}: {remembered:?} but {fresh:?}"),
        }
    }

    /// Random one-character edits (replaced, inserted, removed) anywhere in the configuration
    /// (names, values, markup, line breaks), each applied to the last one that was read: a pass through the memo
    /// always agrees with a plain pass, whether it read one rule again, everything, or
    /// refused the text.
    #[test]
    fn random_edits_through_a_memo_match_plain_passes() {
        let options = Options {
            device_group: Some("dg-prod".into()),
            mode: Mode::Enforce,
        };
        let mut rng = fastrand::Rng::with_seed(0x5eed_2026);
        let replacements = ['a', 'z', '0', '9', '-', ' ', '\n', '<', '>', '"', '/', '.'];
        let mut memo = Memo::default();
        let mut text = FIXTURE.to_string();
        same_as_plain(&mut memo, &text, &options, "the fixture");
        for step in 0..300 {
            let mut at = rng.usize(..text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let character = replacements[rng.usize(..replacements.len())];
            let width = text[at..].chars().next().map_or(0, char::len_utf8);
            // A character replaced, inserted or removed: lengths change too.
            let (put, skip) = match rng.u8(..3) {
                0 => (Some(character), width),
                1 => (Some(character), 0),
                _ => (None, width),
            };
            let next = format!(
                "{}{}{}",
                &text[..at],
                put.map(String::from).unwrap_or_default(),
                &text[at + skip..]
            );
            same_as_plain(&mut memo, &next, &options, &format!("edit {step} at {at}"));
            // Keep the edit unless it broke the configuration, as a firewall admin would.
            if translate_fetched(&fetched(&next), &options, None).is_ok() {
                text = next;
            }
        }
        assert!(memo.edits > 20, "only {} edits read one rule", memo.edits);
    }

    /// A chain of configurations through one memo gives, at every step, the desired state a
    /// fresh translation gives; edits confined to one rule are read as such, and everything
    /// else (a new line, a second rule, an object, broken XML) is read in full or refused as
    /// a fresh read refuses it.
    #[test]
    fn a_chain_of_commits_through_a_memo_matches_fresh_translations() {
        let options = Options {
            device_group: Some("dg-prod".into()),
            mode: Mode::Enforce,
        };
        // Each step changes the step before it (the last good one after a refused step).
        let web = "<member>web-servers</member></destination>";
        let v6 = "<member>v6-net</member></destination>";
        let edit = |text: &str, from: &str, to: &str| {
            assert!(text.contains(from), "{from} is in the text");
            text.replacen(from, to, 1)
        };
        let s1 = edit(FIXTURE, web, v6);
        let s2 = edit(&s1, v6, &format!("{v6}   "));
        let s3 = edit(
            &s2,
            "<destination><member>odd-hosts</member></destination>",
            "<destination><member>web-servers</member></destination>",
        );
        let s4 = edit(&s3, "prod-allow-web\"", "prod-allow-www\"");
        let s5 = edit(&s4, &format!("{v6}   "), &format!("{v6}\n"));
        let s6 = edit(
            &edit(&s5, "<action>reset-both</action>", "<action>drop</action>"),
            "prod-allow-www\"",
            "prod-allow-web\"",
        );
        let s7 = edit(&s6, "10.1.1.0/24", "10.1.9.0/24");
        let broken = edit(&s7, &format!("{v6}\n"), "<member>v6-net</destination>\n");
        let s8 = edit(&s7, &format!("{v6}\n"), &format!("{web}\n"));
        let steps: Vec<(&str, String, bool)> = vec![
            ("the fixture", FIXTURE.to_string(), false),
            ("one rule's destination", s1, true),
            ("that rule longer", s2, true),
            ("a later rule", s3, true),
            ("a rule's name", s4, true),
            ("a line added in a rule", s5, false),
            ("two rules", s6, false),
            ("an address object", s7, false),
            ("a broken rule", broken, false),
            ("the rule mended", s8, true),
        ];
        let mut memo = Memo::default();
        for (change, text, by_edit) in steps {
            let edits = memo.edits;
            same_as_plain(&mut memo, &text, &options, change);
            assert_eq!(
                memo.edits - edits,
                usize::from(by_edit),
                "{change}: read by edit"
            );
        }
    }
}
