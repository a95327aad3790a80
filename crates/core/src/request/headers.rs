//! The request headers a decision reads, in either of the two forms front ends have them:
//! the sidecar's front ends collect every header into a map (Envoy's `CheckRequest` is one
//! already); an in-proxy filter reads only the few the decision needs ([`HeaderList`]),
//! borrowed from the proxy's own bytes, where hashing each name and copying each value into
//! a map cost more than the lookups it saves.

use std::borrow::Cow;
use std::collections::HashMap;

/// Request headers by lowercase name, each name once: a repeated header's values are joined
/// with `,` into one list, in the order they came (RFC 9110 §5.3), as Envoy sends them.
#[derive(Debug, Clone, Copy)]
pub enum Headers<'r> {
    /// As the sidecar's front ends collect them.
    Map(&'r HashMap<String, String>),
    /// As an in-proxy filter reads them.
    List(&'r HeaderList<'r>),
}

impl<'r> From<&'r HashMap<String, String>> for Headers<'r> {
    fn from(map: &'r HashMap<String, String>) -> Self {
        Headers::Map(map)
    }
}

impl<'r> From<&'r HeaderList<'r>> for Headers<'r> {
    fn from(list: &'r HeaderList<'r>) -> Self {
        Headers::List(list)
    }
}

impl<'r> Headers<'r> {
    /// The value of `name` (lowercase).
    pub fn get(self, name: &str) -> Option<&'r str> {
        match self {
            Headers::Map(map) => map.get(name).map(String::as_str),
            Headers::List(list) => list.get(name),
        }
    }

    pub fn contains(self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every name, in no particular order.
    pub fn names(self) -> Names<'r> {
        match self {
            Headers::Map(map) => Names::Map(map.keys()),
            Headers::List(list) => Names::List(list.entries.iter()),
        }
    }

    pub fn len(self) -> usize {
        match self {
            Headers::Map(map) => map.len(),
            Headers::List(list) => list.entries.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// The names of [`Headers`].
#[derive(Debug, Clone)]
pub enum Names<'r> {
    Map(std::collections::hash_map::Keys<'r, String, String>),
    List(std::slice::Iter<'r, (Cow<'r, str>, Cow<'r, str>)>),
}

impl<'r> Iterator for Names<'r> {
    type Item = &'r str;

    fn next(&mut self) -> Option<&'r str> {
        match self {
            Names::Map(keys) => keys.next().map(String::as_str),
            Names::List(entries) => entries.next().map(|(name, _)| name.as_ref()),
        }
    }
}

/// Request headers as a list sorted by name, each name once, names and values borrowed from
/// the proxy where they can be (a value read lossily, or a repeated header's joined list, is
/// owned). Built from a request's headers in order (`HeaderList::from` a `Vec`, or collected);
/// looked up by
/// binary search, so a request with many headers costs no more than a map would.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderList<'p> {
    entries: Vec<(Cow<'p, str>, Cow<'p, str>)>,
}

impl<'p> HeaderList<'p> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| self.entries[i].1.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'p> From<Vec<(Cow<'p, str>, Cow<'p, str>)>> for HeaderList<'p> {
    /// `headers` in the order the request has them, names already lowercase: sorted by name
    /// (a stable sort, so a repeated header's values keep their order) and each repeated
    /// name's values joined with `,`.
    fn from(mut entries: Vec<(Cow<'p, str>, Cow<'p, str>)>) -> Self {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, kept| {
                if later.0 != kept.0 {
                    return false;
                }
                let joined = kept.1.to_mut();
                joined.push(',');
                joined.push_str(&later.1);
                true
            });
        }
        HeaderList { entries }
    }
}

impl<'p> FromIterator<(Cow<'p, str>, Cow<'p, str>)> for HeaderList<'p> {
    /// As [`HeaderList::from`] a `Vec`.
    fn from_iter<I: IntoIterator<Item = (Cow<'p, str>, Cow<'p, str>)>>(headers: I) -> Self {
        HeaderList::from(headers.into_iter().collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list<'a>(pairs: &[(&'a str, &'a str)]) -> HeaderList<'a> {
        pairs
            .iter()
            .map(|&(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v)))
            .collect()
    }

    #[test]
    fn a_repeated_header_is_one_list_in_the_order_it_came() {
        let headers = list(&[
            ("x-user-id", "one"),
            ("authorization", "Bearer a"),
            ("x-user-id", "two"),
            ("accept", "*/*"),
            ("x-user-id", "three"),
        ]);
        assert_eq!(headers.len(), 3);
        assert_eq!(headers.get("x-user-id"), Some("one,two,three"));
        assert_eq!(headers.get("authorization"), Some("Bearer a"));
        assert_eq!(headers.get("accept"), Some("*/*"));
        assert_eq!(headers.get("x-user"), None);
        assert_eq!(headers.get(""), None);
        // Both forms answer alike.
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        for name in ["x-user-id", "authorization", "accept", "dpop"] {
            assert_eq!(
                Headers::from(&headers).get(name),
                Headers::from(&map).get(name),
                "{name}"
            );
        }
        let mut names: Vec<&str> = Headers::from(&headers).names().collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "authorization", "x-user-id"]);
    }

    #[test]
    fn sorted_input_is_taken_as_it_is_and_empty_is_empty() {
        let headers = list(&[("a", "1"), ("b", "2")]);
        assert_eq!(headers.get("a"), Some("1"));
        assert_eq!(headers.get("b"), Some("2"));
        let none = list(&[]);
        assert!(none.is_empty());
        assert!(Headers::from(&none).is_empty());
        assert_eq!(none.get("a"), None);
    }

    #[test]
    fn many_headers_are_each_found() {
        // More than a request usually has, in reverse order, every other one repeated.
        let names: Vec<String> = (0..200).rev().map(|i| format!("h{i:03}")).collect();
        let headers: HeaderList<'_> = names
            .iter()
            .flat_map(|n| {
                let repeat = n.ends_with(['0', '2', '4', '6', '8']);
                let first = (Cow::Borrowed(n.as_str()), Cow::Borrowed("v"));
                let second = (Cow::Borrowed(n.as_str()), Cow::Borrowed("w"));
                std::iter::once(first).chain(repeat.then_some(second))
            })
            .collect();
        assert_eq!(headers.len(), 200);
        for n in &names {
            let want = if n.ends_with(['0', '2', '4', '6', '8']) {
                "v,w"
            } else {
                "v"
            };
            assert_eq!(headers.get(n), Some(want), "{n}");
        }
    }
}
