//! `serve`'s signals: SIGHUP reloads the config file, SIGTERM and SIGINT stop the gateway.
//!
//! Owns installing their handlers, which `serve` does before it binds or says it is
//! listening: a signal's default action (SIGHUP's and SIGTERM's is to end the process
//! at once) must never meet a gateway that has announced itself. A signal that arrives
//! while the gateway starts is kept and acted on once it runs. Does not own what a reload
//! or a stop does (`main`, `switchback::reload`, the workers' drain).

use std::time::Duration;

use switchback::reload::LiveEngine;

/// A stop signal this soon after the first is a copy of the same stop, not an operator's
/// second one (which cuts the drain). A Ctrl-C reaches the terminal's whole process group:
/// the gateway gets its SIGINT, and a wrapper around it (a shell script, `npm start`, a
/// supervisor) that forwards what it got as SIGTERM delivers another a few milliseconds
/// later. Taken as a second stop, it cut every drain under such a wrapper at once. A person
/// who means a second stop presses again later than this.
pub const FORWARDED_STOP_WINDOW: Duration = Duration::from_secs(1);

/// The handlers, installed; `serve` hands `hangups` to its reloader and waits on `stop`.
pub struct Signals {
    pub hangups: Hangups,
    pub stop: Stop,
}

/// SIGHUPs, as they arrive (none where they cannot be watched).
pub struct Hangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

/// SIGTERM or SIGINT, whichever comes first.
pub struct Stop {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers now. Must run inside the tokio runtime that will wait on them.
    /// One that cannot be installed is reported and left to its default action.
    pub fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let watch = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("switchback: cannot watch {name}: {e}");
                    None
                }
            };
            Signals {
                hangups: Hangups(watch(SignalKind::hangup(), "SIGHUP")),
                stop: Stop {
                    terminate: watch(SignalKind::terminate(), "SIGTERM"),
                    interrupt: watch(SignalKind::interrupt(), "SIGINT"),
                },
            }
        }
        #[cfg(not(unix))]
        {
            Signals {
                hangups: Hangups(),
                stop: Stop {},
            }
        }
    }
}

impl Stop {
    /// Waits for the first stop signal, and names it.
    pub async fn wait(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                biased;
                () = next(&mut self.terminate) => "SIGTERM",
                () = next(&mut self.interrupt) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Reloads the config file on every SIGHUP: validated fully first; an invalid file keeps
/// the running config. A file that fixes no `rng_seed` keeps the running one.
pub async fn reload_on_hangups(engine: LiveEngine, hangups: Hangups) {
    #[cfg(unix)]
    {
        let Some(mut hangups) = hangups.0 else {
            tracing::warn!(target: "switchback::reload", "cannot watch SIGHUP; reload with POST /admin/reload");
            return;
        };
        while hangups.recv().await.is_some() {
            match engine.reload_source() {
                Ok((path, done)) => done.log(&path, "SIGHUP"),
                Err(refused) => tracing::warn!(target: "switchback::reload", "{refused}"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (engine, hangups);
    }
}
