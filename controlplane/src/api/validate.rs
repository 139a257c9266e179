//! Input checks shared by the write handlers: every refusal is a 400 naming the field. Strings are otherwise
//! stored verbatim (quotes, SQL-looking text and any Unicode are data, and every query binds them).

use serde::{Deserialize, Deserializer};

use crate::api::error::ApiError;

/// Longest name of anything.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest free text (descriptions).
pub const MAX_TEXT_CHARS: usize = 2000;
/// Most tags on one device.
pub const MAX_TAGS: usize = 50;
/// Longest tag.
pub const MAX_TAG_CHARS: usize = 64;

/// A display name: 1 to 200 characters once trimmed, no NUL or other control character.
pub fn name(field: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > MAX_NAME_CHARS || v.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{field}: use 1 to {MAX_NAME_CHARS} characters, no control characters"
        )));
    }
    Ok(v.to_owned())
}

/// Free text: at most 2000 characters, no NUL.
pub fn text(field: &str, v: &str) -> Result<String, ApiError> {
    if v.chars().count() > MAX_TEXT_CHARS || v.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "{field}: use at most {MAX_TEXT_CHARS} characters, no NUL"
        )));
    }
    Ok(v.to_owned())
}

/// A slug: 1 to 63 of `a-z`, `0-9` and `-`, not starting with `-` (the schema's rule).
pub fn slug(field: &str, v: &str) -> Result<String, ApiError> {
    let ok = (1..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ApiError::BadRequest(format!(
            "{field}: use 1 to 63 of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

/// Tags: at most 50, each 1 to 64 characters without control characters; duplicates removed, order kept.
pub fn tags(v: &[String]) -> Result<Vec<String>, ApiError> {
    if v.len() > MAX_TAGS {
        return Err(ApiError::BadRequest(format!("tags: at most {MAX_TAGS}")));
    }
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for t in v {
        let t = t.trim();
        if t.is_empty() || t.chars().count() > MAX_TAG_CHARS || t.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(format!(
                "tags: each tag has 1 to {MAX_TAG_CHARS} characters, no control characters"
            )));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

/// Deserializes a field that distinguishes "absent" (`None`) from `null` (`Some(None)`): use with
/// `#[serde(default, deserialize_with = "validate::double_option")]`.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tags_and_slugs() {
        assert_eq!(name("n", "  ' OR 1=1 -- ").unwrap(), "' OR 1=1 --");
        assert!(name("n", "a\0b").is_err());
        assert!(name("n", &"é".repeat(201)).is_err());
        assert!(slug("s", "isp-1").is_ok());
        assert!(slug("s", "ISP").is_err());
        assert_eq!(
            tags(&["a".into(), "a".into(), "b".into()]).unwrap(),
            vec!["a", "b"]
        );
        assert!(tags(&["".into()]).is_err());
    }
}
