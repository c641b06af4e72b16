//! Progress of long loops (tiles, training steps, stacks): a bar on a
//! terminal; where stderr is not one (a log file, `nohup`, a batch job),
//! where a bar would draw nothing, `log` lines at a steady pace instead: one
//! after the first unit of work, then at most one every [`LOG_EVERY`], and
//! one at the end. Nothing when info logging is off.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Time between two progress lines when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(15);

/// A progress report: a bar, log lines, or nothing (see the module
/// documentation). `what` names the units (`tiles`, `epoch 3/10 step`).
pub struct Progress {
    bar: ProgressBar,
    lines: Option<Mutex<Lines>>,
}

impl Progress {
    /// Units whose total grows as work is found (tiles of volume after
    /// volume): a spinner, the elapsed time and `done/total`.
    pub fn counter(what: &str) -> Self {
        Self::new(what, 0, "{spinner} [{elapsed_precise}] {prefix} {pos}/{len} {wide_msg}")
    }

    /// `len` units known up front: a bar with the time left.
    pub fn bar(what: &str, len: u64) -> Self {
        Self::new(what, len, "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
    }

    /// Reports nothing.
    pub fn hidden() -> Self {
        Progress { bar: ProgressBar::hidden(), lines: None }
    }

    fn new(what: &str, len: u64, template: &str) -> Self {
        if !log::log_enabled!(log::Level::Info) {
            return Self::hidden();
        }
        // Draws on stderr, or nothing (hidden) where stderr is not a terminal.
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        let lines = bar.is_hidden().then(|| Mutex::new(Lines::new(what, Instant::now())));
        Progress { bar, lines }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.maybe_log(false);
    }

    pub fn inc_length(&self, n: u64) {
        self.bar.inc_length(n);
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.maybe_log(false);
    }

    /// Shown beside the count (current file, running loss).
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(l) = &self.lines {
            l.lock().unwrap_or_else(|e| e.into_inner()).msg.clone_from(&msg);
        }
        self.bar.set_message(msg);
    }

    /// Clears the bar, or logs the last line if there is progress not yet logged.
    pub fn finish(&self) {
        self.maybe_log(true);
        self.bar.finish_and_clear();
    }

    fn maybe_log(&self, end: bool) {
        if let Some(l) = &self.lines {
            let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
            let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
            if let Some(line) = l.line(Instant::now(), pos, len, end) {
                log::info!("{line}");
            }
        }
    }
}

/// When to log and what: the pacing of [`Progress`] without a terminal.
struct Lines {
    what: String,
    msg: String,
    start: Instant,
    /// Time and position of the last line logged.
    last: Option<(Instant, u64)>,
}

impl Lines {
    fn new(what: &str, start: Instant) -> Self {
        Lines { what: what.to_string(), msg: String::new(), start, last: None }
    }

    /// The line to log at `now` for `pos` of `len`, if one is due: at the
    /// first unit, then every [`LOG_EVERY`], and at the `end` if there is
    /// progress since the last line.
    fn line(&mut self, now: Instant, pos: u64, len: u64, end: bool) -> Option<String> {
        let due = match self.last {
            None => pos > 0,
            Some((t, p)) => pos > p && (end || now.duration_since(t) >= LOG_EVERY),
        };
        if !due {
            return None;
        }
        self.last = Some((now, pos));
        let msg = if self.msg.is_empty() { String::new() } else { format!(": {}", self.msg) };
        let secs = now.duration_since(self.start).as_secs_f64();
        Some(format!("{} {pos}/{len}{msg} ({secs:.0} s)", self.what))
    }
}

#[cfg(test)]
mod tests {
    use super::{Lines, LOG_EVERY};
    use std::time::{Duration, Instant};

    #[test]
    fn lines_come_at_the_first_unit_then_at_a_steady_pace_and_at_the_end() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut l = Lines::new("tiles", t0);
        assert_eq!(l.line(at(1.0), 0, 10, false), None, "nothing done yet");
        l.msg = "embryo.tif".into();
        assert_eq!(l.line(at(2.0), 1, 10, false).as_deref(), Some("tiles 1/10: embryo.tif (2 s)"));
        let every = LOG_EVERY.as_secs_f64();
        assert_eq!(l.line(at(2.0 + every / 2.0), 5, 10, false), None, "too soon");
        assert_eq!(
            l.line(at(2.0 + every), 6, 10, false).as_deref(),
            Some(format!("tiles 6/10: embryo.tif ({:.0} s)", 2.0 + every).as_str())
        );
        l.msg.clear();
        assert_eq!(
            l.line(at(3.0 + every), 10, 10, true).as_deref(),
            Some(format!("tiles 10/10 ({:.0} s)", 3.0 + every).as_str())
        );
        assert_eq!(l.line(at(4.0 + 3.0 * every), 10, 10, true), None, "no progress since the last line");
    }

    #[test]
    fn nothing_done_logs_nothing_even_at_the_end() {
        let t0 = Instant::now();
        let mut l = Lines::new("step", t0);
        assert_eq!(l.line(t0 + LOG_EVERY * 2, 0, 5, true), None);
    }
}
