//! Splitting SQL text into statements at the `;` that ends each one.
//!
//! DataFusion plans one statement at a time, and the shell must know when a multi-line
//! statement is complete. A `;` inside a string ('…'), a quoted identifier ("…") or a
//! comment (`-- …`, `/* … */`) does not end a statement.

/// Splits `text` into statements, without their `;` and surrounding whitespace. Text after
/// the last `;` is returned as a final statement when it holds more than comments.
pub fn split_statements(text: &str) -> Vec<String> {
    let (mut statements, rest) = scan(text);
    if has_code(rest) {
        statements.push(rest.trim().to_string());
    }
    statements
}

/// True when `text` ends inside a statement: something other than whitespace and comments
/// follows the last complete statement, or a string or comment is still open. The shell
/// keeps reading lines while this holds.
pub fn is_incomplete(text: &str) -> bool {
    let (_, rest) = scan(text);
    has_code(rest) || rest_is_open(rest)
}

/// The complete statements of `text` and the text after the last of them.
fn scan(text: &str) -> (Vec<String>, &str) {
    let mut statements = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => i = skip_quoted(bytes, i),
            b'-' if bytes.get(i + 1) == Some(&b'-') => i = skip_line(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block(bytes, i),
            b';' => {
                let statement = text[start..i].trim();
                if has_code(statement) {
                    statements.push(statement.to_string());
                }
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    (statements, &text[start..])
}

/// Index after the closing quote of the string starting at `i` (a doubled quote is an
/// escaped one), or the end of the text when it is not closed.
fn skip_quoted(bytes: &[u8], i: usize) -> usize {
    let quote = bytes[i];
    let mut j = i + 1;
    while j < bytes.len() {
        if bytes[j] == quote {
            if bytes.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    bytes.len()
}

fn skip_line(bytes: &[u8], i: usize) -> usize {
    bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| i + p + 1)
}

fn skip_block(bytes: &[u8], i: usize) -> usize {
    bytes[i + 2..].windows(2).position(|w| w == b"*/").map_or(bytes.len(), |p| i + 2 + p + 2)
}

/// True when `text` holds something besides whitespace and comments.
fn has_code(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => i = skip_line(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block(bytes, i),
            b if b.is_ascii_whitespace() => i += 1,
            _ => return true,
        }
    }
    false
}

/// True when a block comment in `rest` is not closed (strings are code, so [`has_code`]
/// already covers an open string).
fn rest_is_open(rest: &str) -> bool {
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => i = skip_line(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                if !rest[i + 2..].contains("*/") {
                    return true;
                }
                i = skip_block(bytes, i);
            }
            _ => i += 1,
        }
    }
    false
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
    }

    #[test]
    fn comments_and_blank_lines_are_not_statements() {
        assert!(split_statements("-- nothing\n;;  /* here */ \n").is_empty());
    }

    #[test]
    fn a_statement_is_complete_at_its_semicolon() {
        assert!(is_incomplete("SELECT *\nFROM page_views"));
        assert!(is_incomplete("SELECT ';"));
        assert!(is_incomplete("SELECT 1; /* open"));
        assert!(!is_incomplete("SELECT *\nFROM page_views;"));
        assert!(!is_incomplete("SELECT 1; -- done"));
        assert!(!is_incomplete(""));
    }
}
