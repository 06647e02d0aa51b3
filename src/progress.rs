//! Progress of an apply or destroy: spinners on a terminal, one line per
//! finished step elsewhere (CI logs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use ihp_infra::executor::{Observer, Phase, Step};
use ihp_infra::plan::Change;
use ihp_infra::render::Palette;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// Spinners with elapsed time, on a terminal.
    Live,
    /// A line per finished step, and "still ..." lines (CI logs).
    Lines,
    /// Nothing but the log (`-q`).
    Quiet,
}

pub struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
    bars: Mutex<HashMap<Step, ProgressBar>>,
    /// Steps under way, for the periodic "still waiting" lines in CI logs.
    running: Mutex<HashMap<Step, Instant>>,
    colors: bool,
}

impl Progress {
    pub fn new(display: Display, colors: bool) -> Self {
        Progress {
            multi: (display == Display::Live).then(MultiProgress::new),
            quiet: display == Display::Quiet,
            bars: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            colors,
        }
    }

    /// Without a terminal there is no spinner: say which slow steps are
    /// still going (a database takes minutes), so a CI log never goes quiet.
    pub fn heartbeat(&self, older_than: Duration) {
        if self.multi.is_none() && !self.quiet {
            for line in self.still_running(older_than) {
                errln!("{line}");
            }
        }
    }

    fn still_running(&self, older_than: Duration) -> Vec<String> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut slow: Vec<_> = running
            .iter()
            .filter(|(_, started)| started.elapsed() >= older_than)
            .collect();
        slow.sort_by_key(|(step, _)| (*step).clone());
        slow.into_iter()
            .map(|(step, started)| {
                format!(
                    "  … still {} {} ({}s)",
                    gerund(step.phase),
                    step.address,
                    started.elapsed().as_secs() / 10 * 10
                )
            })
            .collect()
    }
}

fn gerund(phase: Phase) -> &'static str {
    match phase {
        Phase::Create => "creating",
        Phase::Update => "updating",
        Phase::Delete => "deleting",
    }
}

fn past(phase: Phase) -> &'static str {
    match phase {
        Phase::Create => "created",
        Phase::Update => "updated",
        Phase::Delete => "deleted",
    }
}

impl Observer for Progress {
    fn started(&self, step: &Step, change: &Change) {
        tracing::info!(step = %step, name = %change.name, "step started");
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(step.clone(), Instant::now());
        if let Some(multi) = &self.multi {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(format!(
                "{} {} {}",
                gerund(step.phase),
                step.address,
                change.name
            ));
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bars
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(step.clone(), bar);
        }
    }

    fn finished(
        &self,
        step: &Step,
        change: &Change,
        outcome: Result<Option<&str>, &str>,
        elapsed: Duration,
    ) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(step);
        let p = Palette::new(self.colors);
        let secs = elapsed.as_secs_f64();
        let line = match outcome {
            Ok(id) => {
                tracing::info!(step = %step, elapsed_ms = elapsed.as_millis() as u64, "step finished");
                let id = id.or(change.id.as_deref()).unwrap_or("");
                format!(
                    "{} {} {} {id} ({secs:.1}s)",
                    p.ok("✓"),
                    past(step.phase),
                    step.address
                )
            }
            Err(e) => {
                tracing::warn!(step = %step, error = e, "step failed");
                format!(
                    "{} failed to {} {}: {e}",
                    p.err("✗"),
                    step.phase.verb(),
                    step.address
                )
            }
        };
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(step);
        match bar {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("  {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.finish_with_message(line);
            }
            None if self.quiet => {}
            None => errln!("  {line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ihp_infra::model::{Address, Kind};
    use ihp_infra::plan::Action;

    fn change(kind: Kind, role: &str) -> Change {
        Change {
            address: Address::new(kind, role),
            action: Action::Create,
            name: String::new(),
            id: None,
            attrs: Vec::new(),
            tags: Default::default(),
            depends_on: Vec::new(),
            data_on_delete: None,
            observed: Default::default(),
        }
    }

    #[test]
    fn slow_steps_are_reported_until_they_finish() {
        let progress = Progress::new(Display::Lines, false);
        let db = change(Kind::Database, "postgres-db");
        let vpc = change(Kind::Vpc, "vpc");
        let step = |c: &Change| Step {
            address: c.address.clone(),
            phase: Phase::Create,
        };
        progress.started(&step(&db), &db);
        progress.started(&step(&vpc), &vpc);
        progress.finished(&step(&vpc), &vpc, Ok(Some("vpc-1")), Duration::ZERO);
        assert_eq!(
            progress.still_running(Duration::ZERO),
            ["  … still creating database.postgres-db (0s)"]
        );
        assert!(progress.still_running(Duration::from_secs(3600)).is_empty());
        progress.finished(&step(&db), &db, Ok(Some("db")), Duration::ZERO);
        assert!(progress.still_running(Duration::ZERO).is_empty());
    }
}
