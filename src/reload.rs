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
//! the new config lists the same deployment ids in the same order, and starts it afresh
//! otherwise (see [`Engine::successor`]). Does not own where a reload comes from (`serve`
//! reloads on SIGHUP) nor the listener-level limits (`max_connections`, the header read
//! timeout, `shutdown_grace`), which apply from start to stop.

use std::sync::{Arc, RwLock};

use crate::catalog::Catalog;
use crate::config::{ConfigError, GatewayConfig};
use crate::engine::Engine;

/// The gateway's current engine, swappable. Clones share it.
#[derive(Clone)]
pub struct LiveEngine {
    current: Arc<RwLock<Arc<Engine>>>,
}

impl From<Arc<Engine>> for LiveEngine {
    fn from(engine: Arc<Engine>) -> LiveEngine {
        LiveEngine {
            current: Arc::new(RwLock::new(engine)),
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub groups: usize,
    pub deployments: usize,
    /// Whether deployment health carried over (the same deployment ids, in order).
    pub health_kept: bool,
}

impl LiveEngine {
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
        };
        *slot = Arc::new(next);
        Ok(reloaded)
    }
}
