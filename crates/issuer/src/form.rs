//! `application/x-www-form-urlencoded` bodies (RFC 6749 Appendix B): decoded strictly into
//! parameters, each at most once (RFC 6749 §3.2), empty ones treated as omitted.

/// Parameters a form may carry at most: more is not a request this issuer takes.
const MAX_PARAMS: usize = 32;

/// Why a form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("malformed form encoding")]
    Malformed,
    #[error("parameter {0:?} given more than once")]
    Repeated(String),
    #[error("too many parameters")]
    TooMany,
}

/// A decoded form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    params: Vec<(String, String)>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Result<Self, FormError> {
        let body = std::str::from_utf8(body).map_err(|_| FormError::Malformed)?;
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in body.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).ok_or(FormError::Malformed)?;
            let value = decode(value).ok_or(FormError::Malformed)?;
            // RFC 6749 §3.2: a parameter without a value is as if omitted.
            if value.is_empty() {
                continue;
            }
            if params.iter().any(|(n, _)| *n == name) {
                return Err(FormError::Repeated(name));
            }
            if params.len() == MAX_PARAMS {
                return Err(FormError::TooMany);
            }
            params.push((name, value));
        }
        Ok(Self { params })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One form-urlencoded component: `+` is a space, `%XX` a byte; the result must be UTF-8.
/// `None` for a stray `%` or invalid UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent_and_refuses_malformed_escapes() {
        assert_eq!(decode("a+b%20c%3A%2B").as_deref(), Some("a b c:+"));
        assert_eq!(decode("%E2%82%AC").as_deref(), Some("€"));
        for bad in ["%", "%4", "%zz", "%+1", "%FF"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn parameters_once_each_and_empty_ones_omitted() {
        let form = Form::parse(b"token=abc&token_type_hint=&client_id=x%3Ay&flag").unwrap();
        assert_eq!(form.get("token"), Some("abc"));
        assert_eq!(form.get("token_type_hint"), None);
        assert_eq!(form.get("client_id"), Some("x:y"));
        assert_eq!(form.get("flag"), None);
        assert_eq!(
            Form::parse(b"token=a&token=b"),
            Err(FormError::Repeated("token".into()))
        );
        // The same name however it is spelled on the wire.
        assert_eq!(
            Form::parse(b"token=a&%74oken=b"),
            Err(FormError::Repeated("token".into()))
        );
        assert_eq!(Form::parse(b"token=%"), Err(FormError::Malformed));
        assert_eq!(Form::parse(b"token=\xff"), Err(FormError::Malformed));
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=v")).collect();
        assert_eq!(
            Form::parse(many.join("&").as_bytes()),
            Err(FormError::TooMany)
        );
    }
}
