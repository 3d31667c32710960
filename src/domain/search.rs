//! Search terms: how a customer is found by name prefix, e-mail, phone or reference, case- and
//! accent-insensitively ("tamm" finds "Tamm", "oie" finds "Õie").
//!
//! A customer's name words are indexed in pairs ("mari" with "tamm", and "tamm" with "mari"),
//! so that "Mari Tamm…" is one narrow range of the index instead of every Mari checked against
//! every Tamm…; every other term (e-mail, phone digits, reference, account number) is a plain
//! term. A query term matches a plain term by prefix, and a pair by the pair's first word.

use super::view::CustomerView;
use super::{Contact, ContactKind, NewCustomer};

/// Longest word or term kept in the index; longer ones are cut (prefix search still finds
/// them). A name pair holds two such words.
pub const MAX_TERM_LEN: usize = 64;

/// First byte of a name pair term: `\u{2}` first word `\u{1}` second word. Below every
/// folded character, so pairs sort apart from plain terms; the separator sorts a word's pairs
/// before the pairs of longer words it begins.
const PAIR: char = '\u{2}';
/// Between the two words of a name pair term.
const PAIR_SEP: char = '\u{1}';
/// The term of every customer with more distinct name words than are paired (they are each
/// indexed alone, as a pair with an empty second word): a query that looks for a pair also
/// checks these customers, so none is missed.
pub const MANY_NAME_WORDS: &str = "\u{3}";
/// Most distinct name words indexed in pairs (all ordered pairs: 30 terms at six words).
pub const MAX_PAIRED_WORDS: usize = 6;

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

/// Every index term of a customer: its name words in pairs (`name_terms`), and each other
/// term a single folded string. Sorted and without duplicates.
pub fn terms(view: &CustomerView) -> Vec<String> {
    let contacts = view.contacts.iter().map(|c| &c.record);
    let mut out = terms_of(&view.fields, contacts, view.account_number.as_deref());
    add_reference(&mut out, &view.customer_ref);
    out
}

/// The terms of a customer created from `fields`, all but its reference's (which the store
/// gives it when it takes the create): [`add_reference`] completes them to what [`terms`]
/// gives the new customer's view. Sorted and without duplicates.
pub fn new_customer_terms(fields: &NewCustomer) -> Vec<String> {
    terms_of(fields, std::iter::empty(), None)
}

/// Adds the term of the reference `customer_ref` to sorted, distinct `terms`, in its place.
pub fn add_reference(terms: &mut Vec<String>, customer_ref: &str) {
    let term = cut(fold(customer_ref));
    if let Err(at) = terms.binary_search(&term) {
        terms.insert(at, term);
    }
}

/// The terms of a customer's fields, contacts and account number (no reference). Sorted and
/// without duplicates.
fn terms_of<'a>(
    f: &NewCustomer,
    contacts: impl Iterator<Item = &'a Contact> + Clone,
    account_number: Option<&str>,
) -> Vec<String> {
    let words: Vec<String> = name_words(&f.first_name)
        .chain(name_words(&f.last_name))
        .map(cut)
        .collect();
    let mut out = Vec::new();
    let emails = f.email.iter().chain(
        contacts
            .clone()
            .filter(|c| c.kind == ContactKind::Email)
            .map(|c| &c.value),
    );
    out.extend(emails.map(|e| fold(e)));
    let phones = f.phone.iter().chain(
        contacts
            .filter(|c| c.kind == ContactKind::Phone)
            .map(|c| &c.value),
    );
    out.extend(phones.flat_map(|p| phone_terms(p)));
    let mut out: Vec<String> = out.into_iter().map(cut).collect();
    out.extend(account_number.map(account_term));
    out.extend(name_terms(words));
    out.sort();
    out.dedup();
    out
}

/// The index terms of a customer's name words: every ordered pair of two distinct words; a
/// single word as a pair with an empty second word; more than [`MAX_PAIRED_WORDS`] words each
/// alone that way, and [`MANY_NAME_WORDS`].
fn name_terms(mut words: Vec<String>) -> Vec<String> {
    words.sort();
    words.dedup();
    if words.len() == 1 || words.len() > MAX_PAIRED_WORDS {
        let alone = words.iter().map(|w| pair_term(w, ""));
        let marker = (words.len() > 1).then(|| MANY_NAME_WORDS.to_string());
        return alone.chain(marker).collect();
    }
    let mut out = Vec::with_capacity(words.len() * words.len().saturating_sub(1));
    for a in &words {
        for b in words.iter().filter(|b| *b != a) {
            out.push(pair_term(a, b));
        }
    }
    out
}

/// The name pair term of `first` and `second`.
pub fn pair_term(first: &str, second: &str) -> String {
    let mut out = String::with_capacity(2 + first.len() + second.len());
    out.push(PAIR);
    out.push_str(first);
    out.push(PAIR_SEP);
    out.push_str(second);
    out
}

/// Where the name pairs whose first word starts with `prefix` begin: every pair term starting
/// with this has such a first word.
pub fn pair_first_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(1 + prefix.len());
    out.push(PAIR);
    out.push_str(prefix);
    out
}

/// The first word of a name pair term; `None` for a plain term.
pub fn pair_first_word(term: &str) -> Option<&str> {
    let rest = term.strip_prefix(PAIR)?;
    Some(rest.split_once(PAIR_SEP).map_or(rest, |(first, _)| first))
}

/// The second word of a name pair term; `None` for a plain term.
pub fn pair_second_word(term: &str) -> Option<&str> {
    term.strip_prefix(PAIR)?
        .split_once(PAIR_SEP)
        .map(|(_, second)| second)
}

/// The first key after every pair whose first word is exactly `first` (and before the pairs of
/// longer words that begin with it).
pub fn after_pairs_of(first: &str) -> String {
    let mut out = pair_first_prefix(first);
    out.push(PAIR);
    out
}

/// Whether a customer's index term satisfies a query term: a plain term that starts with it,
/// or a name pair whose first word does (every name word is the first word of a pair).
pub fn term_matches(term: &[u8], query: &[u8]) -> bool {
    match term.split_first() {
        Some((&b, rest)) if b == PAIR as u8 => {
            let first = rest.split(|c| *c == PAIR_SEP as u8).next().unwrap_or(rest);
            first.starts_with(query)
        }
        _ => term.starts_with(query),
    }
}

/// A term's first eight bytes as a big-endian number (zeros after a shorter term). Heads order
/// as their terms do, and differ only where the terms do: compared first, they order most
/// pairs of terms without reading either term's bytes.
pub fn term_head(term: &str) -> u64 {
    let mut head = [0u8; 8];
    let n = term.len().min(8);
    head[..n].copy_from_slice(&term.as_bytes()[..n]);
    u64::from_be_bytes(head)
}

/// The term an HQ account number gives its customer: the customer's terms with an account
/// number are its terms without one, and this.
pub fn account_term(account: &str) -> String {
    cut(fold(account))
}

/// The terms of a query: each must match (by prefix) some term of a customer. A query that
/// looks like a phone number becomes its digits; an e-mail or reference stays whole. A term
/// that begins another is left out: whatever matches the longer matches it. So no two terms
/// can be matched by one word, which the pair search relies on.
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
        .filter(|t| !t.is_empty())
        .collect();
    out.sort();
    out.dedup();
    // Sorted, a term that begins another comes right before one it begins.
    let begins_next = |i: usize| out.get(i + 1).is_some_and(|next| next.starts_with(&out[i]));
    let keep: Vec<bool> = (0..out.len()).map(|i| !begins_next(i)).collect();
    let mut keep = keep.into_iter();
    out.retain(|_| keep.next().unwrap_or(true));
    out
}

/// The first `limit` results of a search: customers most recently changed first, then by
/// reference, each once at the latest time it was offered at.
///
/// Bounded: a search may examine thousands of candidates to answer twenty, so it keeps only
/// the best `limit` as it goes. A candidate that cannot beat the worst kept one costs a
/// comparison of times, and it is never copied.
#[derive(Debug, Clone)]
pub struct Ranking {
    limit: usize,
    /// Best first; at most `limit`, distinct customers.
    kept: Vec<(i64, String)>,
    /// Whether a candidate was turned away or pushed out for the limit.
    cut: bool,
}

/// Whether `a` ranks before `b`: changed later, or at the same time with the smaller reference.
fn ranks_before(a: (i64, &str), b: (i64, &str)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl Ranking {
    /// An empty ranking that keeps the best `limit` customers.
    pub fn new(limit: usize) -> Ranking {
        Ranking {
            limit,
            kept: Vec::with_capacity(limit.min(1_024)),
            cut: false,
        }
    }

    /// Whether a customer changed at `time` could still be kept: a cheap test before the
    /// caller checks anything else about it.
    pub fn admits(&self, time: i64, customer_ref: &str) -> bool {
        self.limit > 0
            && (self.kept.len() < self.limit
                || self
                    .kept
                    .last()
                    .is_some_and(|(t, r)| ranks_before((time, customer_ref), (*t, r))))
    }

    /// Offers customer `customer_ref`, changed at `time`.
    pub fn offer(&mut self, time: i64, customer_ref: &str) {
        if !self.admits(time, customer_ref) {
            // Perhaps a kept customer's older entry, not a customer left out: then the
            // ranking only says so wrongly, and a caller that acts on it reads again.
            self.cut = true;
            return;
        }
        if let Some(at) = self.kept.iter().position(|(_, r)| r == customer_ref) {
            if self.kept[at].0 >= time {
                return;
            }
            // Taken out, and put back below at its later time.
            self.kept.remove(at);
        }
        let at = self
            .kept
            .partition_point(|(t, r)| ranks_before((*t, r), (time, customer_ref)));
        self.kept.insert(at, (time, customer_ref.to_string()));
        if self.kept.len() > self.limit {
            self.kept.pop();
            self.cut = true;
        }
    }

    /// Whether some customer offered may have been left out for the limit.
    pub fn cut(&self) -> bool {
        self.cut
    }

    /// The customers kept, best first, with their times.
    pub fn into_ranked(self) -> Vec<(i64, String)> {
        self.kept
    }
}

/// How a search of two name terms reads the pairs: each of `first_words` (the distinct first
/// words of pairs that begin one term) paired with `second`, the other term. One range each.
#[derive(Debug, PartialEq, Eq)]
pub struct PairPlan<'q> {
    /// The distinct first words of name pairs that begin the driving term, in index order.
    pub first_words: Vec<String>,
    /// The other term: the prefix of the second word of every pair read.
    pub second: &'q str,
}

/// The pair plan of terms `a` and `b` that reads fewer ranges: the distinct first words of
/// pairs beginning `a` and those beginning `b` are listed in step, one index seek each
/// (`next_term(seek)`: the index's first term at or after `seek`), until one term has no
/// more; `a` wins a tie. `None` when both begin more than `max` words.
///
/// In step because either term may begin thousands of words ("ma" before "Mari Tamm") while
/// the other begins one: listing one term to its end first costs up to `max` seeks for nothing.
pub fn pair_plan<'q, E>(
    a: &'q str,
    b: &'q str,
    max: usize,
    mut next_term: impl FnMut(&str) -> Result<Option<String>, E>,
) -> Result<Option<PairPlan<'q>>, E> {
    let mut walks = [FirstWords::new(a, b), FirstWords::new(b, a)];
    loop {
        for walk in &mut walks {
            if walk.words.len() > max {
                continue;
            }
            if !walk.step(&mut next_term)? {
                return Ok(Some(PairPlan {
                    first_words: std::mem::take(&mut walk.words),
                    second: walk.second,
                }));
            }
        }
        if walks.iter().all(|w| w.words.len() > max) {
            return Ok(None);
        }
    }
}

/// The listing of one term's pair first words, for [`pair_plan`].
struct FirstWords<'q> {
    /// Every pair whose first word begins the term starts with this.
    prefix: String,
    /// Where the next word's pairs begin.
    seek: String,
    words: Vec<String>,
    second: &'q str,
}

impl<'q> FirstWords<'q> {
    fn new(term: &str, second: &'q str) -> Self {
        let prefix = pair_first_prefix(term);
        FirstWords {
            seek: prefix.clone(),
            prefix,
            words: Vec::new(),
            second,
        }
    }

    /// Finds the next word; `false` when there is none.
    fn step<E>(
        &mut self,
        next_term: &mut impl FnMut(&str) -> Result<Option<String>, E>,
    ) -> Result<bool, E> {
        let Some(term) = next_term(&self.seek)? else {
            return Ok(false);
        };
        let word = term
            .starts_with(&self.prefix)
            .then(|| pair_first_word(&term))
            .flatten();
        let Some(word) = word else {
            return Ok(false);
        };
        self.seek = after_pairs_of(word);
        self.words.push(word.to_string());
        Ok(true)
    }
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
    fn a_new_customers_terms_and_its_reference_are_its_views_terms() {
        let long = "Ülle".repeat(20);
        // First and last name, e-mail, phone, reference.
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: [Case; 5] = [
            (
                "Õie",
                "Tamm-Täht",
                Some("Oie@Example.ee"),
                Some("+372 5123 4567"),
                "S001-T42",
            ),
            ("Mari", "", None, None, "S001-T7"),
            ("A B C D E F", "G", None, Some("5123"), "S001-T100000"),
            (&long, "Tamm", Some(&long), None, &long),
            // The reference's term is also another term: still one term.
            ("Jaan", "Kask", Some("s001-t9"), None, "S001-T9"),
        ];
        for (first, last, email, phone, reference) in cases {
            let mut v = view();
            v.customer_ref = reference.into();
            v.fields.first_name = first.into();
            v.fields.last_name = last.into();
            v.fields.email = email.map(str::to_string);
            v.fields.phone = phone.map(str::to_string);
            let mut made = new_customer_terms(&v.fields);
            add_reference(&mut made, &v.customer_ref);
            assert_eq!(made, terms(&v), "{first} {last}");
        }
    }

    /// Whether a customer with these terms is matched by every query term.
    fn found_by(terms: &[String], q: &str) -> bool {
        query_terms(q).iter().all(|qt| {
            terms
                .iter()
                .any(|t| term_matches(t.as_bytes(), qt.as_bytes()))
        })
    }

    #[test]
    fn results_rank_newest_first_each_once_at_their_latest_time() {
        // C1 twice (two of its entries matched, the older first), C5 a tie with C1.
        let offers = [(5, "C2"), (3, "C1"), (9, "C4"), (7, "C1"), (7, "C5")];
        let mut all = Ranking::new(10);
        for (time, r) in offers {
            all.offer(time, r);
        }
        assert!(!all.cut());
        let s = |t: i64, r: &str| (t, r.to_string());
        assert_eq!(
            all.into_ranked(),
            vec![s(9, "C4"), s(7, "C1"), s(7, "C5"), s(5, "C2")]
        );
        let mut two = Ranking::new(2);
        for (time, r) in offers {
            two.offer(time, r);
        }
        assert!(two.cut(), "C5 and C2 were left out");
        assert_eq!(two.into_ranked(), vec![s(9, "C4"), s(7, "C1")]);
        let mut none = Ranking::new(0);
        none.offer(1, "C1");
        assert!(none.into_ranked().is_empty());
    }

    proptest::proptest! {
        /// The ranking keeps what sorting every candidate would give: each customer once at
        /// its latest time, newest first, then by reference, the first `limit`; and it says
        /// it cut whenever it left a customer out.
        #[test]
        fn a_ranking_keeps_the_first_of_a_full_sort(
            offers in proptest::collection::vec((0i64..6, 0u8..12), 0..60),
            limit in 0usize..15,
        ) {
            let offers: Vec<(i64, String)> =
                offers.into_iter().map(|(t, r)| (t, format!("C{r}"))).collect();
            let mut latest: std::collections::HashMap<&str, i64> = Default::default();
            for (t, r) in &offers {
                let e = latest.entry(r.as_str()).or_insert(*t);
                *e = (*e).max(*t);
            }
            let mut want: Vec<(i64, String)> =
                latest.iter().map(|(r, t)| (*t, r.to_string())).collect();
            want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let left_out = want.len() > limit;
            want.truncate(limit);
            let mut ranking = Ranking::new(limit);
            for (t, r) in &offers {
                ranking.offer(*t, r);
            }
            proptest::prop_assert!(ranking.cut() || !left_out);
            proptest::prop_assert_eq!(ranking.into_ranked(), want);
        }
    }

    /// An index of these customers' name terms, and a `next_term` over it that counts seeks.
    fn pair_index(names: &[&str]) -> std::collections::BTreeSet<String> {
        names
            .iter()
            .flat_map(|n| name_terms(name_words(n).collect()))
            .chain(["mari@example.ee".to_string(), "zz".to_string()])
            .collect()
    }

    fn plan<'q>(
        index: &std::collections::BTreeSet<String>,
        a: &'q str,
        b: &'q str,
        max: usize,
    ) -> (Option<PairPlan<'q>>, usize) {
        let mut seeks = 0;
        let plan = pair_plan(a, b, max, |seek| {
            seeks += 1;
            Ok::<_, ()>(index.range(seek.to_string()..).next().cloned())
        });
        (plan.expect("no error"), seeks)
    }

    #[test]
    fn a_pair_search_is_driven_by_the_term_that_begins_fewer_words() {
        // "ta" begins thirteen words (Ta00 to Ta11, and Tamm), "mari" two (Mari, Marika).
        let mut names: Vec<String> = (0..12).map(|k| format!("Mari Ta{k:02}")).collect();
        names.push("Marika Tamm".into());
        names.push("Juhan Tamm".into());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let index = pair_index(&names);

        let (found, seeks) = plan(&index, "ta", "mari", 64);
        let found = found.expect("a plan");
        assert_eq!(found.first_words, vec!["mari", "marika"]);
        assert_eq!(found.second, "ta");
        // Three seeks for "mari" (two words and the end), as many for "ta" in step: not the
        // fourteen that listing "ta" to its end takes.
        assert_eq!(seeks, 6, "in step");

        // Each way round, the same plan; a tie goes to the first term.
        let (found, _) = plan(&index, "mari", "ta", 64);
        assert_eq!(found.expect("a plan").first_words, vec!["mari", "marika"]);
        let (found, _) = plan(&index, "juhan", "tamm", 64);
        let found = found.expect("a plan");
        assert_eq!(
            (found.first_words, found.second),
            (vec!["juhan".into()], "tamm")
        );

        // A term no pair begins drives with no words: nothing to read.
        let (found, seeks) = plan(&index, "ta", "kask", 64);
        assert_eq!(found.expect("a plan").first_words, Vec::<String>::new());
        assert_eq!(seeks, 2);

        // Over the bound both ways round: no plan (the terms one by one answer instead).
        let (found, _) = plan(&index, "ta", "ma", 1);
        assert_eq!(found, None);
        // One over, the other within: the other drives, however long the first would take.
        let (found, _) = plan(&index, "ta", "mari", 2);
        assert_eq!(found.expect("a plan").first_words, vec!["mari", "marika"]);
        let (found, _) = plan(&index, "ta", "mari", 1);
        assert_eq!(found, None, "mari begins two words, ta thirteen");
    }

    #[test]
    fn terms_are_folded_and_names_paired() {
        let t = terms(&view());
        for want in ["oie@example.ee", "37251234567", "51234567", "s001-t42"] {
            assert!(t.contains(&want.to_string()), "{want} in {t:?}");
        }
        // Õie Tamm-Täht: three name words, every ordered pair of two.
        for (a, b) in [
            ("oie", "tamm"),
            ("tamm", "oie"),
            ("taht", "tamm"),
            ("oie", "taht"),
        ] {
            assert!(t.contains(&pair_term(a, b)), "{a}+{b} in {t:?}");
        }
        assert_eq!(t.iter().filter(|t| pair_first_word(t).is_some()).count(), 6);
        assert!(
            !t.iter().any(|t| t == "tamm"),
            "names are paired, not plain"
        );
        for q in [
            "õie",
            "TAMM",
            "täht",
            "oie tamm",
            "tamm oie",
            "ta oi",
            "oie@ex",
            "+372 5123",
        ] {
            assert!(found_by(&t, q), "{q}");
        }
        for q in ["kask", "oie kask", "s001-t43"] {
            assert!(!found_by(&t, q), "{q}");
        }
    }

    #[test]
    fn one_name_word_is_a_pair_with_nothing_and_many_are_marked() {
        let mut v = view();
        v.fields.first_name = "Mari".into();
        v.fields.last_name = "Mari".into();
        let t = terms(&v);
        assert!(t.contains(&pair_term("mari", "")), "{t:?}");
        assert!(found_by(&t, "mar"));
        v.fields.first_name = "Anna Maria Luisa Eva".into();
        v.fields.last_name = "de la Cruz".into();
        let t = terms(&v);
        assert!(
            t.contains(&MANY_NAME_WORDS.to_string()),
            "seven words: {t:?}"
        );
        assert!(t.contains(&pair_term("luisa", "")));
        assert!(found_by(&t, "luisa cruz"));
        assert_eq!(t.iter().filter(|t| pair_first_word(t).is_some()).count(), 7);
    }

    #[test]
    fn a_pair_reads_back_and_sorts_with_its_first_word() {
        let p = pair_term("mari", "tamm");
        assert_eq!(pair_first_word(&p), Some("mari"));
        assert_eq!(pair_second_word(&p), Some("tamm"));
        assert_eq!(pair_first_word("mari"), None, "plain");
        assert!(p.starts_with(&pair_first_prefix("mar")));
        // Every pair of "mari" sorts before the end of mari's pairs, and that before "marika".
        let end = after_pairs_of("mari");
        for second in ["", "a", "zzzz", "tamm"] {
            assert!(pair_term("mari", second) < end);
        }
        assert!(end < pair_term("marika", ""));
        assert!(end < pair_term("maria", "a"));
        // Pairs sort apart from every plain term.
        assert!(pair_term("zz", "zz").as_str() < "0");
        assert!(MANY_NAME_WORDS < "0");
    }

    #[test]
    fn a_query_term_that_begins_another_is_left_out() {
        assert_eq!(query_terms("mar mari"), vec!["mari"]);
        assert_eq!(query_terms("Mari M"), vec!["mari"]);
        assert_eq!(query_terms("tamm mari kask"), vec!["kask", "mari", "tamm"]);
        assert_eq!(query_terms("ka kask kaskla"), vec!["kaskla"]);
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
