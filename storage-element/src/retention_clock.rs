//! The retention clock: the time retention decisions are made by, so that a jump of the
//! wall clock never ends a retention term early.
//!
//! Retention compares `retain_until` with "now". If the machine's wall clock jumps forward
//! (a mistyped `date`, a broken RTC after a reboot, a bad NTP server), every term ending
//! within the jump would end at once and disposition would destroy records years early.
//! The retention clock follows the wall clock only while it agrees with the time that really
//! passed (the clock since boot, which never jumps):
//!
//! - In step (within [`IN_STEP`]) it *is* the wall clock.
//! - When the wall clock ran ahead (a forward jump, or the element was stopped), the
//!   retention clock goes on at the speed of real time and catches up at most
//!   [`CATCH_UP_RATE`] faster: terms end late by at most the jump, never early. When the
//!   wall clock fell behind (a backward jump), the retention clock goes on slower until the
//!   wall clock catches up, and new terms start from the later of the two, so a term is
//!   never shortened either way.
//! - An independent time reference (the Redis server's `TIME`, read with each heartbeat)
//!   that agrees with the wall clock within [`REFERENCE_TOLERANCE`] (plus the round trip)
//!   confirms it: the retention clock steps to the wall clock at once. A reference that
//!   disagrees confirms nothing and shows as skew on `/health/ready` and `/metrics`.
//!
//! Where it stood is saved in `<root>/clock.json` (every 30 s and at shutdown) with the boot
//! and the time since boot it was taken at: after a restart on the same boot the time the
//! element was stopped is known exactly; after a reboot it is not, and the clock catches up
//! (or is confirmed) as after a jump.

use crate::durable;
use artstore_shared::clock::Clock;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A wall clock within this of the retention clock is in step (NTP slews and small steps).
pub const IN_STEP: Duration = Duration::seconds(5);
/// How much faster (or slower) than real time the retention clock runs while it catches up
/// with a wall clock that is not confirmed: 1 %, i.e. a day's jump is caught up in 100 days.
pub const CATCH_UP_RATE: f64 = 0.01;
/// A reference time within this of the wall clock (plus the round trip) confirms it.
pub const REFERENCE_TOLERANCE: Duration = Duration::seconds(60);
/// The file the retention clock is saved in, under the element's root.
pub const FILE: &str = "clock.json";

/// What `clock.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    retention_time: DateTime<Utc>,
    boot_id: String,
    /// Seconds since boot when `retention_time` was read.
    since_boot: f64,
}

#[derive(Debug)]
struct State {
    boot: String,
    /// The retention time at `at` (time since boot).
    base: DateTime<Utc>,
    at: std::time::Duration,
    /// The last reference reading: wall clock minus reference, in seconds, and when.
    reference_skew: Option<(f64, DateTime<Utc>)>,
    /// Whether the last reference confirmed the wall clock.
    reference_agrees: Option<bool>,
}

/// A snapshot for `/health/ready` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionClockStatus {
    pub wall_clock: DateTime<Utc>,
    pub retention_time: DateTime<Utc>,
    /// Wall clock minus retention time, in seconds: plus after a forward jump (terms end
    /// late until it is caught up or confirmed), minus after a backward one.
    pub gap_seconds: f64,
    pub in_step: bool,
    /// Wall clock minus the reference (Redis `TIME`), when one was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_skew_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_read_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_agrees: Option<bool>,
}

/// See the module documentation.
pub struct RetentionClock {
    clock: Arc<dyn Clock>,
    file: PathBuf,
    tmp: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for RetentionClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionClock").field("file", &self.file).finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

impl RetentionClock {
    /// Starts from `root/clock.json` when there is one (an unreadable one is reported and
    /// replaced: the wall clock is then all there is), otherwise from the wall clock.
    pub fn open(root: &Path, tmp: &Path, clock: Arc<dyn Clock>) -> Self {
        let file = root.join(FILE);
        let (boot, now_since_boot) = clock.since_boot();
        let wall = clock.now();
        let saved = match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "retention clock file unreadable; starting from the wall clock");
                    None
                }
            },
            Err(_) => None,
        };
        let (base, at) = match saved {
            // The same boot: the time since the save is known exactly.
            Some(s) if s.boot_id == boot && s.since_boot.is_finite() && s.since_boot >= 0.0 => {
                let at = std::time::Duration::from_secs_f64(s.since_boot);
                if at <= now_since_boot { (s.retention_time, at) } else { (s.retention_time, now_since_boot) }
            }
            // Another boot: how long the machine was off is not known; go on from the save.
            Some(s) => (s.retention_time, now_since_boot),
            None => (wall, now_since_boot),
        };
        let c = RetentionClock {
            clock,
            file,
            tmp: tmp.to_owned(),
            state: Mutex::new(State { boot, base, at, reference_skew: None, reference_agrees: None }),
        };
        let st = c.status();
        if !st.in_step {
            tracing::warn!(
                wall_clock = %st.wall_clock,
                retention_time = %st.retention_time,
                gap_seconds = st.gap_seconds,
                "the wall clock is not where the retention clock expected it (the element was stopped, or the clock jumped); retention follows the retention clock until a reference confirms the wall clock"
            );
        }
        c
    }

    /// Brings the state up to now: returns (wall clock, retention time).
    fn settle(&self, st: &mut State) -> (DateTime<Utc>, DateTime<Utc>) {
        let wall = self.clock.now();
        let (boot, since) = self.clock.since_boot();
        if boot != st.boot {
            // Not expected within a process; start over from the last retention time.
            st.boot = boot;
            st.at = since;
        }
        let passed = since.saturating_sub(st.at);
        let passed_chrono = Duration::from_std(passed).unwrap_or(Duration::MAX);
        let expected = st.base.checked_add_signed(passed_chrono).unwrap_or(st.base);
        let gap = wall - expected;
        if gap.abs() <= IN_STEP {
            st.base = wall;
            st.at = since;
            return (wall, wall);
        }
        // Catch up by at most CATCH_UP_RATE of the time that passed since the last step.
        let step_ms = (passed.as_secs_f64() * CATCH_UP_RATE * 1000.0) as i64;
        let step = Duration::milliseconds(step_ms.min(gap.num_milliseconds().abs()));
        let now = if gap > Duration::zero() { expected + step } else { expected - step };
        st.base = now;
        st.at = since;
        (wall, now)
    }

    /// The latest time retention may take as passed: a term ends only when its end is at
    /// or before this. Never later than the wall clock.
    pub fn ended_by(&self) -> DateTime<Utc> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (wall, now) = self.settle(&mut st);
        wall.min(now)
    }

    /// Where a new term starts: the later of the wall clock and the retention clock, so that
    /// a clock set back does not shorten it.
    pub fn term_start(&self) -> DateTime<Utc> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (wall, now) = self.settle(&mut st);
        wall.max(now)
    }

    /// A reading of an independent time source, taken over `round_trip`: when it agrees
    /// with the wall clock the retention clock steps to the wall clock.
    pub fn confirm(&self, reference: DateTime<Utc>, round_trip: std::time::Duration) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (wall, now) = self.settle(&mut st);
        let skew = wall - reference;
        let slack = REFERENCE_TOLERANCE + Duration::from_std(round_trip).unwrap_or(Duration::MAX);
        let agrees = skew.abs() <= slack;
        if agrees && (wall - now).abs() > IN_STEP {
            tracing::info!(wall_clock = %wall, retention_time = %now, reference = %reference, "the time reference confirms the wall clock; the retention clock steps to it");
            st.base = wall;
        }
        if !agrees && st.reference_agrees != Some(false) {
            tracing::warn!(wall_clock = %wall, reference = %reference, skew_seconds = secs(skew), "the wall clock disagrees with the time reference; retention does not follow it");
        }
        st.reference_skew = Some((secs(skew), wall));
        st.reference_agrees = Some(agrees);
    }

    pub fn status(&self) -> RetentionClockStatus {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (wall, now) = self.settle(&mut st);
        let gap = wall - now;
        RetentionClockStatus {
            wall_clock: wall,
            retention_time: now,
            gap_seconds: secs(gap),
            in_step: gap.abs() <= IN_STEP,
            reference_skew_seconds: st.reference_skew.map(|r| r.0),
            reference_read_at: st.reference_skew.map(|r| r.1),
            reference_agrees: st.reference_agrees,
        }
    }

    /// Writes `clock.json` (atomically, synced).
    pub fn save(&self) -> std::io::Result<()> {
        let saved = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (_, now) = self.settle(&mut st);
            Saved { retention_time: now, boot_id: st.boot.clone(), since_boot: st.at.as_secs_f64() }
        };
        let bytes = serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?;
        durable::write_atomic(&self.tmp, &self.file, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artstore_shared::clock::ManualClock;

    fn t0() -> DateTime<Utc> {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn setup() -> (tempfile::TempDir, Arc<ManualClock>, RetentionClock) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let m = Arc::new(ManualClock::new(t0()));
        let c = RetentionClock::open(dir.path(), &dir.path().join("tmp"), m.clone());
        (dir, m, c)
    }

    #[test]
    fn in_step_it_is_the_wall_clock() {
        let (_d, m, c) = setup();
        m.advance(Duration::days(400));
        assert_eq!(c.ended_by(), t0() + Duration::days(400));
        assert_eq!(c.term_start(), t0() + Duration::days(400));
        assert!(c.status().in_step);
    }

    #[test]
    fn a_forward_jump_does_not_end_terms_and_is_caught_up_slowly() {
        let (_d, m, c) = setup();
        m.jump(Duration::days(2));
        assert_eq!(c.ended_by(), t0(), "no time passed: nothing may end");
        assert_eq!(c.term_start(), t0() + Duration::days(2), "new terms start from the later clock");
        let s = c.status();
        assert!(!s.in_step);
        assert_eq!(s.gap_seconds, 172_800.0);
        // A day of real time: the retention clock moved a day plus 1 % of it.
        m.advance(Duration::days(1));
        let by = c.ended_by();
        assert_eq!(by, t0() + Duration::days(1) + Duration::seconds(864));
        // After enough real time it is in step again, never ahead of the wall clock.
        for _ in 0..300 {
            m.advance(Duration::days(1));
            assert!(c.ended_by() <= m.now());
        }
        assert!(c.status().in_step);
        assert_eq!(c.ended_by(), m.now());
    }

    #[test]
    fn a_backward_jump_does_not_shorten_new_terms() {
        let (_d, m, c) = setup();
        m.jump(-Duration::days(365));
        assert_eq!(c.term_start(), t0(), "a term starting now starts at the later time");
        assert_eq!(c.ended_by(), t0() - Duration::days(365), "and nothing ends before the wall clock says so");
    }

    #[test]
    fn a_reference_that_agrees_confirms_the_wall_clock_and_one_that_does_not_confirms_nothing() {
        let (_d, m, c) = setup();
        m.jump(Duration::days(2));
        c.confirm(t0(), std::time::Duration::from_millis(3));
        assert_eq!(c.ended_by(), t0(), "the reference says the jump is wrong");
        let s = c.status();
        assert_eq!((s.reference_skew_seconds, s.reference_agrees), (Some(172_800.0), Some(false)));
        c.confirm(m.now() - Duration::seconds(20), std::time::Duration::from_millis(3));
        assert_eq!(c.ended_by(), m.now(), "the reference agrees with the wall clock");
        assert!(c.status().in_step);
    }

    #[test]
    fn a_restart_on_the_same_boot_knows_the_downtime_and_after_a_jump_does_not_trust_it() {
        let (d, m, c) = setup();
        c.save().unwrap();
        drop(c);
        // Stopped for an hour (the same boot): in step on reopening.
        m.advance(Duration::hours(1));
        let c = RetentionClock::open(d.path(), &d.path().join("tmp"), m.clone());
        assert!(c.status().in_step);
        assert_eq!(c.ended_by(), t0() + Duration::hours(1));
        c.save().unwrap();
        drop(c);
        // The clock jumped while it was stopped.
        m.jump(Duration::days(30));
        let c = RetentionClock::open(d.path(), &d.path().join("tmp"), m.clone());
        assert_eq!(c.ended_by(), t0() + Duration::hours(1));
        assert!(!c.status().in_step);
    }
}
