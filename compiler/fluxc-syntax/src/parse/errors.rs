//! pest's parse failures → one E0101/E0102 diagnostic in human words.
//!
//! pest reports the furthest position it reached and what it tried there (rules and literal
//! tokens). We name the token found there, describe what was expected in words a user knows
//! ("an expression", "`)`"), collapse long lists into categories, and add a hint for the common
//! mistakes (a keyword as a name, `.5`, chained comparisons, an unclosed bracket or string).

use std::collections::BTreeSet;

use pest::error::{Error, ErrorVariant, InputLocation};

use super::Rule;
use crate::diagnostic::{Code, Diagnostic};
use crate::layout::open_brackets_at;
use crate::limits::MAX_NESTING;
use crate::span::{FileId, Span};

const KEYWORDS: &[&str] = &[
    "use",
    "fn",
    "layer",
    "loss",
    "optimizer",
    "model",
    "data",
    "train",
    "let",
    "param",
    "forward",
    "update",
    "if",
    "else",
    "true",
    "false",
    "training",
];
const ELEM_TYPES: &[&str] = &["f32", "i32", "bool", "str", "f16", "bf16", "f64"];
const OPERATORS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", ":=", "=>", "->", "::", "..", "+", "-", "*", "/", "^", "@", "<", ">",
    "=", "!", ",", ":", ".", ";", "(", ")", "[", "]", "{", "}",
];
const BINARY_OPERATORS: &[&str] =
    &["+", "-", "*", "/", "^", "@", "==", "!=", "<", "<=", ">", ">=", "&&", "||"];
const COMPARISONS: &[&str] = &["==", "!=", "<", "<=", ">", ">="];

const EXPRESSION: &str = "an expression";
const OPERATOR: &str = "an operator";
const TYPE: &str = "a type";
const NEW_LINE: &str = "a new line";
const ITEM: &str = "an item or a statement";

/// What stands at the error position, for "found …".
struct Found {
    text: String,
    len: usize,
    kind: FoundKind,
}

#[derive(PartialEq)]
enum FoundKind {
    EndOfFile,
    EndOfLine,
    Keyword,
    Word,
    Number,
    Other,
}

impl Found {
    fn describe(&self) -> String {
        match self.kind {
            FoundKind::EndOfFile => "end of file".into(),
            FoundKind::EndOfLine => "end of line".into(),
            FoundKind::Keyword => format!("keyword `{}`", self.text),
            _ => format!("`{}`", self.text),
        }
    }
}

fn token_at(text: &str, pos: usize) -> Found {
    let rest = text.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return Found { text: String::new(), len: 0, kind: FoundKind::EndOfFile };
    };
    if c == '\n' || rest.starts_with("\r\n") {
        return Found { text: String::new(), len: 1, kind: FoundKind::EndOfLine };
    }
    if c.is_ascii_alphanumeric() || c == '_' {
        let end = rest
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '\''))
            .unwrap_or(rest.len());
        let word = rest.get(..end).unwrap_or("").to_owned();
        let kind = if c.is_ascii_digit() {
            FoundKind::Number
        } else if KEYWORDS.contains(&word.as_str()) {
            FoundKind::Keyword
        } else {
            FoundKind::Word
        };
        return Found { len: end, text: word, kind };
    }
    if let Some(op) = OPERATORS.iter().find(|op| rest.starts_with(*op)) {
        return Found { text: (*op).to_owned(), len: op.len(), kind: FoundKind::Other };
    }
    Found { text: c.to_string(), len: c.len_utf8(), kind: FoundKind::Other }
}

/// A rule pest tried, in words; `None` for rules a user need not hear about.
fn describe_rule(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        ident | word | name_pattern | named_type => "a name",
        int | float => "a number",
        string => "a string",
        expr | or_expr | and_expr | cmp_expr | add_expr | mul_expr | mat_expr | unary | power
        | pow_operand | postfix | paren | list | if_expr | bool_lit | training | keyword_name | prefix_op
        | range_or_expr | arg | expr_stmt => EXPRESSION,
        tensor_type | tuple_type | fn_type | elem_type => TYPE,
        block => "`{`",
        EOI => "end of file",
        shape_var => "a shape variable such as `..S`",
        op_or | op_and | op_cmp | op_add | op_mul | op_matmul | op_pow => OPERATOR,
        call_args | params => "`(`",
        bracket_suffix | dim_params => "`[`",
        field => "`.`",
        use_path => "a module path",
        use_decl | fn_def | loss_def | layer_def | optimizer_def | model_def | data_def | train_def => ITEM,
        let_stmt => "`let`",
        param_member => "`param`",
        state_member | kw_state => "`state`",
        forward_def => "`forward`",
        field_member => "a layer member",
        update_def => "`update`",
        train_entry => "a `key = value` line",
        dim_param => "a dimension parameter",
        param => "a parameter",
        kw_use => "`use`",
        kw_fn => "`fn`",
        kw_layer => "`layer`",
        kw_loss => "`loss`",
        kw_optimizer => "`optimizer`",
        kw_model => "`model`",
        kw_data => "`data`",
        kw_train => "`train`",
        kw_let => "`let`",
        kw_param => "`param`",
        kw_forward => "`forward`",
        kw_update => "`update`",
        kw_if => "`if`",
        kw_else => "`else`",
        kw_on => "`on`",
        _ => return None,
    })
}

/// A literal token pest tried (as pest displays it), in words.
fn describe_token(t: &str) -> Option<String> {
    if t == "\n" {
        Some(NEW_LINE.into())
    } else if t.len() == 4 && t.get(1..3) == Some("..") {
        // A character range (`0..9`, `a..z`) from inside a token: too low-level to mention.
        None
    } else if t == "\"" {
        Some("a string".into())
    } else if ELEM_TYPES.contains(&t) {
        Some(TYPE.into())
    } else if t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        // Keywords are worth naming; single letters come from inside numbers.
        KEYWORDS.contains(&t).then(|| format!("`{t}`"))
    } else if ["'", "\\", "\u{FEFF}", "\r", "\t", " ", "//"].contains(&t) {
        None
    } else {
        Some(format!("`{t}`"))
    }
}

/// Collapses long lists into categories and orders the rest (specific tokens first).
fn summarise(mut expected: BTreeSet<String>) -> Vec<String> {
    let quoted = |s: &str| format!("`{s}`");
    let binary: Vec<String> = BINARY_OPERATORS.iter().map(|s| quoted(s)).collect();
    if binary.iter().filter(|b| expected.contains(*b)).count() >= 3 || expected.contains(OPERATOR) {
        for b in binary.iter().chain([quoted("("), quoted("["), quoted(".")].iter()) {
            expected.remove(b);
        }
        expected.insert(OPERATOR.into());
    }
    let starters = [
        "a name",
        "a number",
        "a string",
        "`(`",
        "`[`",
        "`-`",
        "`!`",
        "`if`",
        "`true`",
        "`false`",
        "`training`",
        "`loss`",
    ];
    if expected.contains(EXPRESSION) || starters.iter().filter(|s| expected.contains(**s)).count() >= 3 {
        for s in starters {
            expected.remove(s);
        }
        expected.insert(EXPRESSION.into());
    }
    let item_keywords = ["`use`", "`fn`", "`layer`", "`optimizer`", "`model`", "`data`", "`train`"];
    if item_keywords.iter().filter(|k| expected.contains(**k)).count() >= 3 {
        expected.insert(ITEM.into());
    }
    if expected.contains(ITEM) {
        for k in [
            "`use`",
            "`fn`",
            "`layer`",
            "`loss`",
            "`optimizer`",
            "`model`",
            "`data`",
            "`train`",
            "`let`",
            EXPRESSION,
        ] {
            expected.remove(k);
        }
    }
    if expected.contains(TYPE) {
        expected.remove("`fn`");
    }
    if expected.contains(NEW_LINE) || expected.contains("`;`") {
        expected.remove(NEW_LINE);
        expected.remove("`;`");
        expected.insert("a new line or `;`".into());
    }
    let rank = |s: &String| -> usize {
        let order = ["`)`", "`]`", "`}`", "`,`", "`=`", "`:`", "`->`", "`=>`", "`{`", "`(`", "`[`"];
        if let Some(i) = order.iter().position(|o| o == s) {
            return i;
        }
        if s.starts_with('`') {
            return 20;
        }
        match s.as_str() {
            "a new line or `;`" => 90,
            "end of file" => 95,
            OPERATOR => 80,
            _ => 50,
        }
    };
    let mut list: Vec<String> = expected.into_iter().collect();
    list.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    list
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => "something else".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

/// When `pos` is not where a token starts (inside a word, right after a keyword, or splitting
/// `..`), the offset where that token starts.
fn token_start_containing(text: &str, pos: usize) -> Option<usize> {
    let before = text.get(..pos)?;
    let here = text.get(pos..)?.chars().next();
    let prev = before.chars().next_back()?;
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '\'';
    if is_word(prev) {
        let start = before.trim_end_matches(is_word).len();
        let word = before.get(start..)?;
        if KEYWORDS.contains(&word) || ELEM_TYPES.contains(&word) || here.is_some_and(is_word) {
            return Some(start);
        }
    }
    if prev == '.' && here == Some('.') {
        return Some(pos - 1);
    }
    None
}

/// The offset of the `"` that opens a string still open at the end of `line_so_far`'s last line.
fn open_string_start(line_so_far: &str) -> Option<usize> {
    let line_start = line_so_far.rfind('\n').map_or(0, |i| i + 1);
    let line = line_so_far.get(line_start..)?;
    let mut open = None;
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        match (c, open) {
            ('"', None) => open = Some(line_start + i),
            ('"', Some(_)) => open = None,
            ('\\', Some(_)) => {
                chars.next();
            }
            ('/', None) if line.get(i..).is_some_and(|r| r.starts_with("//")) => return None,
            _ => {}
        }
    }
    open
}

/// Builds the diagnostic for a failed parse of `laid` (the layout pass's text for `original`).
pub(super) fn syntax_error(id: FileId, original: &str, laid: &str, err: &Error<Rule>) -> Diagnostic {
    let mut pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((p, _)) => p,
    };
    if let ErrorVariant::CustomError { message } = &err.variant
        && message.contains("limit")
    {
        {
            return Diagnostic::error(
                Code::E0102,
                Span::new(id, pos, pos),
                format!("input nested too deeply to parse (limit: {MAX_NESTING} levels)"),
            )
            .with_primary_label("nesting grows too deep here");
        }
    }
    // pest's position is where the last rule started; its attempts know the furthest token tried,
    // which is where a reader sees the mistake. Use what was tried there, unless that position
    // lies inside a token (a lookahead such as "not followed by a letter" peeked past a keyword
    // or into `..`): then the token's start is the place, and pest's rules there say what was wanted.
    let positives = |expected: &mut BTreeSet<String>| {
        if let ErrorVariant::ParsingError { positives, .. } = &err.variant {
            expected.extend(positives.iter().filter_map(|r| describe_rule(*r)).map(str::to_owned));
        }
    };
    let mut expected = BTreeSet::new();
    match err.parse_attempts() {
        Some(attempts) if attempts.max_position > pos => {
            match token_start_containing(laid, attempts.max_position) {
                Some(start) => {
                    pos = start.max(pos);
                    positives(&mut expected);
                }
                None => {
                    pos = attempts.max_position;
                    expected.extend(
                        attempts.expected_tokens().iter().filter_map(|t| describe_token(&t.to_string())),
                    );
                    for stack in attempts.call_stacks() {
                        expected.extend(
                            stack.deepest.get_rule().copied().and_then(describe_rule).map(str::to_owned),
                        );
                    }
                }
            }
        }
        Some(attempts) => {
            expected.extend(attempts.expected_tokens().iter().filter_map(|t| describe_token(&t.to_string())));
            positives(&mut expected);
        }
        None => positives(&mut expected),
    }
    let found = token_at(laid, pos);
    let expected = summarise(expected);
    let span = Span::new(id, pos, pos + found.len);
    let wanted = join_or(&expected);

    let rest = laid.get(pos..).unwrap_or("");
    let before = original.get(..pos).unwrap_or("");

    // An unterminated string: the error stands at the end of a line inside a string.
    if let (Some(q), FoundKind::EndOfLine | FoundKind::EndOfFile) = (open_string_start(before), &found.kind) {
        return Diagnostic::error(Code::E0101, Span::new(id, q, q + 1), "unterminated string literal")
            .with_primary_label("this string has no closing `\"` on its line")
            .with_label(span, "the line ends here")
            .with_help("strings cannot span lines; write `\\n` for a newline");
    }
    // A bad escape: pest stops just after the backslash.
    if before.ends_with('\\') && open_string_start(before).is_some() {
        let escaped = rest.chars().next().map_or(0, char::len_utf8);
        let esc = Span::new(id, pos.saturating_sub(1), pos + escaped);
        return Diagnostic::error(
            Code::E0101,
            esc,
            format!("unknown escape `\\{}` in a string", rest.chars().next().unwrap_or(' ')),
        )
        .with_primary_label("not a valid escape")
        .with_note("the escapes are `\\\"`, `\\\\`, `\\n` and `\\t`");
    }

    let mut d =
        Diagnostic::error(Code::E0101, span, format!("expected {wanted}, found {}", found.describe()))
            .with_primary_label(if expected.len() <= 3 {
                format!("expected {wanted}")
            } else {
                format!("unexpected {}", found.describe())
            });

    let expects_name = expected.iter().any(|e| e == "a name" || e == EXPRESSION);
    if found.kind == FoundKind::Keyword && expects_name {
        d = d.with_help(format!("`{}` is a keyword and cannot be used as a name", found.text));
    } else if ELEM_TYPES.contains(&found.text.as_str()) && expects_name {
        d = d.with_help(format!("`{}` is a type name and cannot be used as a value", found.text));
    } else if found.text == "." && rest.get(1..).is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    {
        let digits: String = rest.chars().skip(1).take_while(char::is_ascii_digit).collect();
        d = d.with_help(format!("a number cannot start with `.`; write `0.{digits}`"));
    } else if found.kind == FoundKind::Number
        && found.text.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        d = d.with_help("a name cannot start with a digit");
    } else if COMPARISONS.contains(&found.text.as_str()) {
        d = d.with_note("comparisons do not chain: write `a < b && b < c`");
    } else if found.text == "=>" {
        d = d.with_note("`=>` only pairs constructor arguments, as in `Dense(784 => 256)`");
    } else if found.text == ".." {
        d = d.with_note("`..` only appears in slices (`x[0 .. 5]`) and shape variables (`..S`)");
    } else if found.text == "=" && expected.iter().any(|e| e == OPERATOR) {
        d = d.with_help("to bind a name write `let name = …`; to update a state write `name := …`");
    } else if found.text == "^" {
        d = d.with_note("`^` is an operator; its operands cannot be empty");
    }

    // An unclosed bracket whose closer is what we wanted, or that is still open at the end.
    if let Some(&(at, open)) = open_brackets_at(laid, pos).last() {
        let closer = match open {
            '(' => "`)`",
            '[' => "`]`",
            _ => "`}`",
        };
        if expected.iter().any(|e| e == closer) || found.kind == FoundKind::EndOfFile {
            d = d.with_label(Span::new(id, at, at + 1), format!("unclosed `{open}`"));
        }
    }
    d
}
