//! Text to one parsed statement: the guards, splitting a script at `;`, recognising the
//! keyword verbs sqlparser does not know, and error positions.
//!
//! Everything goes through sqlparser's tokenizer, so strings, quoted identifiers and comments
//! are recognised exactly as the parser will see them (a `;` inside `'a;b'` does not end a
//! statement). `TRAIN`, `EVALUATE` and `IMPORT ...` are recognised here by a keyword match on
//! the tokens and handed on as tokens (`plan` plans them); everything else is handed to
//! sqlparser's parser.
//!
//! Architecture Invariant: nothing here recurses on the input. The tokenizer is iterative,
//! the parser has a recursion limit, and the operator guard bounds the left-deep chains
//! (`a AND b AND c ...`) the parser builds without recursing but which every later walk of
//! the tree (including dropping it) does recurse on.

use std::fmt;

use sqlparser::ast::Statement;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::error::{Error, Result};

/// Longest statement accepted, in bytes (1 MiB: an `INSERT` of a thousand 64-d vectors is
/// about 700 KB). Longer statements get [`Error::LimitExceeded`]; split them.
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// Most infix and postfix operators (`AND`, `=`, `+`, `::`, ...) in one statement.
///
/// sqlparser builds `a AND b AND c ...` as a left-deep tree without recursing, but dropping,
/// printing or walking that tree recurses once per operator: 50,000 of them overflow a
/// 2 MiB thread stack. A thousand conditions is far beyond any real `WHERE`.
pub const MAX_OPERATORS: usize = 1000;

/// sqlparser's own recursion limit (its default, kept explicit): parentheses, brackets,
/// function calls and `NOT` nest at most this deep.
const RECURSION_LIMIT: usize = 50;

/// A position in a statement or script: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<Location> for Pos {
    fn from(l: Location) -> Self {
        Pos {
            line: l.line,
            column: l.column,
        }
    }
}

/// A syntax error at a position.
pub(crate) fn syntax_error(pos: Pos, message: impl fmt::Display) -> Error {
    Error::Syntax(format!("syntax error at {pos}: {message}"))
}

/// A statement that parsed but cannot be planned, at the offending expression.
pub(crate) fn plan_error(pos: Pos, message: impl fmt::Display) -> Error {
    Error::Syntax(format!("error at {pos}: {message}"))
}

/// A statement cut out of a script by [`split_script`], with the position of its first
/// character in the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The statement's text, without the terminating `;`.
    pub text: String,
    /// Line of the first character (1-based).
    pub line: u64,
    /// Column of the first character (1-based, in characters).
    pub column: u64,
}

/// Whether a buffer typed into the shell is ready to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completeness {
    /// Only whitespace and comments.
    Empty,
    /// More input is needed: no terminating `;` yet, or an open string or comment.
    Incomplete,
    /// Ends with `;` (or cannot be tokenized for a reason more input will not fix).
    Complete,
}

/// Whether `buffer` holds complete statements (the last one terminated by `;`).
pub fn is_complete(buffer: &str) -> Completeness {
    let dialect = GenericDialect {};
    match Tokenizer::new(&dialect, buffer).tokenize() {
        Err(e)
            if e.message.starts_with("Unterminated") || e.message.starts_with("Unexpected EOF") =>
        {
            Completeness::Incomplete
        }
        Err(_) => Completeness::Complete,
        Ok(tokens) => match tokens
            .iter()
            .rev()
            .find(|t| !matches!(t, Token::Whitespace(_)))
        {
            None => Completeness::Empty,
            Some(Token::SemiColon) => Completeness::Complete,
            Some(_) => Completeness::Incomplete,
        },
    }
}

/// Byte offsets of line starts, to turn token locations back into slices of the text.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    fn offset(&self, loc: Location) -> usize {
        let Some(&start) = usize::try_from(loc.line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|l| self.starts.get(l))
        else {
            return self.text.len();
        };
        let skip = usize::try_from(loc.column.saturating_sub(1)).unwrap_or(usize::MAX);
        let rest = self.text.get(start..).unwrap_or("");
        start + rest.char_indices().nth(skip).map_or(rest.len(), |(i, _)| i)
    }
}

/// Splits a script into statements at every `;` outside strings, quoted identifiers and
/// comments. Empty statements are dropped; the last statement needs no `;`.
///
/// # Errors
/// [`Error::Syntax`] with the position of an unterminated string or comment.
pub fn split_script(script: &str) -> Result<Vec<Source>> {
    let tokens = tokenize(script, Pos { line: 1, column: 1 })?;
    let index = LineIndex::new(script);
    let mut out = Vec::new();
    let mut current: Option<(Location, Location)> = None;
    let mut flush = |current: &mut Option<(Location, Location)>| {
        if let Some((start, end)) = current.take() {
            let (a, b) = (index.offset(start), index.offset(end));
            out.push(Source {
                text: script.get(a..b.max(a)).unwrap_or("").to_string(),
                line: start.line,
                column: start.column,
            });
        }
    };
    for t in &tokens {
        match t.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => flush(&mut current),
            _ => match &mut current {
                Some((_, end)) => *end = t.span.end,
                None => current = Some((t.span.start, t.span.end)),
            },
        }
    }
    flush(&mut current);
    Ok(out)
}

/// Moves a location in a statement to the script position `origin` the statement starts at.
fn shift(loc: Location, origin: Pos) -> Location {
    if loc.line == 0 {
        return loc;
    }
    let column = if loc.line == 1 {
        loc.column + origin.column.saturating_sub(1)
    } else {
        loc.column
    };
    Location::new(loc.line + origin.line.saturating_sub(1), column)
}

fn tokenize(text: &str, origin: Pos) -> Result<Vec<TokenWithSpan>> {
    let dialect = GenericDialect {};
    let mut tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            let mut message = lower_first(&e.message);
            if message.starts_with("unterminated") {
                message.push_str("; expected the closing quote");
            }
            syntax_error(shift(e.location, origin).into(), message)
        })?;
    if origin != (Pos { line: 1, column: 1 }) {
        for t in &mut tokens {
            t.span = Span::new(shift(t.span.start, origin), shift(t.span.end, origin));
        }
    }
    Ok(tokens)
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One statement, parsed.
pub(crate) enum Parsed {
    /// A statement of sqlparser's grammar.
    Sql {
        statement: Box<Statement>,
        /// Position of the first token.
        start: Pos,
    },
    /// A keyword verb sqlparser does not know, planned from its tokens by `plan`.
    Verb {
        /// Which verb.
        verb: Verb,
        /// The statement's significant tokens, the verb first, without a trailing `;`.
        tokens: Vec<TokenWithSpan>,
        /// Position of the end of the statement.
        end: Pos,
    },
}

/// The keyword verbs sqlparser does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    /// `TRAIN [WITH (...)]`.
    Train,
    /// `EVALUATE`.
    Evaluate,
    /// `IMPORT ...`.
    Import,
    /// `EXPORT USER 'u' TO 'file.json'`.
    Export,
    /// `SET RETENTION ...`.
    Set,
    /// `COMPACT`.
    Compact,
    /// `BACKUP TO 'dir'`.
    Backup,
}

fn significant(t: &TokenWithSpan) -> bool {
    !matches!(t.token, Token::Whitespace(_))
}

fn is_literal(t: &Token) -> bool {
    matches!(
        t,
        Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
    )
}

/// Keywords that extend an expression to their left (infix or postfix).
const OPERATOR_WORDS: &[&str] = &[
    "AND", "OR", "XOR", "NOT", "IS", "LIKE", "ILIKE", "BETWEEN", "IN", "COLLATE", "AT", "SIMILAR",
    "REGEXP", "RLIKE", "OVERLAPS", "DIV", "MOD", "MEMBER", "GLOB", "MATCH", "ESCAPE", "OPERATOR",
    "SOUNDS",
];

/// Counts the tokens that can make the parser build one more level of a left-deep tree.
/// Unary `-`/`+` (after an operator, `(`, `[` or `,`) are not counted, so vectors of negative
/// numbers cost nothing.
fn count_operators(tokens: &[&TokenWithSpan]) -> usize {
    let mut n = 0;
    let mut prev: Option<&Token> = None;
    for t in tokens {
        let counted = match &t.token {
            Token::Word(w) => {
                w.quote_style.is_none()
                    && OPERATOR_WORDS
                        .iter()
                        .any(|o| w.value.eq_ignore_ascii_case(o))
            }
            Token::Minus | Token::Plus => prev.is_some_and(|p| {
                is_literal(p) || matches!(p, Token::Word(_) | Token::RParen | Token::RBracket)
            }),
            tok if is_literal(tok) => false,
            Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::LBracket
            | Token::RBracket
            | Token::SemiColon
            | Token::RArrow
            | Token::EOF
            | Token::Whitespace(_) => false,
            _ => true,
        };
        if counted {
            n += 1;
        }
        prev = Some(&t.token);
    }
    n
}

/// Parses one statement of `source` (a trailing `;` is allowed).
pub(crate) fn parse(source: &Source) -> Result<Parsed> {
    if source.text.len() > MAX_STATEMENT_BYTES {
        return Err(Error::LimitExceeded {
            what: "statement bytes",
            got: source.text.len(),
            limit: MAX_STATEMENT_BYTES,
        });
    }
    let origin = Pos {
        line: source.line.max(1),
        column: source.column.max(1),
    };
    let tokens = tokenize(&source.text, origin)?;
    let mut sig: Vec<&TokenWithSpan> = tokens.iter().filter(|t| significant(t)).collect();
    while sig.last().is_some_and(|t| t.token == Token::SemiColon) {
        sig.pop();
    }
    let Some(first) = sig.first() else {
        return Err(syntax_error(origin, "empty statement; expected SELECT, INSERT, DELETE, EXPLAIN, SHOW, DESCRIBE, TRAIN, EVALUATE or IMPORT"));
    };
    let start: Pos = first.span.start.into();
    let end: Pos = sig.last().map_or(start, |t| t.span.end.into());
    if let Some(semi) = sig.iter().find(|t| t.token == Token::SemiColon) {
        return Err(syntax_error(
            semi.span.start.into(),
            "expected end of statement, found ';' (run several statements as a script)",
        ));
    }
    let ops = count_operators(&sig);
    if ops > MAX_OPERATORS {
        return Err(Error::LimitExceeded {
            what: "operators in one statement",
            got: ops,
            limit: MAX_OPERATORS,
        });
    }
    if let Token::Word(w) = &first.token {
        if w.quote_style.is_none() {
            let verb = match w.value.to_ascii_uppercase().as_str() {
                "TRAIN" => Some(Verb::Train),
                "EVALUATE" => Some(Verb::Evaluate),
                "IMPORT" => Some(Verb::Import),
                "EXPORT" => Some(Verb::Export),
                "SET" => Some(Verb::Set),
                "COMPACT" => Some(Verb::Compact),
                "BACKUP" => Some(Verb::Backup),
                _ => None,
            };
            if let Some(verb) = verb {
                return Ok(Parsed::Verb {
                    verb,
                    tokens: sig.into_iter().cloned().collect(),
                    end,
                });
            }
        }
    }
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens.clone());
    let mut statements = parser
        .parse_statements()
        .map_err(|e| parser_error(e, start, end))?;
    if statements.len() != 1 {
        return Err(syntax_error(start, "expected exactly one statement"));
    }
    match statements.pop() {
        Some(statement) => Ok(Parsed::Sql {
            statement: Box::new(statement),
            start,
        }),
        None => Err(syntax_error(start, "expected a statement")),
    }
}

/// Rewrites sqlparser's `Expected: X, found: Y at Line: L, Column: C` as
/// `syntax error at L:C: expected X, found Y`; errors at the end of input carry no location
/// in sqlparser, so they get the end of the statement.
fn parser_error(e: ParserError, start: Pos, end: Pos) -> Error {
    let message = match e {
        ParserError::RecursionLimitExceeded => {
            return syntax_error(
                start,
                format!(
                    "the statement nests deeper than {RECURSION_LIMIT} levels of parentheses, brackets, function calls or NOT"
                ),
            )
        }
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
    };
    let (text, pos) = match message.rfind(" at Line: ") {
        Some(i) => {
            let loc = &message[i + " at Line: ".len()..];
            let mut parts = loc.split(", Column: ");
            let line = parts.next().and_then(|l| l.trim().parse::<u64>().ok());
            let column = parts.next().and_then(|c| c.trim().parse::<u64>().ok());
            match (line, column) {
                (Some(line), Some(column)) => (&message[..i], Pos { line, column }),
                _ => (message.as_str(), end),
            }
        }
        None => (message.as_str(), end),
    };
    let text = text
        .replace("Expected: ", "expected ")
        .replace(", found: EOF", ", found end of statement")
        .replace(", found: ", ", found ");
    syntax_error(pos, lower_first(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_strings_and_comments() {
        let s = "SELECT 'a;b' FROM products; -- c;\n/* ; */ TRAIN ;; SHOW STATS";
        let parts = split_script(s).map_err(|e| e.to_string());
        let parts = parts.as_deref().unwrap_or(&[]);
        let texts: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["SELECT 'a;b' FROM products", "TRAIN", "SHOW STATS"]);
        assert_eq!((parts[1].line, parts[1].column), (2, 9));
    }

    #[test]
    fn completeness() {
        assert_eq!(is_complete("  -- x\n"), Completeness::Empty);
        assert_eq!(is_complete("SELECT 1"), Completeness::Incomplete);
        assert_eq!(is_complete("SELECT ';"), Completeness::Incomplete);
        assert_eq!(is_complete("SELECT 1;"), Completeness::Complete);
    }

    #[test]
    fn end_of_input_errors_get_a_position() {
        let e = parse(&Source {
            text: "SELECT * FROM".into(),
            line: 3,
            column: 5,
        });
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with("syntax error at 3:18: expected identifier"),
            "{msg}"
        );
    }
}
