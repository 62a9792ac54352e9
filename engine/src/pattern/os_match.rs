//! OS_Match ("sregex": `<match>`, `<program_name>`, rule field matchers):
//! case-insensitive literal alternatives split on `|`, each anchored by a
//! leading `^` and a trailing `$`. OSSEC 2.x semantics (spec 3.1): an inner
//! `^`/`$` is literal, where 3.x would turn it into an anchor. The whole
//! dialect runs on the [literal matcher](super::literal).

use super::literal::Literal;

/// Compiles an OS_Match pattern; every text is a valid one.
pub(super) fn compile(source: &str) -> Literal {
    let alts = source
        .split('|')
        .map(|alt| {
            let b = alt.as_bytes();
            let (start, b) = match b.strip_prefix(b"^") {
                Some(rest) => (true, rest),
                None => (false, b),
            };
            let (end, b) = match b.strip_suffix(b"$") {
                Some(rest) => (true, rest),
                None => (false, b),
            };
            (start, b.to_vec(), end)
        })
        .collect();
    // Building can only fail on absurd sizes; fall back to an empty
    // matcher that never matches rather than panicking.
    Literal::build(alts, false).unwrap_or_else(Literal::never)
}
