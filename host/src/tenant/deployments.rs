//! The policy versions a tenant has deployed, and its activation history.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::runtime::PolicyModule;

/// The versions a tenant has deployed, newest last. Bounded: old versions
/// that are neither active nor in the rollback history are dropped.
pub struct Deployments {
    pub versions: VecDeque<Arc<PolicyModule>>,
    /// Versions that were active before, most recent last.
    pub history: Vec<Arc<str>>,
    keep: usize,
}

impl Deployments {
    pub(super) fn new(initial: Arc<PolicyModule>, keep: usize) -> Deployments {
        Deployments {
            versions: VecDeque::from([initial]),
            history: Vec::new(),
            keep: keep.max(2),
        }
    }

    pub fn find(&self, version: &str) -> Option<Arc<PolicyModule>> {
        self.versions
            .iter()
            .find(|m| *m.version == *version)
            .cloned()
    }

    /// Adds a version (once) and trims.
    pub fn add(&mut self, module: Arc<PolicyModule>, active: &str) {
        if self.find(&module.version).is_none() {
            self.versions.push_back(module);
        }
        self.trim(active);
    }

    pub(super) fn trim(&mut self, active: &str) {
        self.history.retain(|v| **v != *active);
        let keep_history = self.keep - 1;
        if self.history.len() > keep_history {
            self.history.drain(..self.history.len() - keep_history);
        }
        while self.versions.len() > self.keep {
            let removable = self
                .versions
                .iter()
                .position(|m| *m.version != *active && !self.history.contains(&m.version));
            match removable {
                Some(i) => {
                    self.versions.remove(i);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_module;

    #[test]
    fn old_versions_go_but_the_active_one_and_its_history_stay() {
        let [a, b, c, d] = ["default", "router", "cache-key", "origin-fallback"].map(test_module);
        let mut deployments = Deployments::new(a.clone(), 2);
        deployments.history.push(a.version.clone());
        deployments.add(b.clone(), &c.version);
        deployments.add(c.clone(), &c.version);
        // Kept: c (active) and a (in the history); b is the one to go.
        assert!(deployments.find(&b.version).is_none());
        assert!(deployments.find(&a.version).is_some());
        assert!(deployments.find(&c.version).is_some());
        deployments.add(d.clone(), &c.version);
        assert_eq!(deployments.versions.len(), 2, "bounded by keep");
        assert!(
            deployments.find(&c.version).is_some(),
            "the active version is never dropped"
        );
        deployments.add(c.clone(), &c.version);
        assert_eq!(
            deployments
                .versions
                .iter()
                .filter(|m| m.version == c.version)
                .count(),
            1,
            "a version is kept once"
        );
    }
}
