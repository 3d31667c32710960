//! What a field technician should look at first: plain-words findings, each with what to do,
//! computed from a snapshot of the node's state. Pure: the caller gathers the facts (and the
//! clock); nothing here reads a store, a socket or the time.

use serde::Serialize;

use super::features::Effective;
use super::mode::{Decision, Mode};
use super::rfc3339;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Something is wrong and needs a person.
    Problem,
    /// Worth a look; the node copes on its own for now.
    Warning,
    /// All is well.
    Ok,
}

/// One thing the technician should know, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What is the matter, in plain words.
    pub message: String,
    /// What to do about it.
    pub action: String,
}

impl Finding {
    fn new(severity: Severity, message: impl Into<String>, action: impl Into<String>) -> Self {
        Finding {
            severity,
            message: message.into(),
            action: action.into(),
        }
    }
}

/// When a finding is raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    /// A pending operation older than this means uploads are not getting through.
    pub pending_age_ms: i64,
    /// A CDX package older than this is stale.
    pub cdx_age_ms: i64,
    /// Free disk below this fraction (per mille) of the volume is a warning.
    pub disk_warn_per_mille: u64,
    /// Free disk below this many bytes is a problem: the store will soon refuse writes.
    pub disk_problem_bytes: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            pending_age_ms: 15 * 60 * 1000,
            cdx_age_ms: 24 * 60 * 60 * 1000,
            disk_warn_per_mille: 100,
            disk_problem_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What the node holds of one CDX job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFact {
    /// The job number (1010, 1070, 1110).
    pub job: u32,
    /// When the package held arrived (Unix ms); `None` if none has.
    pub received_at_ms: Option<i64>,
}

/// The facts the findings are drawn from.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The time of the snapshot (Unix ms).
    pub now_ms: i64,
    /// When the node started (Unix ms).
    pub started_at_ms: i64,
    /// Operations waiting to be uploaded.
    pub pending: u64,
    /// Operations HQ refused.
    pub failed: u64,
    /// Operations waiting behind a failed one.
    pub held: u64,
    /// When the oldest pending operation was accepted (Unix ms).
    pub oldest_pending_ms: Option<i64>,
    /// Whether HQ answered the last call (`None`: not tried yet).
    pub hq_reachable: Option<bool>,
    /// When HQ last answered an upload or an outcome read (Unix ms).
    pub hq_last_answer_ms: Option<i64>,
    /// The last upload error, when uploads have failed since the last success.
    pub upload_error: Option<String>,
    /// The last CDX download error, when it is newer than the last success.
    pub cdx_error: Option<String>,
    /// CDX jobs held.
    pub jobs: Vec<JobFact>,
    /// The mode decision for a new customer.
    pub create_mode: Decision,
    /// The mode decision for an edit.
    pub edit_mode: Decision,
    /// Real-time calls made since start.
    pub realtime_calls: u64,
    /// Of which fell back to the queue.
    pub realtime_fallbacks: u64,
    /// Feature states as held (job 1110); empty when 1110 is not held.
    pub features: Vec<Effective>,
    /// Free disk space for the store, bytes.
    pub disk_free_bytes: Option<u64>,
    /// Size of the store's volume, bytes.
    pub disk_total_bytes: Option<u64>,
}

/// The CDX jobs to run at HQ, in the order the FAQ gives.
const RUN_JOBS: &str = "run CDX jobs 1110, 1010, 1070 at HQ, then press Refresh CDX here";

/// Draws the findings from `facts`, problems first. Never empty: with nothing to report it
/// says so.
pub fn findings(facts: &Facts, limits: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    queue_findings(facts, limits, &mut out);
    hq_findings(facts, limits, &mut out);
    cdx_findings(facts, limits, &mut out);
    mode_findings(facts, &mut out);
    feature_findings(facts, &mut out);
    disk_findings(facts, limits, &mut out);
    if out.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            format!(
                "everything looks fine: {} waiting for upload, nothing failed, HQ {}",
                count(facts.pending, "operation", "operations"),
                match facts.hq_reachable {
                    Some(true) => "answers",
                    Some(false) => "is unreachable",
                    None => "not contacted yet",
                }
            ),
            "nothing to do",
        ));
    }
    // Stable: within a severity, the order above (queue, HQ, CDX, mode, features, disk).
    out.sort_by_key(|f| f.severity);
    out
}

fn queue_findings(facts: &Facts, limits: &Thresholds, out: &mut Vec<Finding>) {
    if facts.failed > 0 {
        out.push(Finding::new(
            Severity::Problem,
            format!(
                "{} failed: see sync status",
                count(facts.failed, "operation", "operations")
            ),
            "open the failed operations below, edit and re-sync",
        ));
    }
    if facts.held > 0 {
        let (severity, action) = if facts.failed > 0 {
            (
                Severity::Warning,
                "fix the failed operation of the same customer: the held ones follow it",
            )
        } else {
            (
                Severity::Problem,
                "nothing failed is in the way: press Re-sync all failed, then Upload now",
            )
        };
        out.push(Finding::new(
            severity,
            format!(
                "{} held behind a failed operation of the same customer",
                count(facts.held, "operation is", "operations are")
            ),
            action,
        ));
    }
    let Some(oldest) = facts.oldest_pending_ms else {
        return;
    };
    let age = facts.now_ms.saturating_sub(oldest);
    if age <= limits.pending_age_ms {
        return;
    }
    if facts.hq_reachable == Some(false) {
        let since = facts.hq_last_answer_ms.map_or_else(
            || format!("the node started at {}", rfc3339(facts.started_at_ms)),
            rfc3339,
        );
        out.push(Finding::new(
            Severity::Problem,
            format!(
                "HQ unreachable since {since}: the queue is safe; {} waiting, the oldest for {}",
                count(facts.pending, "operation", "operations"),
                human_age(age)
            ),
            "check the store's WAN link (the till keeps working; uploads resume by themselves)",
        ));
    } else {
        let why = facts
            .upload_error
            .as_deref()
            .map_or_else(String::new, |e| format!(" (last upload error: {e})"));
        out.push(Finding::new(
            Severity::Warning,
            format!(
                "the oldest pending operation has waited {}{why}",
                human_age(age)
            ),
            "press Upload now; if it stays, call HQ support with the last upload error",
        ));
    }
}

fn hq_findings(facts: &Facts, limits: &Thresholds, out: &mut Vec<Finding>) {
    let old_pending = facts
        .oldest_pending_ms
        .is_some_and(|t| facts.now_ms.saturating_sub(t) > limits.pending_age_ms);
    match facts.hq_reachable {
        // With old pending work the queue finding already says HQ is unreachable.
        Some(false) if !old_pending => {
            out.push(Finding::new(
                Severity::Warning,
                format!(
                    "HQ is unreachable{}: {} safely in the queue",
                    facts
                        .hq_last_answer_ms
                        .map_or_else(String::new, |t| format!(" since {}", rfc3339(t))),
                    count(facts.pending, "operation waits", "operations wait")
                ),
                "check the store's WAN link; the till keeps working meanwhile",
            ));
        }
        Some(true) if !old_pending => {
            if let Some(e) = &facts.upload_error {
                out.push(Finding::new(
                    Severity::Warning,
                    format!("HQ answers but the last upload failed: {e}"),
                    "press Upload now; if it keeps failing, call HQ support with this error",
                ));
            }
        }
        _ => {}
    }
}

fn cdx_findings(facts: &Facts, limits: &Thresholds, out: &mut Vec<Finding>) {
    // Jobs never received are one finding: the fix is the same for all of them.
    let missing: Vec<String> = facts
        .jobs
        .iter()
        .filter(|j| j.received_at_ms.is_none())
        .map(|j| j.job.to_string())
        .collect();
    match missing.as_slice() {
        [] => {}
        [one] => out.push(Finding::new(
            Severity::Problem,
            format!("job {one} has not reached this store"),
            RUN_JOBS,
        )),
        [first @ .., last] => out.push(Finding::new(
            Severity::Problem,
            format!(
                "jobs {} and {last} have not reached this store",
                first.join(", ")
            ),
            RUN_JOBS,
        )),
    }
    for job in &facts.jobs {
        if let Some(at) = job.received_at_ms {
            let age = facts.now_ms.saturating_sub(at);
            if age > limits.cdx_age_ms {
                out.push(Finding::new(
                    Severity::Warning,
                    format!("job {} is {} old", job.job, human_age(age)),
                    RUN_JOBS,
                ));
            }
        }
    }
    if let Some(e) = &facts.cdx_error {
        out.push(Finding::new(
            Severity::Warning,
            format!("the last CDX download failed: {e}; the configuration held stays in force"),
            "check the store's WAN link, then press Refresh CDX",
        ));
    }
}

fn mode_findings(facts: &Facts, out: &mut Vec<Finding>) {
    let calls = if facts.realtime_calls == 0 {
        String::new()
    } else {
        format!(
            " ({} since start, {} fell back to the queue)",
            count(facts.realtime_calls, "real-time call", "real-time calls"),
            facts.realtime_fallbacks
        )
    };
    let action = "if this store should work asynchronously, switch it on at HQ (feature \
                  management and the channel's functionality profile), then run CDX jobs 1110, \
                  1010, 1070 at HQ and press Refresh CDX here";
    let create = facts.create_mode.mode == Mode::RealTime;
    let edit = facts.edit_mode.mode == Mode::RealTime;
    if create && edit && facts.create_mode.reason == facts.edit_mode.reason {
        out.push(Finding::new(
            Severity::Warning,
            format!(
                "customers are created and edited in real time{calls}: {}",
                facts.create_mode.reason
            ),
            action,
        ));
        return;
    }
    if create {
        out.push(Finding::new(
            Severity::Warning,
            format!(
                "customers are created in real time{calls}: {}",
                facts.create_mode.reason
            ),
            action,
        ));
    }
    if edit {
        out.push(Finding::new(
            Severity::Warning,
            format!(
                "customers are edited in real time{}: {}",
                if create { "" } else { calls.as_str() },
                facts.edit_mode.reason
            ),
            action,
        ));
    }
}

fn feature_findings(facts: &Facts, out: &mut Vec<Finding>) {
    for f in &facts.features {
        if f.enabled && !f.in_force {
            let missing: Vec<&str> = f.missing.iter().map(|m| m.name()).collect();
            out.push(Finding::new(
                Severity::Problem,
                format!(
                    "\"{}\" is on, but its prerequisites are off ({}): the node treats it as off",
                    f.feature.name(),
                    missing.join(", ")
                ),
                format!(
                    "turn on {} in HQ feature management, then run CDX job 1110 at HQ and press \
                     Refresh CDX here",
                    missing.join(", ")
                ),
            ));
        }
    }
}

fn disk_findings(facts: &Facts, limits: &Thresholds, out: &mut Vec<Finding>) {
    let Some(free) = facts.disk_free_bytes else {
        return;
    };
    let low_fraction = facts.disk_total_bytes.is_some_and(|total| {
        total > 0
            && u128::from(free) * 1000 < u128::from(total) * u128::from(limits.disk_warn_per_mille)
    });
    if free < limits.disk_problem_bytes {
        out.push(Finding::new(
            Severity::Problem,
            format!(
                "the disk is nearly full: {} free; the node will refuse writes when it is full",
                human_bytes(free)
            ),
            "free space on the node's disk now (old logs, backups); nothing acknowledged is lost",
        ));
    } else if low_fraction {
        out.push(Finding::new(
            Severity::Warning,
            format!("the disk is getting full: {} free", human_bytes(free)),
            "free space on the node's disk before it fills up",
        ));
    }
}

/// "1 operation" / "12 operations".
fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A duration in the largest whole unit: "40 seconds", "12 minutes", "5 hours", "3 days".
pub fn human_age(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (n, one, many) = match secs {
        s if s < 120 => (s, "second", "seconds"),
        s if s < 2 * 3600 => (s / 60, "minute", "minutes"),
        s if s < 2 * 86_400 => (s / 3600, "hour", "hours"),
        s => (s / 86_400, "day", "days"),
    };
    count(n.unsigned_abs(), one, many)
}

/// Bytes in binary units: "512 B", "3.2 MiB", "1.5 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::features::{FeatureId, FeatureSet};

    const NOW: i64 = 1_800_000_000_000;
    const MIN: i64 = 60 * 1000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    const GIB: u64 = 1024 * 1024 * 1024;

    fn async_mode() -> Decision {
        Decision {
            mode: Mode::Async,
            reason: "create customer in async mode is on".into(),
        }
    }

    /// A healthy node: everything recent, async mode, plenty of disk.
    fn fine() -> Facts {
        Facts {
            now_ms: NOW,
            started_at_ms: NOW - DAY,
            pending: 3,
            failed: 0,
            held: 0,
            oldest_pending_ms: Some(NOW - MIN),
            hq_reachable: Some(true),
            hq_last_answer_ms: Some(NOW - 1000),
            upload_error: None,
            cdx_error: None,
            jobs: [1010, 1070, 1110]
                .into_iter()
                .map(|job| JobFact {
                    job,
                    received_at_ms: Some(NOW - HOUR),
                })
                .collect(),
            create_mode: async_mode(),
            edit_mode: async_mode(),
            realtime_calls: 0,
            realtime_fallbacks: 0,
            features: {
                let mut set = FeatureSet::default();
                for f in FeatureId::ALL {
                    set.0.insert(f, true);
                }
                FeatureId::ALL.iter().map(|f| set.effective(*f)).collect()
            },
            disk_free_bytes: Some(100 * GIB),
            disk_total_bytes: Some(200 * GIB),
        }
    }

    fn real_time(reason: &str) -> Decision {
        Decision {
            mode: Mode::RealTime,
            reason: reason.into(),
        }
    }

    type Case = (
        &'static str,
        fn(&mut Facts),
        Severity,
        &'static [&'static str],
    );

    /// Each case: a change to a healthy node, the severity of the first finding, and words
    /// that some finding (message + action) must hold.
    const CASES: &[Case] = &[
        (
            "everything fine",
            |_| {},
            Severity::Ok,
            &["everything looks fine", "3 operations", "nothing to do"],
        ),
        (
            "failed operations",
            |f| f.failed = 12,
            Severity::Problem,
            &[
                "12 operations failed: see sync status",
                "open the failed operations below, edit and re-sync",
            ],
        ),
        (
            "one failed operation",
            |f| f.failed = 1,
            Severity::Problem,
            &["1 operation failed"],
        ),
        (
            "held behind a failed one",
            |f| {
                f.failed = 1;
                f.held = 2;
            },
            Severity::Problem,
            &[
                "2 operations are held",
                "fix the failed operation of the same customer",
            ],
        ),
        (
            "held with nothing failed",
            |f| f.held = 1,
            Severity::Problem,
            &["1 operation is held", "Re-sync all failed"],
        ),
        (
            "HQ unreachable with an old queue",
            |f| {
                f.hq_reachable = Some(false);
                f.hq_last_answer_ms = Some(NOW - 2 * HOUR);
                f.oldest_pending_ms = Some(NOW - 90 * MIN);
            },
            Severity::Problem,
            &[
                "HQ unreachable since 2027-01-15T06:00:00Z: the queue is safe",
                "waiting, the oldest for 90 minutes",
                "check the store's WAN link",
            ],
        ),
        (
            "HQ never reached since start",
            |f| {
                f.hq_reachable = Some(false);
                f.hq_last_answer_ms = None;
                f.oldest_pending_ms = Some(NOW - 3 * HOUR);
            },
            Severity::Problem,
            &["HQ unreachable since the node started at 2027-01-14T08:00:00Z"],
        ),
        (
            "HQ unreachable, queue young",
            |f| f.hq_reachable = Some(false),
            Severity::Warning,
            &[
                "HQ is unreachable since",
                "3 operations wait safely in the queue",
                "WAN link",
            ],
        ),
        (
            "HQ answers but uploads stall",
            |f| {
                f.oldest_pending_ms = Some(NOW - DAY);
                f.upload_error = Some("HQ answered 500".into());
            },
            Severity::Warning,
            &[
                "the oldest pending operation has waited 24 hours (last upload error: HQ answered 500)",
                "Upload now",
            ],
        ),
        (
            "HQ answers with an upload error",
            |f| f.upload_error = Some("HQ answered 429".into()),
            Severity::Warning,
            &["HQ answers but the last upload failed: HQ answered 429"],
        ),
        (
            "CDX job three days old",
            |f| f.jobs[2].received_at_ms = Some(NOW - 3 * DAY - HOUR),
            Severity::Warning,
            &[
                "job 1110 is 3 days old",
                "run CDX jobs 1110, 1010, 1070 at HQ",
            ],
        ),
        (
            "CDX job missing",
            |f| f.jobs[1].received_at_ms = None,
            Severity::Problem,
            &[
                "job 1070 has not reached this store",
                "run CDX jobs 1110, 1010, 1070 at HQ",
            ],
        ),
        (
            "CDX download failing",
            |f| f.cdx_error = Some("HQ unreachable".into()),
            Severity::Warning,
            &[
                "the last CDX download failed: HQ unreachable; the configuration held stays in force",
            ],
        ),
        (
            "real time for both, one reason",
            |f| {
                f.create_mode = real_time(
                    "create customer in async mode is off in the 1070 configuration held, version 2",
                );
                f.edit_mode = f.create_mode.clone();
                f.realtime_calls = 5;
                f.realtime_fallbacks = 2;
            },
            Severity::Warning,
            &[
                "customers are created and edited in real time (5 real-time calls since start, 2 fell back to the queue): create customer in async mode is off in the 1070 configuration held, version 2",
                "switch it on at HQ",
            ],
        ),
        (
            "real time for edits only",
            |f| {
                f.edit_mode =
                    real_time("async editing is off in the 1110 configuration held, version 7");
                f.realtime_calls = 1;
            },
            Severity::Warning,
            &[
                "customers are edited in real time (1 real-time call since start, 0 fell back to the queue): async editing is off in the 1110",
            ],
        ),
        (
            "feature on with prerequisites off",
            |f| {
                let mut set = FeatureSet::default();
                set.0.insert(FeatureId::AsyncCustomerEditing, true);
                set.0.insert(FeatureId::CustomerOrdersPerformance, true);
                f.features = FeatureId::ALL.iter().map(|id| set.effective(*id)).collect();
            },
            Severity::Problem,
            &[
                "\"Enable editing customers in asynchronous mode\" is on, but its prerequisites are off (Enable enhanced async customer creation, Enable asynchronous creation of customer addresses): the node treats it as off",
                "turn on Enable enhanced async customer creation, Enable asynchronous creation of customer addresses in HQ feature management",
            ],
        ),
        (
            "disk nearly full",
            |f| f.disk_free_bytes = Some(100 * 1024 * 1024),
            Severity::Problem,
            &[
                "the disk is nearly full: 100.0 MiB free",
                "free space on the node's disk now",
            ],
        ),
        (
            "disk getting full",
            |f| f.disk_free_bytes = Some(10 * GIB),
            Severity::Warning,
            &["the disk is getting full: 10.0 GiB free"],
        ),
    ];

    #[test]
    fn each_situation_gives_its_finding() {
        for (name, change, severity, words) in CASES {
            let mut facts = fine();
            change(&mut facts);
            let found = findings(&facts, &Thresholds::default());
            assert_eq!(found[0].severity, *severity, "{name}: {found:#?}");
            let text: Vec<String> = found
                .iter()
                .map(|f| format!("{} | {}", f.message, f.action))
                .collect();
            for w in *words {
                assert!(
                    text.iter().any(|t| t.contains(w)),
                    "{name}: no finding says {w:?}: {text:#?}"
                );
            }
            if *severity != Severity::Ok {
                assert!(
                    found.iter().all(|f| f.severity != Severity::Ok),
                    "{name}: 'fine' said beside a real finding: {found:#?}"
                );
            }
            assert!(
                found.windows(2).all(|w| w[0].severity <= w[1].severity),
                "{name}: problems come first: {found:#?}"
            );
        }
    }

    #[test]
    fn many_things_at_once_are_all_reported_problems_first() {
        let mut facts = fine();
        facts.failed = 2;
        facts.jobs[0].received_at_ms = Some(NOW - 2 * DAY - 1);
        facts.disk_free_bytes = Some(GIB);
        facts.hq_reachable = Some(false);
        let found = findings(&facts, &Thresholds::default());
        let severities: Vec<Severity> = found.iter().map(|f| f.severity).collect();
        assert_eq!(
            severities,
            [
                Severity::Problem,
                Severity::Warning,
                Severity::Warning,
                Severity::Warning
            ],
            "{found:#?}"
        );
        assert!(found[0].message.starts_with("2 operations failed"));
    }

    #[test]
    fn jobs_never_received_are_one_finding() {
        let mut facts = fine();
        for j in &mut facts.jobs {
            j.received_at_ms = None;
        }
        facts.features.clear();
        let found = findings(&facts, &Thresholds::default());
        let jobs: Vec<&str> = found
            .iter()
            .filter(|f| f.message.ends_with("not reached this store"))
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(
            jobs,
            ["jobs 1010, 1070 and 1110 have not reached this store"],
            "{found:#?}"
        );
    }

    #[test]
    fn one_waiting_operation_reads_well() {
        let mut facts = fine();
        facts.pending = 1;
        facts.hq_reachable = Some(false);
        let found = findings(&facts, &Thresholds::default());
        assert!(
            found
                .iter()
                .any(|f| f.message.ends_with("1 operation waits safely in the queue")),
            "{found:#?}"
        );
    }

    #[test]
    fn ages_and_sizes_read_well() {
        for (ms, want) in [
            (0, "0 seconds"),
            (1_000, "1 second"),
            (119_000, "119 seconds"),
            (12 * MIN, "12 minutes"),
            (5 * HOUR, "5 hours"),
            (3 * DAY, "3 days"),
            (-5, "0 seconds"),
        ] {
            assert_eq!(human_age(ms), want);
        }
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
        assert_eq!(human_bytes(3 * GIB / 2), "1.5 GiB");
    }
}
