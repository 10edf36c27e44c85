//! A test binary's `main` for real-engine tests (`harness = false` in Cargo.toml): the gate is
//! checked once, then the trials run through `libtest-mimic`, which accepts libtest's command
//! line (filters, `--list`, `--test-threads`) and prints libtest's summary. When the machine
//! lacks a prerequisite outside CI, every trial is *ignored* — the summary counts it as not
//! run — and one `NOT RUN` banner says why. Under CI the trials run and fail with that reason.

use libtest_mimic::{Arguments, Failed, Trial};

use crate::gate::{self, Need};

/// One test: a name and a body that panics (or returns `Err`) on failure.
pub struct Test {
    pub name: &'static str,
    pub body: fn(),
}

/// Runs `tests`, all needing `needs`; exits the process with libtest's status.
pub fn run(needs: &[Need], tests: Vec<Test>) -> ! {
    let args = Arguments::from_args();
    let missing = gate::missing(needs);
    let ignore = missing.is_some() && !gate::under_ci();
    if let (Some(why), true) = (&missing, ignore) {
        eprintln!(
            "\n*** NOT RUN: {} test(s) of {} need {why}. They are counted as ignored; under \
             CI=true they fail. ***\n",
            tests.len(),
            std::env::args().next().unwrap_or_default(),
        );
    }
    let trials = tests
        .into_iter()
        .map(|t| {
            let missing = missing.clone();
            Trial::test(t.name, move || match missing {
                Some(why) => Err(Failed::from(format!(
                    "needs {why} (required under CI=true)"
                ))),
                None => {
                    (t.body)();
                    Ok(())
                }
            })
            .with_ignored_flag(ignore)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}
