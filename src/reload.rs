//! Safe config reload: the engine a new request gets, and swapping it for a new config.
//!
//! Owns: [`LiveEngine`], the gateway's handle on its current [`Engine`]. Each request takes
//! the current engine once, when it arrives, and keeps it to its end, so a reload never
//! changes the config under a request in flight (its plan, its deployments, its limits).
//! [`LiveEngine::reload`] validates the new config fully ([`Catalog::new`]) before anything
//! changes: an invalid config leaves the running one in place and returns the located
//! error. A valid one becomes the engine of every later request, atomically. The successor
//! keeps the request numbering, the observers (trace, metrics, decision log), the clocks
//! and the retry policy; it keeps the deployments' health (cooldowns, failure counts) when
//! the new config lists the same upstreams in the same order, and otherwise carries each
//! upstream's health over (the same id, `api_base`, model and key; see
//! [`Engine::successor`]). [`LiveEngine::reload_source`] re-reads the file the
//! config came from, one reload at a time. It keeps the limits of the start, which the
//! listener reads once (`max_connections`, the header read and client write timeouts,
//! `shutdown_grace`; `serve`'s DNS cache): a reload that changes them names them
//! ([`Reloaded::needs_restart`]). Does not own when a reload is asked for (`serve` on
//! SIGHUP, the `POST /admin/reload` route).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::catalog::Catalog;
use crate::config::{ConfigError, GatewayConfig};
use crate::engine::Engine;
use crate::limits::Limits;

/// The gateway's current engine, swappable. Clones share it.
#[derive(Clone)]
pub struct LiveEngine {
    current: Arc<RwLock<Arc<Engine>>>,
    /// The file the config came from, for reloads from it (SIGHUP, `POST /admin/reload`).
    source: Option<Arc<PathBuf>>,
    /// Held from reading the file to the swap: two reloads at once (a SIGHUP on the main
    /// runtime, a `POST /admin/reload` on a worker) would otherwise each read the file
    /// and swap, and the one that read the older file could swap last.
    reloading: Arc<Mutex<()>>,
    /// The limits at start: those the listener reads once keep these values until a
    /// restart, whatever a reload says ([`Limits::restart_only_changes`]).
    at_start: Arc<Limits>,
}

impl From<Arc<Engine>> for LiveEngine {
    fn from(engine: Arc<Engine>) -> LiveEngine {
        LiveEngine {
            at_start: Arc::new(engine.catalog().limits.clone()),
            current: Arc::new(RwLock::new(engine)),
            source: None,
            reloading: Arc::default(),
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub groups: usize,
    pub deployments: usize,
    /// Whether deployment health is shared with the old config whole (the same upstreams,
    /// in order, each alone in its group or not as before, with the same own
    /// `cooldown_time`).
    pub health_kept: bool,
    /// Deployments whose health carried over from the same upstream (id, `api_base`, model
    /// and key) in the old config (all of them when `health_kept`).
    pub health_carried: usize,
    /// Limits read only at start whose values in the new config differ from the start's
    /// ([`Limits::restart_only_changes`]).
    pub needs_restart: Vec<&'static str>,
}

impl Reloaded {
    /// `3 groups, 4 deployments; deployment health kept (same deployments)`.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{} groups, {} deployments; deployment health {}",
            self.groups,
            self.deployments,
            self.health()
        );
        if !self.needs_restart.is_empty() {
            line.push_str("; unchanged until a restart: ");
            line.push_str(&self.needs_restart.join(", "));
        }
        line
    }

    /// Logs the reload of `path` on `trigger` (`SIGHUP`, `POST /admin/reload`): a warning
    /// when it changes limits that only a restart applies.
    pub fn log(&self, path: &std::path::Path, trigger: &str) {
        let (path, line) = (path.display(), self.describe());
        if self.needs_restart.is_empty() {
            tracing::info!(target: "switchback::reload", "reloaded {path} on {trigger}: {line}");
        } else {
            tracing::warn!(target: "switchback::reload", "reloaded {path} on {trigger}: {line}");
        }
    }

    /// `kept (same deployments)`, `carried over for 2 of 3 deployments (same id and
    /// upstream)` or `reset (no deployment kept its id and upstream)`.
    pub fn health(&self) -> String {
        if self.health_kept {
            "kept (same deployments)".into()
        } else if self.health_carried > 0 {
            format!(
                "carried over for {} of {} deployments (same id and upstream)",
                self.health_carried, self.deployments
            )
        } else {
            "reset (no deployment kept its id and upstream)".into()
        }
    }
}

impl LiveEngine {
    /// The same engine, reloadable from `path` ([`LiveEngine::reload_source`]).
    pub fn with_source(mut self, path: impl Into<PathBuf>) -> LiveEngine {
        self.source = Some(Arc::new(path.into()));
        self
    }

    /// Reads the config file again and reloads it ([`LiveEngine::reload`]); a file that
    /// fixes no `router_settings.rng_seed` keeps the running one. `Err` is the line to
    /// report: no source, or the file's located errors (the running config stays).
    pub fn reload_source(&self) -> Result<(PathBuf, Reloaded), String> {
        let Some(path) = self.source.as_deref() else {
            return Err("this gateway was not started from a config file".into());
        };
        let refused = |e: ConfigError| {
            format!(
                "reload of {} refused, the running config stays:\n{e}",
                path.display()
            )
        };
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let mut config = GatewayConfig::load_file(path).map_err(refused)?;
        let seed = self.current().catalog().settings.rng_seed;
        config.router_settings.rng_seed.get_or_insert(seed);
        let done = self.reload(&config).map_err(refused)?;
        Ok((path.clone(), done))
    }

    /// The limits as they were at start: the listener's keep these values until a restart.
    pub fn limits_at_start(&self) -> &Limits {
        &self.at_start
    }

    /// `limits.client_write_timeout` as at start: the socket's writes keep it until a
    /// restart, so a stream's frames do too.
    pub fn client_write_timeout(&self) -> Duration {
        self.at_start.client_write_timeout()
    }

    /// The engine for a request arriving now.
    pub fn current(&self) -> Arc<Engine> {
        // A poisoned lock only means a reload panicked between two plain assignments; the
        // engine inside is whole either way.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Validates `config` fully, then makes it the config of every request admitted from
    /// now on. On error nothing changes.
    pub fn reload(&self, config: &GatewayConfig) -> Result<Reloaded, ConfigError> {
        let catalog = Arc::new(Catalog::new(config)?);
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        let next = slot.successor(catalog);
        let reloaded = Reloaded {
            groups: next.catalog().model_group_count(),
            deployments: next.catalog().deployments.len(),
            health_kept: next.shares_health_with(&slot),
            health_carried: next
                .catalog()
                .same_upstreams_in(slot.catalog())
                .iter()
                .filter(|from| from.is_some())
                .count(),
            needs_restart: self.at_start.restart_only_changes(&next.catalog().limits),
        };
        *slot = Arc::new(next);
        Ok(reloaded)
    }
}
