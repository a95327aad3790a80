//! Which rules can match a path, found without trying every rule in turn: exact paths in a
//! hash map, prefixes in a byte trie walked once along the path, regexes in one
//! `RegexSet` (one pass over the path for all of them), rules without a path always.
//!
//! Rules that ignore case sit in their own map and trie, keyed in lowercase and looked up
//! with the path lowercased; exact paths are keyed without their trailing slash and looked
//! up the same way, and a prefix ending in `/` is also an exact key without it
//! ([`super::Rule::path_matches`] says what matches; the index only finds it faster).
//!
//! First match wins, as before: every source lists its rules in configuration order, and
//! the rule that applies is the smallest index whose path matches and whose other
//! conditions (method, host, context extensions) hold: the minimum over the sources of each
//! source's first such rule. A source is not even looked at once a smaller index has won.

use std::borrow::Cow;
use std::collections::HashMap;

use regex::RegexSet;

use super::{PathMatcher, Rule, trim_slash};

#[derive(Debug)]
pub(super) struct PathIndex {
    /// Rules without a path condition.
    any_path: Vec<usize>,
    /// Rules that match case exactly.
    exact: Paths,
    /// Rules that ignore case: keys in lowercase.
    folded: Paths,
    regexes: Regexes,
}

/// The exact and prefix rules of one case sensitivity.
#[derive(Debug, Default)]
struct Paths {
    /// By path without its trailing slash.
    exact: HashMap<String, Vec<usize>>,
    prefixes: Trie,
}

impl Paths {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.nodes.is_empty()
    }

    fn first(&self, path: &str, best: &mut Option<usize>, accept: &mut impl FnMut(usize) -> bool) {
        if let Some(exact) = self.exact.get(trim_slash(path)) {
            first_in(exact, best, accept);
        }
        for node in self.prefixes.along(path) {
            first_in(node, best, accept);
        }
    }
}

#[derive(Debug)]
enum Regexes {
    None,
    /// Pattern `i` of the set is the regex of rule `rules[i]`.
    Set {
        set: RegexSet,
        rules: Vec<usize>,
    },
    /// The patterns did not fit one set (the regex crate's size limit): each rule's own
    /// regex is tried, in order.
    Each(Vec<usize>),
}

/// A byte trie of the prefix rules: the node reached after `n` bytes of a path holds the
/// rules whose prefix is exactly those `n` bytes.
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// Sorted by byte.
    next: Vec<(u8, usize)>,
    rules: Vec<usize>,
}

impl Trie {
    fn insert(&mut self, prefix: &str, rule: usize) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut at = 0;
        for byte in prefix.bytes() {
            at = match self.nodes[at].next.binary_search_by_key(&byte, |(b, _)| *b) {
                Ok(found) => self.nodes[at].next[found].1,
                Err(slot) => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[at].next.insert(slot, (byte, child));
                    child
                }
            };
        }
        self.nodes[at].rules.push(rule);
    }

    /// The rule lists of every prefix of `path` that some rule names, shortest first.
    fn along<'t>(&'t self, path: &'t str) -> impl Iterator<Item = &'t [usize]> + 't {
        let mut at = (!self.nodes.is_empty()).then_some(0);
        let mut bytes = path.bytes();
        std::iter::from_fn(move || {
            let node = &self.nodes[at?];
            at = bytes.next().and_then(|byte| {
                node.next
                    .binary_search_by_key(&byte, |(b, _)| *b)
                    .ok()
                    .map(|i| node.next[i].1)
            });
            Some(node.rules.as_slice())
        })
    }
}

impl PathIndex {
    pub(super) fn new(rules: &[Rule]) -> Self {
        let mut index = PathIndex {
            any_path: Vec::new(),
            exact: Paths::default(),
            folded: Paths::default(),
            regexes: Regexes::None,
        };
        let mut patterns = Vec::new();
        let mut regex_rules = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let paths = if rule.case_sensitive {
                &mut index.exact
            } else {
                &mut index.folded
            };
            match &rule.path {
                None => index.any_path.push(i),
                Some(PathMatcher::Exact(path)) => {
                    paths.exact.entry(path.clone()).or_default().push(i)
                }
                Some(PathMatcher::Prefix(prefix)) => {
                    paths.prefixes.insert(prefix, i);
                    if prefix.len() > 1 && prefix.ends_with('/') {
                        let bare = prefix[..prefix.len() - 1].to_owned();
                        paths.exact.entry(bare).or_default().push(i);
                    }
                }
                Some(PathMatcher::Regex(re)) => {
                    patterns.push(re.as_str().to_owned());
                    regex_rules.push(i);
                }
            }
        }
        if !regex_rules.is_empty() {
            index.regexes = match RegexSet::new(&patterns) {
                Ok(set) => Regexes::Set {
                    set,
                    rules: regex_rules,
                },
                Err(_) => Regexes::Each(regex_rules),
            };
        }
        index
    }

    /// The smallest rule index whose path matches `path` and which `accept`s the rest of
    /// the request.
    pub(super) fn first(
        &self,
        rules: &[Rule],
        path: &str,
        mut accept: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let mut best = None;
        first_in(&self.any_path, &mut best, &mut accept);
        self.exact.first(path, &mut best, &mut accept);
        if !self.folded.is_empty() {
            let lower = if path.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(path.to_ascii_lowercase())
            } else {
                Cow::Borrowed(path)
            };
            self.folded.first(&lower, &mut best, &mut accept);
        }
        match &self.regexes {
            Regexes::None => {}
            // Not run at all when an earlier rule already won.
            Regexes::Set { set, rules } if best.is_none_or(|b| rules[0] < b) => {
                let matched = set.matches(path);
                for pattern in matched.iter() {
                    let rule = rules[pattern];
                    if best.is_some_and(|b| rule >= b) {
                        break;
                    }
                    if accept(rule) {
                        best = Some(rule);
                        break;
                    }
                }
            }
            Regexes::Set { .. } => {}
            Regexes::Each(each) => {
                for &rule in each {
                    if best.is_some_and(|b| rule >= b) {
                        break;
                    }
                    let hit = matches!(&rules[rule].path, Some(PathMatcher::Regex(re)) if re.is_match(path));
                    if hit && accept(rule) {
                        best = Some(rule);
                        break;
                    }
                }
            }
        }
        best
    }
}

/// The first rule of `list` (ascending) below `best` that `accept`s, into `best`.
fn first_in(list: &[usize], best: &mut Option<usize>, accept: &mut impl FnMut(usize) -> bool) {
    for &rule in list {
        if best.is_some_and(|b| rule >= b) {
            return;
        }
        if accept(rule) {
            *best = Some(rule);
            return;
        }
    }
}
