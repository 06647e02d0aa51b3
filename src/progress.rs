//! Progress of an apply or destroy: spinners on a terminal, one line per
//! finished step elsewhere (CI logs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use ihp_infra::executor::{Observer, Phase, Step};
use ihp_infra::plan::Change;
use ihp_infra::render::Palette;

pub struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Step, ProgressBar>>,
    colors: bool,
}

impl Progress {
    pub fn new(interactive: bool, colors: bool) -> Self {
        Progress {
            multi: interactive.then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
            colors,
        }
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
            None => eprintln!("  {line}"),
        }
    }
}
