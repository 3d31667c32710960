//! Field validation: every refusal names the field and the rule it broke.

use serde::Serialize;

/// One refused field: which field, which rule, and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `email` or `payload.country`.
    pub field: String,
    /// Machine-readable rule name, e.g. `required`, `max_length`, `format`.
    pub rule: &'static str,
    /// Plain-words explanation for the operator.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field` under `rule`.
    pub fn new(field: impl Into<String>, rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule,
            message: message.into(),
        }
    }

    /// The same refusal with `prefix.` put before the field path.
    pub fn nested(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// Result of validating one value.
pub type Checked = Result<(), FieldError>;

/// Trims and checks a required free-text value: present, not blank, within `max` characters,
/// no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Checked {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "required", "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            "max_length",
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "no_control_chars",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A person's name: free text that holds at least one letter (any script) and no digits.
pub fn name(field: &str, value: &str) -> Checked {
    text(field, value, 100)?;
    if !value.chars().any(char::is_alphabetic) {
        return Err(FieldError::new(
            field,
            "letters",
            "must contain at least one letter",
        ));
    }
    if value.chars().any(|c| c.is_numeric()) {
        return Err(FieldError::new(field, "letters", "must not contain digits"));
    }
    Ok(())
}

/// An e-mail address: addr-spec only (no display name), a domain with a dot, ≤ 254 characters.
pub fn email(field: &str, value: &str) -> Checked {
    if value.len() > 254 {
        return Err(FieldError::new(
            field,
            "max_length",
            "must be at most 254 bytes",
        ));
    }
    let options = email_address::Options::default()
        .with_required_tld()
        .without_display_text()
        .without_domain_literal();
    if email_address::EmailAddress::parse_with_options(value, options).is_err() {
        return Err(FieldError::new(
            field,
            "email_format",
            "must be an e-mail address such as name@example.com",
        ));
    }
    Ok(())
}

/// A phone number: optional leading `+`, then digits with spaces, dashes, dots or parentheses;
/// 5 to 15 digits (E.164 allows at most 15).
pub fn phone(field: &str, value: &str) -> Checked {
    let body = value.strip_prefix('+').unwrap_or(value);
    let allowed = |c: char| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')');
    let digits = body.chars().filter(char::is_ascii_digit).count();
    if body.is_empty() || !body.chars().all(allowed) || !(5..=15).contains(&digits) {
        return Err(FieldError::new(
            field,
            "phone_format",
            "must be a phone number: optional +, then 5 to 15 digits (spaces, -, ., ( ) allowed)",
        ));
    }
    Ok(())
}

/// A code such as a customer group or attribute name: 1..=max of ASCII letters, digits, `_`, `-`.
pub fn code(field: &str, value: &str, max: usize) -> Checked {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(FieldError::new(
            field,
            "code_format",
            format!("must be 1 to {max} characters of A-Z, a-z, 0-9, _ or -"),
        ));
    }
    Ok(())
}

/// A language tag such as `et`, `et-EE` or `en-US`.
pub fn language(field: &str, value: &str) -> Checked {
    let mut parts = value.split('-');
    let lang_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_lowercase()));
    let rest_ok =
        parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !(lang_ok && rest_ok) || value.len() > 35 {
        return Err(FieldError::new(
            field,
            "language_tag",
            "must be a language tag such as et, et-EE or en-US",
        ));
    }
    Ok(())
}

/// An ISO 3166-1 alpha-3 country code in upper case, such as `EST`, as HQ uses.
pub fn country(field: &str, value: &str) -> Checked {
    let upper = value.len() == 3 && value.chars().all(|c| c.is_ascii_uppercase());
    if !upper || isocountry::CountryCode::for_alpha3(value).is_err() {
        return Err(FieldError::new(
            field,
            "iso3166_alpha3",
            "must be an ISO 3166-1 alpha-3 country code in upper case, such as EST",
        ));
    }
    Ok(())
}

/// A postal code: 2..=10 characters of letters, digits, spaces and dashes.
pub fn postal_code(field: &str, value: &str) -> Checked {
    let ok = (2..=10).contains(&value.chars().count())
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || c == '-')
        && value.chars().any(|c| c.is_alphanumeric());
    if !ok {
        return Err(FieldError::new(
            field,
            "postal_code_format",
            "must be 2 to 10 letters, digits, spaces or dashes",
        ));
    }
    Ok(())
}

/// Runs `check` on an optional value.
pub fn optional<T: ?Sized>(value: Option<&T>, check: impl FnOnce(&T) -> Checked) -> Checked {
    value.map_or(Ok(()), check)
}

/// Names the field and rule behind a serde error. `path` is where the error happened (`.` for
/// the top); `message` is serde's text, which names a missing or unknown field itself.
pub fn from_serde(path: &str, message: &str) -> FieldError {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    let join = |name: &str| {
        if path == "." || path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let at = if path == "." || path.is_empty() {
        "body".to_string()
    } else {
        path.to_string()
    };
    // serde appends " at line L column C" to messages from text input; drop it.
    let clean = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    if let Some(name) = quoted("missing field `") {
        FieldError::new(join(&name), "required", clean)
    } else if let Some(name) = quoted("unknown field `") {
        // serde_path_to_error already counts the unknown key in the path.
        let field = if name.is_empty() {
            // An empty key (`{"": 1}`): name where it is, never an empty field.
            match path.trim_end_matches('.') {
                "" => "body".to_string(),
                p => p.to_string(),
            }
        } else if path.ends_with(name.as_str()) {
            path.to_string()
        } else {
            join(&name)
        };
        FieldError::new(field, "unknown_field", clean)
    } else if let Some(name) = quoted("duplicate field `") {
        FieldError::new(join(&name), "duplicate", clean)
    } else if message.starts_with("unknown variant") {
        FieldError::new(at, "enum", clean)
    } else if message.starts_with("invalid type") {
        FieldError::new(at, "type", clean)
    } else {
        FieldError::new(at, "value", clean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_unknown_key_is_named_by_where_it_is() {
        let msg = "unknown field ``, expected one of `first_name`, `last_name`";
        for path in ["", ".", "."] {
            let e = from_serde(path, msg);
            assert_eq!((e.field.as_str(), e.rule), ("body", "unknown_field"));
        }
        let e = from_serde("payload.", msg);
        assert_eq!((e.field.as_str(), e.rule), ("payload", "unknown_field"));
    }

    #[test]
    fn unicode_names_are_valid() {
        for n in ["Õie Täht", "Šarūnas", "Jürgen-Ülo", "O'Brien", "Zoë", "李"] {
            assert_eq!(name("first_name", n), Ok(()), "{n}");
        }
    }

    #[test]
    fn names_without_letters_or_with_digits_are_refused() {
        assert_eq!(name("first_name", "  ").unwrap_err().rule, "required");
        assert_eq!(name("first_name", "---").unwrap_err().rule, "letters");
        assert_eq!(name("first_name", "R2D2").unwrap_err().rule, "letters");
        assert_eq!(
            name("first_name", &"a".repeat(101)).unwrap_err().rule,
            "max_length"
        );
        assert_eq!(
            name("first_name", "a\u{0007}b").unwrap_err().rule,
            "no_control_chars"
        );
    }

    #[test]
    fn emails() {
        assert!(email("email", "oie.taht@example.ee").is_ok());
        for bad in ["", "plain", "a@b", "Name <a@b.ee>", "a b@c.ee"] {
            assert_eq!(
                email("email", bad).unwrap_err().rule,
                "email_format",
                "{bad}"
            );
        }
    }

    #[test]
    fn phones() {
        for good in ["+372 5123 4567", "5123456", "(056) 123-45"] {
            assert!(phone("phone", good).is_ok(), "{good}");
        }
        for bad in ["", "+", "12", "abc12345", "+372 5123 4567 8901 23"] {
            assert_eq!(
                phone("phone", bad).unwrap_err().rule,
                "phone_format",
                "{bad}"
            );
        }
    }

    #[test]
    fn countries_are_upper_case_alpha3() {
        assert!(country("country", "EST").is_ok());
        assert!(country("country", "LTU").is_ok());
        for bad in ["est", "EE", "XXX", "ESTO"] {
            assert_eq!(
                country("country", bad).unwrap_err().rule,
                "iso3166_alpha3",
                "{bad}"
            );
        }
    }

    #[test]
    fn languages_and_codes() {
        assert!(language("language", "et-EE").is_ok());
        assert!(language("language", "et").is_ok());
        assert!(language("language", "EE").is_err());
        assert!(code("customer_group", "RETAIL_1", 20).is_ok());
        assert!(code("customer_group", "", 20).is_err());
        assert!(code("customer_group", "a b", 20).is_err());
        assert!(postal_code("postal_code", "10115").is_ok());
        assert!(postal_code("postal_code", "!").is_err());
    }
}
