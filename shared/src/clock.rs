//! Time as a dependency, so retention dates, token expiry and schedules can be tested by
//! moving a clock instead of sleeping.
//!
//! A clock gives two readings: the wall clock (`now`), which an operator, NTP or a broken
//! RTC can move in jumps, and the time that really passed since the machine booted
//! (`since_boot`, which never jumps). Retention decisions compare the
//! two to notice a jump of the wall clock (see the storage element's retention clock).

use chrono::{DateTime, Duration, Utc};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time in UTC (the wall clock: it can jump).
    fn now(&self) -> DateTime<Utc>;

    /// Time passed since this machine booted, on a clock that never jumps, and the boot it
    /// counts from (readings of different boots cannot be compared).
    fn since_boot(&self) -> (String, std::time::Duration);
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn since_boot(&self) -> (String, std::time::Duration) {
        (boot_id().to_owned(), boot_time())
    }
}

/// This boot's id (Linux's `/proc/sys/kernel/random/boot_id`); elsewhere an id of this
/// process, so that readings are only compared within it.
fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                format!("process-{}-{}", std::process::id(), Utc::now().timestamp_nanos_opt().unwrap_or(0))
            })
    })
}

/// Time since boot: the machine's uptime (`/proc/uptime`) when this process first asked,
/// plus the monotonic time this process measured since. Elsewhere, time since then.
fn boot_time() -> std::time::Duration {
    static START: OnceLock<(std::time::Instant, std::time::Duration)> = OnceLock::new();
    let (at, uptime) = START.get_or_init(|| {
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(std::time::Duration::from_secs_f64)
            .unwrap_or_default();
        (std::time::Instant::now(), uptime)
    });
    *uptime + at.elapsed()
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<(DateTime<Utc>, std::time::Duration)>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new((at, std::time::Duration::from_secs(1_000))))
    }

    /// Lets time pass: the wall clock and the time since boot move together. A negative
    /// duration sets the wall clock back (a jump; time since boot stays).
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.0 += by;
        if let Ok(d) = by.to_std() {
            t.1 += d;
        }
    }

    /// Moves only the wall clock (forward or back), as an operator or a broken time source
    /// would: no time passes.
    pub fn jump(&self, by: Duration) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn since_boot(&self) -> (String, std::time::Duration) {
        ("manual".to_owned(), self.0.lock().unwrap_or_else(|e| e.into_inner()).1)
    }
}

/// The environment variable naming a test clock's offset file (see [`from_env`]).
pub const TEST_CLOCK_ENV: &str = "ARTSTORE_TEST_CLOCK_FILE";

/// The process's clock: the wall clock, or — when `ARTSTORE_TEST_CLOCK_FILE` names a file —
/// a test clock that runs that many seconds (an integer, may be negative) off the wall clock,
/// re-read as the file changes, so a fault test can make a running process's wall clock
/// jump while time since boot goes on as before. Never set it in production.
pub fn from_env() -> std::sync::Arc<dyn Clock> {
    match std::env::var_os(TEST_CLOCK_ENV).filter(|v| !v.is_empty()) {
        Some(path) => {
            tracing::warn!(file = %PathBuf::from(&path).display(), "using the test clock: the wall clock is offset by that file");
            std::sync::Arc::new(OffsetFileClock { path: path.into(), cached: Mutex::new(None) })
        }
        None => std::sync::Arc::new(SystemClock),
    }
}

/// The wall clock shifted by the number of seconds in a file (see [`from_env`]).
#[derive(Debug)]
pub struct OffsetFileClock {
    path: PathBuf,
    /// The offset and when it was read (the file is read at most every 100 ms).
    cached: Mutex<Option<(std::time::Instant, i64)>>,
}

impl OffsetFileClock {
    fn offset(&self) -> i64 {
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        match *c {
            Some((at, secs)) if at.elapsed() < std::time::Duration::from_millis(100) => secs,
            _ => {
                let secs = std::fs::read_to_string(&self.path)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .unwrap_or(0)
                    .clamp(-100 * 366 * 86_400, 100 * 366 * 86_400);
                *c = Some((std::time::Instant::now(), secs));
                secs
            }
        }
    }
}

impl Clock for OffsetFileClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::seconds(self.offset())
    }

    fn since_boot(&self) -> (String, std::time::Duration) {
        SystemClock.since_boot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_since_boot_goes_on_and_a_jump_does_not_move_it() {
        let (boot, a) = SystemClock.since_boot();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (boot2, b) = SystemClock.since_boot();
        assert_eq!(boot, boot2);
        assert!(b >= a + std::time::Duration::from_millis(20), "{a:?} then {b:?}");

        let m = ManualClock::new(Utc::now());
        let (t0, s0) = (m.now(), m.since_boot().1);
        m.advance(Duration::hours(1));
        assert_eq!((m.now() - t0, m.since_boot().1 - s0), (Duration::hours(1), std::time::Duration::from_secs(3600)));
        m.jump(Duration::days(30));
        assert_eq!(m.since_boot().1 - s0, std::time::Duration::from_secs(3600));
        assert_eq!(m.now() - t0, Duration::hours(1) + Duration::days(30));
    }

    #[test]
    fn the_test_clock_follows_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        let c = OffsetFileClock { path: path.clone(), cached: Mutex::new(None) };
        let off = |c: &OffsetFileClock| (c.now() - Utc::now()).num_seconds();
        assert_eq!(off(&c), 0, "no file: no offset");
        std::fs::write(&path, "172800\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!((off(&c) - 172_800).abs() <= 1);
        std::fs::write(&path, "-3600").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!((off(&c) + 3600).abs() <= 1);
    }
}
