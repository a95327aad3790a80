//! The canonical request path: what every rule is matched against, whatever the proxy in
//! front did or did not normalise.
//!
//! Normalisation follows RFC 3986: percent-encoded unreserved characters are decoded and the
//! hex digits of the remaining escapes upper-cased (§6.2.2.1, §6.2.2.2), dot-segments are
//! removed (§5.2.4, §6.2.2.3); on top of that repeated slashes are merged, the query and any
//! fragment are dropped, and bytes that may not appear raw in a path (§3.3: anything but
//! `pchar` and `/`) are percent-encoded, so two spellings of one path give one string.
//!
//! A path whose meaning depends on who reads it is refused instead ([`PathError`]): an
//! encoded slash or backslash (servers disagree on whether `%2F` separates segments), a raw
//! backslash (a separator on some servers, data on others), control characters and `%00`,
//! invalid percent-encoding, percent-encoded bytes that are not UTF-8 (overlong forms such as
//! `%C0%AF` decode to `/` in lax decoders), a `..` that would climb above the root (RFC 3986
//! §5.2.4 silently drops it; we do not guess), a `..` right after an empty segment, `.`s
//! aside (`/a//../b` is `/a/b` to RFC 3986 and `/b` to servers that merge slashes first), a
//! `;` (Java servers strip `;params` from each segment before routing; `paths.path_parameters`
//! drops them the same way (`strip`) or keeps them as data (`keep`), and either way still
//! refuses `/..;/`, which those servers read as `..` where a proxy in front does not), and
//! a fragment (`#`, which no client sends and which would hide the rest of the target).

use std::borrow::Cow;

use serde::Deserialize;

/// The `paths` section: request paths are matched in their canonical form ([`canonical_path`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    /// What `;` in a path (RFC 3986 §3.3 path parameters) means.
    #[serde(default)]
    pub path_parameters: PathParameters,
    /// Whether rule paths match letter case exactly. Off (the default): `/API/Users` is
    /// `/api/users` to the rules, as it is to Caddy's matchers and to Express, ASP.NET and
    /// Spring before 6, so a protected route cannot be reached in another case; an app that
    /// tells the two apart answers 404 to the spelling it does not know. A rule's own
    /// `case_sensitive` overrides this.
    #[serde(default)]
    pub case_sensitive: bool,
    /// A `:path` (query included) longer than this is refused (414) before anything else.
    #[serde(default = "default_max_path_bytes")]
    pub max_bytes: usize,
}

impl Default for PathConfig {
    fn default() -> Self {
        Self {
            escaped_slashes: EscapedSlashes::default(),
            path_parameters: PathParameters::default(),
            case_sensitive: false,
            max_bytes: default_max_path_bytes(),
        }
    }
}

/// What `;params` in a path segment means. Java servers (Tomcat, Jetty, Spring's
/// `UrlPathHelper`) drop them from every segment before routing, so `/admin;x/users` is
/// `/admin/users` to them and another path to a rule that keeps them; they are never
/// ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathParameters {
    /// Refused with 400 (`true`/`false` were this setting's values before: `false` is this).
    #[default]
    Reject,
    /// Dropped from every segment before rules match, as Java servers drop them: the rule
    /// for `/admin/users` then matches `/admin;jsessionid=1/users;x`.
    Strip,
    /// Kept as data (`true` before), for apps that read `;` as part of a segment. Not for
    /// Java backends: there `/admin;x/users` would escape the `/admin/` rules.
    Keep,
}

impl<'de> Deserialize<'de> for PathParameters {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelling {
            Old(bool),
            Name(String),
        }
        match Spelling::deserialize(deserializer)? {
            Spelling::Old(false) => Ok(Self::Reject),
            Spelling::Old(true) => Ok(Self::Keep),
            Spelling::Name(name) => match name.as_str() {
                "reject" => Ok(Self::Reject),
                "strip" => Ok(Self::Strip),
                "keep" => Ok(Self::Keep),
                other => Err(serde::de::Error::custom(format!(
                    "unknown value {other:?}: expected reject, strip or keep"
                ))),
            },
        }
    }
}

/// What `%2F` in a path means. `%5C` (an escaped backslash) is refused whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Refused with 400: servers disagree on whether it separates segments.
    #[default]
    Reject,
    /// Decoded to `/` and matched as a separator (Envoy's `UNESCAPE_AND_FORWARD`, Istio's
    /// `DECODE_AND_MERGE_SLASHES`); the proxy should forward the decoded path.
    Decode,
    /// Kept as `%2F`, data inside one segment, for apps whose identifiers contain slashes.
    Keep,
}

fn default_max_path_bytes() -> usize {
    8 * 1024
}

#[cfg(test)]
mod tests;

/// Why a path was refused before any rule ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path longer than the limit")]
    TooLong,
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("invalid percent-encoding")]
    BadEscape,
    #[error("percent-encoded slash or backslash")]
    EscapedSlash,
    #[error("backslash in path")]
    Backslash,
    #[error("control character in path")]
    ControlCharacter,
    #[error("percent-encoded bytes are not UTF-8")]
    NotUtf8,
    #[error("dot-segment above the root")]
    AboveRoot,
    #[error("ambiguous dot-segment")]
    AmbiguousDotSegment,
    #[error("path parameter (';')")]
    PathParameter,
    #[error("fragment ('#') in the request target")]
    Fragment,
}

/// The canonical form of the path of `target` (a request's `:path`, query included). An
/// already canonical path — the common case behind a normalising proxy — is borrowed.
pub fn canonical_path<'a>(target: &'a str, config: &PathConfig) -> Result<Cow<'a, str>, PathError> {
    if target.len() > config.max_bytes {
        return Err(PathError::TooLong);
    }
    // RFC 9110 §4.1 / RFC 3986 §3.5: a fragment is never sent. One that arrives hides the
    // rest of the target from us and not necessarily from the app.
    if memchr::memchr(b'#', target.as_bytes()).is_some() {
        return Err(PathError::Fragment);
    }
    let (path, _query) = super::split_target(target);
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(path) {
        return Ok(Cow::Borrowed(path));
    }
    canonicalize(path, config).map(Cow::Owned)
}

/// Whether `path` (starting with `/`) is its own canonical form: only characters that stay
/// raw, no empty segment but a trailing one, no dot-segment.
fn is_canonical(path: &str) -> bool {
    // `;` is left to the slow path, which applies `paths.path_parameters`.
    if !path
        .bytes()
        .all(|b| b == b'/' || (stays_raw(b) && b != b';'))
    {
        return false;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || is_dot_segment(segment) || has_dot_parameter(segment) {
            return false;
        }
    }
    true
}

/// RFC 3986 §2.3 unreserved characters: an escape of one of these means the character.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §2.2 sub-delims.
pub(crate) fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Characters a path segment holds raw (§3.3 `pchar` without `%`): unreserved, sub-delims,
/// `:` and `@`. Everything else is percent-encoded in the canonical form.
fn stays_raw(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@')
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn is_dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// `.;x` and `..;x`: a dot-segment to readers that strip path parameters first.
fn has_dot_parameter(segment: &str) -> bool {
    segment
        .split_once(';')
        .is_some_and(|(head, _)| is_dot_segment(head))
}

/// The byte two hex digits spell.
pub(crate) fn hex_pair(digits: &[u8]) -> Option<u8> {
    let [hi, lo] = digits else { return None };
    let hi = (*hi as char).to_digit(16)?;
    let lo = (*lo as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

/// Builds the output one segment at a time, removing dot-segments as they come (the
/// output-buffer form of RFC 3986 §5.2.4).
#[derive(Default)]
struct Segments {
    out: String,
    /// Where each segment of `out` starts (at its `/`), for `..` to remove the last one.
    starts: Vec<usize>,
    /// The previous segment was empty (`//`).
    after_empty: bool,
    /// The path ends in `/` (or in a dot-segment, which leaves one, §5.2.4 step 2).
    trailing: bool,
}

impl Segments {
    fn push(&mut self, segment: &str, last: bool) -> Result<(), PathError> {
        match segment {
            // `//` merges into `/`; an empty last segment is the trailing slash.
            "" => self.trailing = last,
            "." => self.trailing = last,
            ".." => {
                if self.after_empty {
                    return Err(PathError::AmbiguousDotSegment);
                }
                let start = self.starts.pop().ok_or(PathError::AboveRoot)?;
                self.out.truncate(start);
                self.trailing = last;
            }
            s if has_dot_parameter(s) => return Err(PathError::AmbiguousDotSegment),
            s => {
                self.starts.push(self.out.len());
                self.out.push('/');
                self.out.push_str(s);
            }
        }
        // `/a//./../b`: a `.` after `//` leaves the `..` just as ambiguous.
        self.after_empty = segment.is_empty() || (segment == "." && self.after_empty);
        Ok(())
    }

    fn finish(mut self) -> String {
        if self.out.is_empty() || self.trailing {
            self.out.push('/');
        }
        self.out
    }
}

fn canonicalize(path: &str, config: &PathConfig) -> Result<String, PathError> {
    let escaped_slashes = config.escaped_slashes;
    let bytes = path.as_bytes();
    let mut segments = Segments {
        out: String::with_capacity(path.len()),
        ..Segments::default()
    };
    let mut segment = String::new();
    // The path with every escape decoded, to check that escaped bytes form UTF-8.
    let mut decoded = Vec::new();
    let mut escaped_non_ascii = false;
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                segments.push(&segment, false)?;
                segment.clear();
            }
            b'%' => {
                let value = bytes
                    .get(i + 1..i + 3)
                    .and_then(hex_pair)
                    .ok_or(PathError::BadEscape)?;
                i += 2;
                decoded.push(value);
                match value {
                    v if is_unreserved(v) => segment.push(v as char),
                    v if is_control(v) => return Err(PathError::ControlCharacter),
                    // A backslash is a separator to some servers and data to others,
                    // whichever way it is spelled.
                    b'\\' => return Err(PathError::EscapedSlash),
                    b'/' => match escaped_slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Decode => {
                            segments.push(&segment, false)?;
                            segment.clear();
                        }
                        EscapedSlashes::Keep => push_escaped(&mut segment, b'/'),
                    },
                    v => {
                        escaped_non_ascii |= !v.is_ascii();
                        push_escaped(&mut segment, v);
                    }
                }
                i += 1;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            // Java servers (Tomcat, Jetty) drop `;params` from each segment before routing:
            // `/admin;x/secret` is `/admin/secret` to them and another path to a rule.
            b';' => match config.path_parameters {
                PathParameters::Reject => return Err(PathError::PathParameter),
                PathParameters::Keep => segment.push(';'),
                PathParameters::Strip => {
                    // `..;x` and `.;x` stay refused: what is left is a dot-segment to the
                    // app and a name to a proxy that routed on the raw path.
                    if is_dot_segment(&segment) {
                        return Err(PathError::AmbiguousDotSegment);
                    }
                    // The rest of the segment is the parameter, escapes included (a `%2F`
                    // there is the parameter's, not a separator). Its bytes are checked as
                    // everywhere else: a control character is refused, not dropped.
                    let end = bytes[i..]
                        .iter()
                        .position(|&b| b == b'/')
                        .map_or(bytes.len(), |n| i + n);
                    let parameter = &bytes[i..end];
                    if parameter.contains(&b'\\') {
                        return Err(PathError::Backslash);
                    }
                    if parameter.iter().any(|&b| is_control(b)) {
                        return Err(PathError::ControlCharacter);
                    }
                    i = end;
                    continue;
                }
            },
            b if is_control(b) => return Err(PathError::ControlCharacter),
            b if stays_raw(b) => segment.push(b as char),
            // Other ASCII (space, quotes, brackets) and the bytes of raw UTF-8 characters.
            b => push_escaped(&mut segment, b),
        }
        decoded.push(b);
        i += 1;
    }
    segments.push(&segment, true)?;
    if escaped_non_ascii && std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::NotUtf8);
    }
    Ok(segments.finish())
}
