//! Tags as they will be: `adopt` shows the plan that follows a takeover
//! before it tags anything, by having the services see the resources it
//! would take over as if they carried the tags already.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// Tags to add, by resource id (an EC2 id, an RDS identifier or DB
/// subnet group name). Empty outside `adopt`.
#[derive(Debug, Default)]
pub struct Overlay(RwLock<BTreeMap<String, BTreeMap<String, String>>>);

impl Overlay {
    pub fn set(&self, tags: BTreeMap<String, BTreeMap<String, String>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = tags;
    }

    /// The ids with this prefix (`vpc-`, `subnet-`): EC2 resources to
    /// describe besides those that carry the stack's tag.
    pub fn ids(&self, prefix: &str) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|id| id.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The live tags of `id` with what adopt would add.
    pub fn tags(&self, id: &str, mut live: BTreeMap<String, String>) -> BTreeMap<String, String> {
        if let Some(more) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            live.extend(more.clone());
        }
        live
    }
}

/// Adds to `live` the resources of `adopted` it lacks, by id: one tagged
/// already is found by both describes.
pub fn merge<T: Clone>(live: &mut Vec<T>, adopted: &[T], id: impl Fn(&T) -> Option<&str>) {
    let known: Vec<String> = live
        .iter()
        .filter_map(|x| id(x).map(str::to_string))
        .collect();
    live.extend(
        adopted
            .iter()
            .filter(|x| !id(x).is_some_and(|i| known.iter().any(|k| k == i)))
            .cloned(),
    );
}
