//! Search terms: how a customer is found by name prefix, e-mail, phone or reference, case- and
//! accent-insensitively ("tamm" finds "Tamm", "oie" finds "Õie").

use super::view::CustomerView;

/// Longest term kept in the index; longer words are cut (prefix search still finds them).
pub const MAX_TERM_LEN: usize = 64;

/// Folds text for matching: transliterated to ASCII, lower case.
pub fn fold(text: &str) -> String {
    deunicode::deunicode(text).to_lowercase()
}

/// Only the digits of a phone number.
pub fn phone_digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_TERM_LEN {
        let mut end = MAX_TERM_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Terms of one phone number: all its digits, and for an international number (`+372 5123…`)
/// also the national part, so a till can type the number either way. Country codes are one to
/// three digits; a term for each length is cheaper than knowing the numbering plan.
fn phone_terms(phone: &str) -> Vec<String> {
    let digits = phone_digits(phone);
    let mut out = Vec::with_capacity(4);
    if phone.trim_start().starts_with('+') {
        for cc in 1..=3 {
            if digits.len() > cc + 4 {
                out.push(digits[cc..].to_string());
            }
        }
    }
    if !digits.is_empty() {
        out.push(digits);
    }
    out
}

/// Words of a name, folded.
fn name_words(text: &str) -> impl Iterator<Item = String> + '_ {
    fold(text)
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect::<Vec<_>>()
        .into_iter()
}

/// Every index term of a customer, each a single folded string (no namespace: a query term
/// matches any of them by prefix). Sorted and without duplicates.
pub fn terms(view: &CustomerView) -> Vec<String> {
    let f = &view.fields;
    let mut out: Vec<String> = name_words(&f.first_name)
        .chain(name_words(&f.last_name))
        .collect();
    let emails = f.email.iter().chain(
        view.contacts
            .iter()
            .filter(|c| c.record.kind == super::ContactKind::Email)
            .map(|c| &c.record.value),
    );
    out.extend(emails.map(|e| fold(e)));
    let phones = f.phone.iter().chain(
        view.contacts
            .iter()
            .filter(|c| c.record.kind == super::ContactKind::Phone)
            .map(|c| &c.record.value),
    );
    out.extend(phones.flat_map(|p| phone_terms(p)));
    out.push(fold(&view.customer_ref));
    if let Some(acc) = &view.account_number {
        out.push(fold(acc));
    }
    let mut out: Vec<String> = out.into_iter().map(cut).collect();
    out.sort();
    out.dedup();
    out
}

/// The terms of a query: each must match (by prefix) some term of a customer. A query that
/// looks like a phone number becomes its digits; an e-mail or reference stays whole.
pub fn query_terms(q: &str) -> Vec<String> {
    let q = q.trim();
    let digits = phone_digits(q);
    let looks_like_phone = digits.len() >= 3
        && q.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'));
    if looks_like_phone {
        return vec![digits];
    }
    let mut out: Vec<String> = q
        .split_whitespace()
        .flat_map(|word| {
            if word.contains('@') || word.contains('-') && word.chars().any(|c| c.is_ascii_digit())
            {
                vec![fold(word)]
            } else {
                name_words(word).collect()
            }
        })
        .map(cut)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::NewCustomer;

    fn view() -> CustomerView {
        CustomerView {
            customer_ref: "S001-T42".into(),
            account_number: None,
            fields: NewCustomer {
                first_name: "Õie".into(),
                last_name: "Tamm-Täht".into(),
                email: Some("Oie@Example.ee".into()),
                phone: Some("+372 5123 4567".into()),
                customer_group: None,
                language: None,
            },
            addresses: vec![],
            contacts: vec![],
            affiliations: vec![],
            attributes: vec![],
            last_seq: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn terms_are_folded() {
        let t = terms(&view());
        for want in [
            "oie",
            "tamm",
            "taht",
            "oie@example.ee",
            "37251234567",
            "s001-t42",
        ] {
            assert!(t.contains(&want.to_string()), "{want} in {t:?}");
        }
    }

    #[test]
    fn queries_fold_the_same_way() {
        assert_eq!(query_terms("Õie TAMM"), vec!["oie", "tamm"]);
        assert_eq!(query_terms("+372 5123"), vec!["3725123"]);
        assert_eq!(query_terms("oie@example.ee"), vec!["oie@example.ee"]);
        assert_eq!(query_terms("S001-T42"), vec!["s001-t42"]);
        assert!(query_terms("  ").is_empty());
    }
}
