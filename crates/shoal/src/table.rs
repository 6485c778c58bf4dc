//! The run's table of collected tests, kept compact.
//!
//! A run may collect a hundred thousand tests, and shoal's own memory should
//! stay small beside the workers': a test's strings live in one shared
//! text, its file is an index into a table of modules, and the node-id index
//! holds 64-bit hashes, not second copies of the ids.

use std::collections::HashMap;
use std::hash::BuildHasher;

use shoal_scheduler::TestId;

use crate::protocol::CollectedItem;

/// Where a string sits in the table's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// One collected test as stored: its strings live in the table's text.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    nodeid: Span,
    domain: Span,
    /// Marker names, one a line.
    markers: Span,
    module: u32,
    /// 0-based line, or `u32::MAX` when pytest does not know it.
    line: u32,
    /// Seconds from a `timeout` marker, or NaN when it has none.
    timeout: f32,
    /// Index of its test group, or `u32::MAX` when it has none.
    group: u32,
    /// Reruns from a `flaky` marker, or `u8::MAX` when it has none.
    reruns: u8,
    /// Index of the test file that collected it, or `u32::MAX` when unknown.
    file: u32,
    /// Of a spread file: the part that holds it, or `u16::MAX`.
    part: u16,
    /// Of a spread file: its position in the whole file, or `u32::MAX`.
    position: u32,
    file_child: bool,
    file_named: bool,
}

/// One collected test, as the rest of shoal reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item<'a> {
    /// pytest's node id: an opaque key, never parsed or rewritten.
    pub nodeid: &'a str,
    /// The test's name within its file (e.g. `TestClass.test_x[1]`).
    pub domain: &'a str,
    /// Its file, relative to the rootdir.
    pub path: &'a str,
    /// Index of its file among the run's modules.
    pub module: u32,
    /// 0-based line of the definition, when pytest knows it.
    pub line: Option<u32>,
    /// Seconds from its `@pytest.mark.timeout(N)`, if it has one.
    pub timeout: Option<f64>,
    /// Its test group's index and name, if it has one.
    pub group: Option<(u32, &'a str)>,
    /// Reruns from its `flaky(reruns=N)` marker, if it has one.
    pub reruns: Option<u8>,
    /// The node id of the test file that collected it, when the worker
    /// said (usually `path`; another file for an inherited test).
    pub file: Option<&'a str>,
    /// Of a spread file (collected in parts by several workers): the part
    /// that holds it.
    pub part: Option<u16>,
    /// Of a spread file: its position among the whole file's tests.
    pub position: Option<u32>,
    /// Under `--lf`: a direct child of its file's collector (not in a class).
    pub file_child: bool,
    /// Under `--lf`: its file was named on the command line.
    pub file_named: bool,
    markers: &'a str,
}

impl<'a> Item<'a> {
    /// Names of its markers.
    pub fn markers(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.markers.split('\n').filter(|name| !name.is_empty())
    }

    /// The item as a worker reports it, to store in another table.
    pub fn to_collected(&self) -> CollectedItem {
        CollectedItem {
            nodeid: self.nodeid.to_owned(),
            path: self.path.to_owned(),
            line: self.line.map(u64::from),
            domain: self.domain.to_owned(),
            markers: self.markers().map(str::to_owned).collect(),
            timeout: self.timeout,
            group: self.group.map(|(_, name)| name.to_owned()),
            reruns: self.reruns,
            module: self.file.map(str::to_owned),
            part: self.part,
            position: self.position,
            file_child: self.file_child,
            file_named: self.file_named,
        }
    }
}

/// The collected tests, in collection order; a node id appears once.
#[derive(Debug, Default, Clone)]
pub struct TestTable {
    text: String,
    entries: Vec<Entry>,
    modules: Vec<Box<str>>,
    module_index: HashMap<Box<str>, u32>,
    by_hash: HashMap<u64, u32>,
    groups: Vec<Box<str>>,
    group_index: HashMap<Box<str>, u32>,
    files: Vec<Box<str>>,
    file_index: HashMap<Box<str>, u32>,
    /// Node ids whose hash another id already took (practically never).
    overflow: HashMap<Box<str>, u32>,
    hasher: std::hash::RandomState,
}

impl TestTable {
    /// Adds an item unless its node id is already there; returns whether it
    /// was added.
    pub fn push(&mut self, item: CollectedItem) -> bool {
        if self.find(&item.nodeid).is_some() {
            return false;
        }
        let id = u32::try_from(self.entries.len()).expect("fewer than 4 billion tests");
        match self.by_hash.entry(self.hasher.hash_one(item.nodeid.as_str())) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.overflow.insert(item.nodeid.clone().into_boxed_str(), id);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
            }
        }
        let module = match self.module_index.get(item.path.as_str()) {
            Some(&module) => module,
            None => {
                let module = u32::try_from(self.modules.len()).expect("fewer than 4 billion files");
                self.modules.push(item.path.clone().into_boxed_str());
                self.module_index.insert(item.path.into_boxed_str(), module);
                module
            }
        };
        let nodeid = self.store(&item.nodeid);
        let domain = self.store(&item.domain);
        let markers = self.store(&item.markers.join("\n"));
        let line = item.line.and_then(|line| u32::try_from(line).ok()).unwrap_or(u32::MAX);
        let timeout = item.timeout.map_or(f32::NAN, |seconds| seconds as f32);
        let group = item.group.map_or(u32::MAX, |name| self.intern_group(name));
        let reruns = item.reruns.map_or(u8::MAX, |count| count.min(u8::MAX - 1));
        let file = item.module.map_or(u32::MAX, |name| self.intern_file(name));
        let part = item.part.map_or(u16::MAX, |part| part.min(u16::MAX - 1));
        let position = item.position.map_or(u32::MAX, |position| position.min(u32::MAX - 1));
        self.entries.push(Entry {
            nodeid,
            domain,
            markers,
            module,
            line,
            timeout,
            group,
            reruns,
            file,
            part,
            position,
            file_child: item.file_child,
            file_named: item.file_named,
        });
        true
    }

    fn intern_file(&mut self, name: String) -> u32 {
        intern(&mut self.files, &mut self.file_index, name)
    }

    fn intern_group(&mut self, name: String) -> u32 {
        intern(&mut self.groups, &mut self.group_index, name)
    }

    fn store(&mut self, text: &str) -> Span {
        let start = u32::try_from(self.text.len()).expect("under 4 GiB of node ids");
        self.text.push_str(text);
        Span { start, len: u32::try_from(text.len()).expect("a node id under 4 GiB") }
    }

    fn text(&self, span: Span) -> &str {
        &self.text[span.start as usize..(span.start + span.len) as usize]
    }

    /// The test with this node id.
    pub fn find(&self, nodeid: &str) -> Option<TestId> {
        if let Some(&id) = self.by_hash.get(&self.hasher.hash_one(nodeid))
            && self.text(self.entries[id as usize].nodeid) == nodeid
        {
            return Some(id as usize);
        }
        self.overflow.get(nodeid).map(|&id| id as usize)
    }

    /// Number of tests.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no test was collected.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One test.
    pub fn item(&self, test: TestId) -> Item<'_> {
        let entry = self.entries[test];
        Item {
            nodeid: self.text(entry.nodeid),
            domain: self.text(entry.domain),
            path: &self.modules[entry.module as usize],
            module: entry.module,
            line: (entry.line != u32::MAX).then_some(entry.line),
            timeout: (!entry.timeout.is_nan()).then_some(f64::from(entry.timeout)),
            group: (entry.group != u32::MAX).then(|| (entry.group, &*self.groups[entry.group as usize])),
            reruns: (entry.reruns != u8::MAX).then_some(entry.reruns),
            file: (entry.file != u32::MAX).then(|| &*self.files[entry.file as usize]),
            part: (entry.part != u16::MAX).then_some(entry.part),
            position: (entry.position != u32::MAX).then_some(entry.position),
            file_child: entry.file_child,
            file_named: entry.file_named,
            markers: self.text(entry.markers),
        }
    }

    /// All tests, in collection order.
    pub fn items(&self) -> impl Iterator<Item = Item<'_>> {
        (0..self.len()).map(|test| self.item(test))
    }

    /// The node id of a test.
    pub fn nodeid(&self, test: TestId) -> &str {
        self.text(self.entries[test].nodeid)
    }

    /// The file of a module index.
    pub fn module_path(&self, module: u32) -> &str {
        &self.modules[module as usize]
    }

    /// Number of distinct files.
    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// A table of the tests `keep` accepts, in the same order, and how many
    /// it left out.
    pub fn retain(&self, keep: impl Fn(TestId) -> bool) -> (TestTable, usize) {
        let mut kept = TestTable::default();
        let mut left_out = 0;
        for test in 0..self.len() {
            if !keep(test) {
                left_out += 1;
                continue;
            }
            kept.push(self.item(test).to_collected());
        }
        (kept, left_out)
    }

    /// The first position at which two tables' node ids differ, if any.
    pub fn first_difference(&self, other: &TestTable) -> Option<usize> {
        (0..self.len().min(other.len()))
            .find(|&test| self.nodeid(test) != other.nodeid(test))
            .or_else(|| (self.len() != other.len()).then(|| self.len().min(other.len())))
    }
}

/// The index of `name` in `names`, added if new.
fn intern(names: &mut Vec<Box<str>>, index: &mut HashMap<Box<str>, u32>, name: String) -> u32 {
    if let Some(&found) = index.get(name.as_str()) {
        return found;
    }
    let found = u32::try_from(names.len()).expect("fewer than 4 billion names");
    names.push(name.clone().into_boxed_str());
    index.insert(name.into_boxed_str(), found);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected(nodeid: &str, path: &str) -> CollectedItem {
        CollectedItem {
            nodeid: nodeid.into(),
            path: path.into(),
            line: Some(3),
            domain: "d".into(),
            markers: vec!["slow".into()],
            ..CollectedItem::default()
        }
    }

    #[test]
    fn items_are_found_by_node_id_and_share_their_module() {
        let mut table = TestTable::default();
        assert!(table.push(collected("a.py::t[x y]", "a.py")));
        assert!(table.push(collected("a.py::u", "a.py")));
        assert!(table.push(collected("b.py::t", "b.py")));
        assert!(!table.push(collected("a.py::u", "a.py")), "a node id is stored once");
        assert_eq!(table.len(), 3);
        assert_eq!(table.find("a.py::t[x y]"), Some(0));
        assert_eq!(table.find("b.py::t"), Some(2));
        assert_eq!(table.find("c.py::t"), None);
        assert_eq!(table.item(1).path, "a.py");
        assert_eq!(table.module_count(), 2);
        assert_eq!(table.item(0).line, Some(3));
        assert_eq!(table.item(0).markers().collect::<Vec<_>>(), vec!["slow"]);
        assert_eq!(table.item(2).nodeid, "b.py::t");
    }

    #[test]
    fn differences_are_located() {
        let mut first = TestTable::default();
        let mut second = TestTable::default();
        for id in ["a", "b"] {
            first.push(collected(id, "f.py"));
        }
        second.push(collected("a", "f.py"));
        assert_eq!(first.first_difference(&second), Some(1));
        second.push(collected("b", "f.py"));
        assert_eq!(first.first_difference(&second), None);
    }
}
