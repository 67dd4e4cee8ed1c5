//! Where a field is in the config text, so an error found after parsing
//! (a range check, a policy file that cannot be read, a component that does
//! not load) still names its line.

use toml_edit::{ImDocument, Item};

/// The 1-based line of the value at `path` (as `FieldError` names it, e.g.
/// `tenant[1].backends.api.url`) in TOML `text`; `None` when the path is not
/// one of a value in the text.
pub(super) fn line_of(text: &str, path: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut item: &Item = doc.as_item();
    for segment in path.split('.') {
        let (name, indexes) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            item = item.get(name)?;
        }
        for index in indexes.split(['[', ']']).filter(|i| !i.is_empty()) {
            item = item.get(index.parse::<usize>().ok()?)?;
        }
    }
    let span = item.span()?;
    Some(text.get(..span.start)?.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nlisten = \"127.0.0.1:1\"\n\n[[tenant]]\nid = \"a\"\n\
                        [[tenant]]\nid = \"b\"\npolicy = \"p.wasm\"\n[tenant.limits]\nmemory_mb = 0\n";

    #[test]
    fn paths_lead_to_the_lines_of_their_values() {
        assert_eq!(line_of(TEXT, "server.listen"), Some(2));
        assert_eq!(line_of(TEXT, "tenant[0].id"), Some(5));
        assert_eq!(line_of(TEXT, "tenant[1].policy"), Some(8));
        assert_eq!(line_of(TEXT, "tenant[1].limits.memory_mb"), Some(10));
    }

    #[test]
    fn paths_that_are_not_in_the_text_have_no_line() {
        assert_eq!(line_of(TEXT, "tenant[2].id"), None);
        assert_eq!(line_of(TEXT, "tenant[].cache_quota_mb"), None);
        assert_eq!(line_of(TEXT, "cache.max_size_mb"), None);
        assert_eq!(line_of("not toml [", "a"), None);
    }
}
