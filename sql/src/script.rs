//! Splitting SQL text into statements at the `;` that ends each one.
//!
//! DataFusion plans one statement at a time, and the shell must know when a multi-line
//! statement is complete. The text is cut with sqlparser's tokenizer, the one DataFusion
//! parses with (its generic dialect, DataFusion's default, which the session never changes),
//! so a `;` ends a statement exactly where DataFusion would see one: not inside a string
//! (`'…'`, `E'…'` with backslash escapes, `$$…$$` and `$tag$…$tag$`), a quoted identifier
//! (`"…"`) or a comment (`-- …`, `/* … */`).

use std::ops::Range;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// Splits `text` into statements, without their `;` and surrounding whitespace. Text after
/// the last `;` is returned as a final statement when it holds more than comments; so is
/// text the tokenizer cannot read (an unterminated string, say), from the statement it
/// starts in to the end, for DataFusion to report.
pub fn split_statements(text: &str) -> Vec<String> {
    let scan = Scan::of(text);
    let tail = scan.tail.map(|start| start..text.len());
    scan.statements
        .into_iter()
        .chain(tail)
        .map(|range| text.get(range).unwrap_or_default().trim().to_string())
        .collect()
}

/// True when `text` ends inside a statement: code follows the last `;`, or a string,
/// quoted identifier or comment is still open. The shell keeps reading lines while this
/// holds. Text the tokenizer cannot read counts as open too (sqlparser reports an open
/// string and a malformed escape in one alike); Ctrl-C drops it.
pub fn is_incomplete(text: &str) -> bool {
    Scan::of(text).tail.is_some()
}

/// Where the statements of a text are, as the tokenizer sees them.
struct Scan {
    /// Each complete statement that holds code, from just after the previous `;` to its own.
    statements: Vec<Range<usize>>,
    /// Where the text after the last `;` starts, when it holds code or something the
    /// tokenizer cannot read.
    tail: Option<usize>,
}

impl Scan {
    fn of(text: &str) -> Scan {
        let dialect = GenericDialect {};
        let mut tokens: Vec<TokenWithSpan> = Vec::new();
        // On an error, `tokens` holds every token before it.
        let unreadable = Tokenizer::new(&dialect, text).tokenize_with_location_into_buf(&mut tokens).is_err();
        let offsets = ByteOffsets::new(text);
        let mut statements = Vec::new();
        let mut start = 0;
        let mut code = false;
        for token in &tokens {
            match token.token {
                Token::SemiColon => {
                    let end = offsets.of(token.span.start);
                    if code {
                        statements.push(start..end);
                    }
                    // A `;` is one byte.
                    start = end + 1;
                    code = false;
                }
                // Comments are whitespace tokens.
                Token::Whitespace(_) | Token::EOF => {}
                _ => code = true,
            }
        }
        // What the tokenizer could not read is code: DataFusion then names the problem (an
        // unterminated string, a comment that never closes).
        let tail = (code || unreadable).then_some(start);
        Scan { statements, tail }
    }
}

/// Turns the tokenizer's locations (1-based line, and column in characters) into byte
/// offsets of the text.
struct ByteOffsets<'a> {
    text: &'a str,
    /// Byte offset at which each line starts.
    line_starts: Vec<usize>,
}

impl<'a> ByteOffsets<'a> {
    fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        ByteOffsets { text, line_starts }
    }

    fn of(&self, location: Location) -> usize {
        let line = usize::try_from(location.line).unwrap_or(usize::MAX).saturating_sub(1);
        let Some(&start) = self.line_starts.get(line) else { return self.text.len() };
        let column = usize::try_from(location.column).unwrap_or(usize::MAX).saturating_sub(1);
        self.text[start..].char_indices().nth(column).map_or(self.text.len(), |(i, _)| start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_strings_and_comments() {
        let text = "SELECT 'a;b' AS \"x;y\"; -- one; two\nSELECT 2 /* ; */;\n\n  SELECT 3";
        assert_eq!(
            split_statements(text),
            vec!["SELECT 'a;b' AS \"x;y\"", "-- one; two\nSELECT 2 /* ; */", "SELECT 3"]
        );
    }

    #[test]
    fn escaped_quotes_stay_inside_the_string() {
        assert_eq!(split_statements("SELECT 'it''s; fine';"), vec!["SELECT 'it''s; fine'"]);
        assert_eq!(
            split_statements(r"SELECT E'it\'s; fine'; SELECT 2"),
            vec![r"SELECT E'it\'s; fine'", "SELECT 2"]
        );
        assert_eq!(split_statements("SELECT \"a\"\";b\" FROM t;"), vec!["SELECT \"a\"\";b\" FROM t"]);
    }

    #[test]
    fn dollar_quoted_strings_hide_their_semicolons() {
        assert_eq!(
            split_statements("SELECT $$a;b$$; SELECT $tag$c;d$tag$;SELECT 3;"),
            vec!["SELECT $$a;b$$", "SELECT $tag$c;d$tag$", "SELECT 3"]
        );
    }

    #[test]
    fn offsets_count_characters_not_bytes() {
        let text = "SELECT 'é;ü' AS \"ñ\";\nSELECT 'ø';  SELECT 3";
        assert_eq!(split_statements(text), vec!["SELECT 'é;ü' AS \"ñ\"", "SELECT 'ø'", "SELECT 3"]);
        assert_eq!(split_statements("SELECT 'ä';\r\nSELECT 'x;y';\r\n"), vec!["SELECT 'ä'", "SELECT 'x;y'"]);
    }

    #[test]
    fn comments_and_blank_lines_are_not_statements() {
        assert!(split_statements("-- nothing\n;;  /* here */ \n").is_empty());
        assert!(split_statements("").is_empty());
    }

    #[test]
    fn a_comment_left_open_is_passed_on_for_datafusion_to_report() {
        assert_eq!(split_statements("SELECT 1; /* open"), vec!["SELECT 1", "/* open"]);
    }

    #[test]
    fn an_unterminated_string_is_the_last_statement_for_datafusion_to_report() {
        assert_eq!(
            split_statements("SELECT 1; SELECT 'open; SELECT 2;"),
            vec!["SELECT 1", "SELECT 'open; SELECT 2;"]
        );
    }

    #[test]
    fn a_statement_is_complete_at_its_semicolon() {
        assert!(is_incomplete("SELECT *\nFROM page_views"));
        assert!(is_incomplete("SELECT ';"));
        assert!(is_incomplete("SELECT $$;"));
        assert!(is_incomplete("SELECT \"a;"));
        assert!(is_incomplete("SELECT 1; /* open"));
        assert!(is_incomplete("SELECT 1; /* closed */ /* open ;"));
        assert!(!is_incomplete("SELECT *\nFROM page_views;"));
        assert!(!is_incomplete("SELECT 1; -- done"));
        assert!(!is_incomplete("SELECT 1; /* done */"));
        assert!(!is_incomplete(""));
    }
}
