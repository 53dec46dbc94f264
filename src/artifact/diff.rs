//! PLACEHOLDER signatures until the objects branch merges (theirs wins on merge).
#![allow(missing_docs, unused_variables)]
use serde::Serialize;
use super::objects::{Object, ObjectKey};
#[derive(Serialize)] pub struct ObjectDiff { pub added: Vec<ObjectKey>, pub removed: Vec<ObjectKey>, pub changed: Vec<ChangedObject> }
#[derive(Serialize)] pub struct ChangedObject { pub key: ObjectKey, pub unified_diff: String }
pub fn diff(local: &[Object], remote: &[Object]) -> ObjectDiff { ObjectDiff { added: vec![], removed: vec![], changed: vec![] } }
impl ObjectDiff { pub fn is_empty(&self) -> bool { true } pub fn render_text(&self) -> String { String::new() } }
