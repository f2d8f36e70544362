//! The layout pass: decides which newlines end statements (LANGUAGE.md §1) before the grammar runs.
//!
//! A newline does not end a statement inside `( )` or `[ ]`, after an operator or a comma, or when
//! the next token is `else`. Such newlines become spaces (and a `//` comment on that line becomes
//! spaces too, so it cannot swallow the next line). Every byte keeps its offset, so spans computed
//! on the result point into the original text. The pass also measures bracket nesting, so input
//! nested past `MAX_NESTING` is refused before the (recursive) parser sees it.

use crate::limits::MAX_NESTING;

/// What the layout pass found.
pub struct Layout {
    /// The source with insignificant newlines blanked; same length as the input.
    pub text: String,
    /// Byte offset of the first bracket nested deeper than `MAX_NESTING`, if any.
    pub too_deep: Option<usize>,
}

/// Operators after which a line continues. `..`, `;` and closing brackets are not among them.
const CONTINUING_OPERATORS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", ":=", "=>", "->", "+", "-", "*", "/", "^", "@", "<", ">", "=", "!",
    ",", ":", ".",
];

/// Multi-character operators, longest first, so the scanner takes each whole.
const OPERATORS: &[&str] = &["==", "!=", "<=", ">=", "&&", "||", ":=", "=>", "->", "::", ".."];

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'\''
}

struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self, ahead: usize) -> u8 {
        self.src.get(self.pos + ahead).copied().unwrap_or(0)
    }

    /// Skips a string literal starting at `"`; it ends at the closing quote or before a newline.
    fn skip_string(&mut self) {
        self.pos += 1;
        while self.pos < self.src.len() {
            match self.peek(0) {
                b'"' => {
                    self.pos += 1;
                    return;
                }
                b'\n' => return,
                b'\\' if self.peek(1) != b'\n' && self.peek(1) != 0 => self.pos += 2,
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a word or number (`1e-3` whole) and returns its text.
    fn word(&mut self) -> &[u8] {
        let start = self.pos;
        let numeric = self.peek(0).is_ascii_digit();
        while is_word_byte(self.peek(0)) {
            let b = self.peek(0);
            self.pos += 1;
            if numeric && (b == b'e' || b == b'E') && matches!(self.peek(0), b'+' | b'-') {
                self.pos += 1;
            }
        }
        self.src.get(start..self.pos).unwrap_or(&[])
    }

    /// Skips to the end of the line (not past the newline).
    fn skip_comment(&mut self) {
        while self.pos < self.src.len() && self.peek(0) != b'\n' {
            self.pos += 1;
        }
    }

    /// Whether the next token after `self.pos` (skipping blanks, newlines and comments) is `else`.
    /// Returns that token's offset too, so callers can reuse the answer up to there.
    fn next_token_is_else(&self) -> (usize, bool) {
        let mut probe = Scanner { src: self.src, pos: self.pos };
        loop {
            match probe.peek(0) {
                b' ' | b'\t' | b'\r' | b'\n' => probe.pos += 1,
                b'/' if probe.peek(1) == b'/' => probe.skip_comment(),
                _ => break,
            }
        }
        let at = probe.pos;
        let is_else = probe.word() == b"else";
        (at, is_else)
    }
}

/// Runs the layout pass over `src`.
pub fn layout(src: &str) -> Layout {
    scan(src, src.len()).0
}

/// The brackets still open at `offset`, innermost last, with their offsets (for "unclosed `(`").
pub fn open_brackets_at(src: &str, offset: usize) -> Vec<(usize, char)> {
    scan(src, offset).1.into_iter().map(|(at, b)| (at, b as char)).collect()
}

/// The layout pass up to `stop`: the laid-out text and the brackets open there.
fn scan(src: &str, stop: usize) -> (Layout, Vec<(usize, u8)>) {
    let bytes = src.as_bytes();
    let mut out = bytes.to_vec();
    let mut s = Scanner { src: bytes, pos: 0 };
    let mut stack: Vec<(usize, u8)> = Vec::new();
    let mut too_deep = None;
    let mut continues = false; // the last token was a continuing operator
    let mut after_path_separator = false; // the last operator was `::`
    let mut comment_start: Option<usize> = None;
    let mut else_ahead: (usize, bool) = (0, false);

    while s.pos < bytes.len() && s.pos < stop {
        let b = s.peek(0);
        match b {
            b'\n' => {
                if s.pos >= else_ahead.0 {
                    s.pos += 1;
                    else_ahead = s.next_token_is_else();
                    s.pos -= 1;
                }
                let inside_brackets = matches!(stack.last(), Some((_, b'(' | b'[')));
                if inside_brackets || continues || else_ahead.1 {
                    if let Some(start) = comment_start {
                        for byte in out.get_mut(start..s.pos).into_iter().flatten() {
                            *byte = b' ';
                        }
                    }
                    if let Some(byte) = out.get_mut(s.pos) {
                        *byte = b' ';
                    }
                }
                comment_start = None;
                s.pos += 1;
            }
            b' ' | b'\t' | b'\r' => s.pos += 1,
            b'/' if s.peek(1) == b'/' => {
                comment_start = Some(s.pos);
                s.skip_comment();
            }
            b'"' => {
                s.skip_string();
                continues = false;
            }
            b'(' | b'[' | b'{' => {
                stack.push((s.pos, b));
                if stack.len() > MAX_NESTING && too_deep.is_none() {
                    too_deep = Some(s.pos);
                }
                s.pos += 1;
                continues = false;
            }
            b')' | b']' | b'}' => {
                stack.pop();
                s.pos += 1;
                continues = false;
            }
            _ if is_word_byte(b) => {
                continues = s.word() == b"else";
            }
            _ => {
                let rest = bytes.get(s.pos..).unwrap_or(&[]);
                let op = OPERATORS.iter().find(|op| rest.starts_with(op.as_bytes())).map_or(1, |op| op.len());
                let token = rest.get(..op).unwrap_or(&[]);
                // `use std::losses::*` ends in a glob, not a multiplication.
                let glob = token == b"*" && after_path_separator;
                continues = !glob && CONTINUING_OPERATORS.iter().any(|c| c.as_bytes() == token);
                after_path_separator = token == b"::";
                s.pos += op;
            }
        }
    }
    // Only ASCII bytes and whole comments (which end before a newline) were replaced by spaces,
    // so the result is still UTF-8; fall back to the input if that ever failed.
    let text = String::from_utf8(out).unwrap_or_else(|_| src.to_owned());
    (Layout { text, too_deep }, stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blanked(src: &str) -> String {
        layout(src).text
    }

    #[test]
    fn newlines_inside_parentheses_and_brackets_are_blank() {
        assert_eq!(blanked("f(a,\n b)\nx[1\n]"), "f(a,  b)\nx[1 ]");
    }

    #[test]
    fn newline_after_an_operator_continues_but_not_after_an_operand() {
        assert_eq!(blanked("a +\nb\nc"), "a + b\nc");
        assert_eq!(blanked("use std::act::*\nx"), "use std::act::*\nx");
        assert_eq!(blanked("x = 1\n-2"), "x = 1\n-2");
    }

    #[test]
    fn else_on_the_next_line_continues_even_past_comments() {
        assert_eq!(
            blanked("if c { a }\n// why\nelse { b }"),
            format!("if c {{ a }}{}else {{ b }}", " ".repeat(8))
        );
        assert_eq!(blanked("if c { a }\nelsewhere"), "if c { a }\nelsewhere");
    }

    #[test]
    fn comments_on_continued_lines_are_blanked_and_strings_are_opaque() {
        assert_eq!(blanked("f(a, // first\nb)"), "f(a,          b)");
        assert_eq!(blanked("s = \"(//\"\nt"), "s = \"(//\"\nt");
        assert_eq!(blanked("f(\"é\" // ünï\n)"), "f(\"é\"          )");
    }

    #[test]
    fn braces_keep_newlines_significant_even_inside_parentheses() {
        assert_eq!(blanked("f(if c {\na\n})"), "f(if c {\na\n})");
    }

    #[test]
    fn nesting_past_the_limit_is_found_before_parsing() {
        let deep = "(".repeat(MAX_NESTING + 1);
        assert_eq!(layout(&deep).too_deep, Some(MAX_NESTING));
        assert_eq!(layout(&"(".repeat(MAX_NESTING)).too_deep, None);
    }

    #[test]
    fn open_brackets_are_reported_innermost_last() {
        assert_eq!(open_brackets_at("f(a, [b", 7), vec![(1, '('), (5, '[')]);
        assert_eq!(open_brackets_at("f(a) {", 6), vec![(5, '{')]);
    }
}
