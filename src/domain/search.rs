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

/// Two-digit country calling codes (ITU-T E.164 assignments). Calling codes are prefix-free:
/// `1` and `7` are the only one-digit codes, and every other code not listed here has three
/// digits.
const TWO_DIGIT_CALLING_CODES: [&str; 44] = [
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

/// The length of the country calling code that `digits` (an international number's digits,
/// after the `+`) begin with.
fn calling_code_len(digits: &str) -> usize {
    match digits.as_bytes().first() {
        Some(b'1' | b'7') => 1,
        _ if digits
            .get(..2)
            .is_some_and(|two| TWO_DIGIT_CALLING_CODES.contains(&two)) =>
        {
            2
        }
        _ => 3,
    }
}

/// Terms of one phone number: all its digits, and for an international number (`+372 5123…`)
/// also the national part after the country code, so a till can type the number either way.
fn phone_terms(phone: &str) -> Vec<String> {
    let digits = phone_digits(phone);
    let mut out = Vec::with_capacity(2);
    if phone.trim_start().starts_with('+') {
        let cc = calling_code_len(&digits);
        if digits.len() > cc + 4 {
            out.push(digits[cc..].to_string());
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
    let mut out: Vec<String> = out.into_iter().map(cut).collect();
    out.extend(view.account_number.as_deref().map(account_term));
    out.sort();
    out.dedup();
    out
}

/// The term an HQ account number gives its customer: the customer's terms with an account
/// number are its terms without one, and this.
pub fn account_term(account: &str) -> String {
    cut(fold(account))
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
    fn an_international_number_is_also_found_by_its_national_part() {
        let national = |phone: &str| {
            let t = phone_terms(phone);
            assert_eq!(
                t.last(),
                Some(&phone_digits(phone)),
                "all digits first: {t:?}"
            );
            (t.len() == 2).then(|| t[0].clone())
        };
        assert_eq!(national("+372 5123 4567").as_deref(), Some("51234567"));
        assert_eq!(national("+1 (415) 555-0100").as_deref(), Some("4155550100"));
        assert_eq!(national("+7 912 345 67 89").as_deref(), Some("9123456789"));
        assert_eq!(national("+44 20 7946 0958").as_deref(), Some("2079460958"));
        assert_eq!(national("+358 40 123 4567").as_deref(), Some("401234567"));
        assert_eq!(national("+49 30 1234567").as_deref(), Some("301234567"));
        // Without a +, the digits are all there is to know.
        assert_eq!(national("5123 4567"), None);
        // Too short to leave a national part worth a term.
        assert_eq!(national("+372 123"), None);
    }

    #[test]
    fn an_account_number_adds_exactly_its_own_term() {
        let without = terms(&view());
        for account in ["C000042", "Õ-77", "S001-T42", "TAMM"] {
            let mut with = view();
            with.account_number = Some(account.into());
            let mut want = without.clone();
            let term = account_term(account);
            if let Err(at) = want.binary_search(&term) {
                want.insert(at, term);
            }
            assert_eq!(terms(&with), want, "{account}");
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
