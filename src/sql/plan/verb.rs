//! The keyword verbs sqlparser does not know, planned from their significant tokens:
//! `TRAIN [WITH (tune = on|off, tune_budget = SECONDS, sequence = on|off, sequence_budget = SECONDS)]`, `EVALUATE` and
//! `IMPORT ...`, `EXPORT USER ...`, `SET RETENTION ...`, `COMPACT` and `BACKUP TO ...`.

use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Error, Result};
use crate::import::OnError;
use crate::sql::parse::{syntax_error, Pos, Verb};

use super::{Import, Plan, TrainSettings};

/// Plans a keyword verb; `tokens` are the statement's significant tokens, the verb first,
/// and `end` is the position of the statement's end.
pub(super) fn plan(verb: Verb, tokens: &[TokenWithSpan], end: Pos) -> Result<Plan> {
    let mut c = Cursor { tokens, i: 1, end };
    let plan = match verb {
        Verb::Train => train(&mut c)?,
        Verb::Evaluate => Plan::Evaluate,
        Verb::Import => import(&mut c)?,
        Verb::Export => export(&mut c)?,
        Verb::Set => set(&mut c)?,
        Verb::Compact => Plan::Compact,
        Verb::Backup => {
            c.expect_keyword("TO")?;
            Plan::Backup {
                path: c.string("a directory path")?,
            }
        }
    };
    c.expect_end()?;
    Ok(plan)
}

/// A cursor over the significant tokens of a keyword verb.
struct Cursor<'a> {
    tokens: &'a [TokenWithSpan],
    i: usize,
    end: Pos,
}

impl Cursor<'_> {
    fn pos(&self) -> Pos {
        self.tokens
            .get(self.i)
            .map_or(self.end, |t| t.span.start.into())
    }

    fn found(&self) -> String {
        match self.tokens.get(self.i) {
            Some(t) => format!("{}", t.token),
            None => "end of statement".to_string(),
        }
    }

    fn error(&self, expected: &str) -> Error {
        syntax_error(
            self.pos(),
            format!("expected {expected}, found {}", self.found()),
        )
    }

    /// The next token if it is the unquoted keyword `word` (any case).
    fn eat(&mut self, word: &str) -> bool {
        let hit = matches!(self.tokens.get(self.i).map(|t| &t.token),
            Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect_keyword(&mut self, word: &str) -> Result<()> {
        if self.eat(word) {
            Ok(())
        } else {
            Err(self.error(word))
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        match self.tokens.get(self.i).map(|t| &t.token) {
            Some(Token::SingleQuotedString(s)) => {
                self.i += 1;
                Ok(s.clone())
            }
            _ => Err(self.error(&format!("{what} as a quoted string such as 'data/file'"))),
        }
    }

    /// The next token if it is `tok`.
    fn eat_token(&mut self, tok: &Token) -> bool {
        let hit = self.tokens.get(self.i).is_some_and(|t| &t.token == tok);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect_token(&mut self, tok: &Token) -> Result<()> {
        if self.eat_token(tok) {
            Ok(())
        } else {
            Err(self.error(&format!("{tok}")))
        }
    }

    /// An unquoted word (any case), lower-cased.
    fn word(&mut self, what: &str) -> Result<String> {
        match self.tokens.get(self.i).map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_none() => {
                self.i += 1;
                Ok(w.value.to_ascii_lowercase())
            }
            _ => Err(self.error(what)),
        }
    }

    /// A non-negative number.
    fn number(&mut self, what: &str) -> Result<f64> {
        match self.tokens.get(self.i).map(|t| &t.token) {
            Some(Token::Number(n, _)) => match n.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => {
                    self.i += 1;
                    Ok(x)
                }
                _ => Err(self.error(what)),
            },
            _ => Err(self.error(what)),
        }
    }

    fn expect_end(&self) -> Result<()> {
        if self.i < self.tokens.len() {
            Err(self.error("end of statement"))
        } else {
            Ok(())
        }
    }
}

/// `TRAIN [WITH (tune = on|off, tune_budget = SECONDS, sequence = on|off, sequence_budget = SECONDS)]`.
fn train(c: &mut Cursor<'_>) -> Result<Plan> {
    let mut settings = TrainSettings::default();
    if !c.eat("WITH") {
        return Ok(Plan::Train(settings));
    }
    c.expect_token(&Token::LParen)?;
    loop {
        let name = c.word("a setting: tune, tune_budget, sequence or sequence_budget")?;
        c.expect_token(&Token::Eq)?;
        let on_off = |c: &mut Cursor<'_>| -> Result<bool> {
            if c.eat("ON") || c.eat("TRUE") {
                Ok(true)
            } else if c.eat("OFF") || c.eat("FALSE") {
                Ok(false)
            } else {
                Err(c.error("on or off"))
            }
        };
        match name.as_str() {
            "tune" => settings.tune = Some(on_off(c)?),
            "sequence" => settings.sequence = Some(on_off(c)?),
            "tune_budget" => {
                settings.tune_budget_secs =
                    Some(c.number("a number of seconds such as 30")?.min(86_400.0));
            }
            "sequence_budget" => {
                settings.sequence_budget_secs =
                    Some(c.number("a number of seconds such as 60")?.min(86_400.0));
            }
            _ => {
                c.i = c.i.saturating_sub(2);
                return Err(c.error("a setting: tune, tune_budget, sequence or sequence_budget"));
            }
        }
        if c.eat_token(&Token::RParen) {
            return Ok(Plan::Train(settings));
        }
        c.expect_token(&Token::Comma)?;
    }
}

/// `IMPORT PRODUCTS FROM 'f' [ON ERROR SKIP|ABORT]`, `IMPORT EVENTS FROM 'f' [...]`,
/// `IMPORT SEQUENCES FROM 'f' [...]`, `IMPORT MOVIELENS FROM 'dir'`, `IMPORT KG FROM 'kg' LINKS 'link'`,
/// `IMPORT MODEL mf FROM 'dir' [WITH (skip_unknown = true)]`.
fn import(c: &mut Cursor<'_>) -> Result<Plan> {
    let on_error = |c: &mut Cursor<'_>| -> Result<OnError> {
        if !c.eat("ON") {
            return Ok(OnError::Abort);
        }
        c.expect_keyword("ERROR")?;
        if c.eat("SKIP") {
            Ok(OnError::Skip)
        } else if c.eat("ABORT") {
            Ok(OnError::Abort)
        } else {
            Err(c.error("SKIP or ABORT"))
        }
    };
    let import = if c.eat("PRODUCTS") {
        c.expect_keyword("FROM")?;
        let path = c.string("a file path")?;
        Import::Products {
            path,
            on_error: on_error(c)?,
        }
    } else if c.eat("EVENTS") {
        c.expect_keyword("FROM")?;
        let path = c.string("a file path")?;
        Import::Events {
            path,
            on_error: on_error(c)?,
        }
    } else if c.eat("SEQUENCES") {
        c.expect_keyword("FROM")?;
        let path = c.string("a file path")?;
        Import::Sequences {
            path,
            on_error: on_error(c)?,
        }
    } else if c.eat("MOVIELENS") {
        c.expect_keyword("FROM")?;
        Import::MovieLens {
            dir: c.string("a directory path")?,
        }
    } else if c.eat("MODEL") {
        if !c.eat("MF") {
            return Err(c.error("mf after IMPORT MODEL (the model with factors)"));
        }
        c.expect_keyword("FROM")?;
        let dir = c.string("a directory path")?;
        let mut skip_unknown = false;
        if c.eat("WITH") {
            c.expect_token(&Token::LParen)?;
            if c.word("the setting skip_unknown")? != "skip_unknown" {
                c.i = c.i.saturating_sub(1);
                return Err(c.error("the setting skip_unknown"));
            }
            c.expect_token(&Token::Eq)?;
            skip_unknown = if c.eat("TRUE") || c.eat("ON") {
                true
            } else if c.eat("FALSE") || c.eat("OFF") {
                false
            } else {
                return Err(c.error("true or false"));
            };
            c.expect_token(&Token::RParen)?;
        }
        Import::Mf { dir, skip_unknown }
    } else if c.eat("KG") {
        c.expect_keyword("FROM")?;
        let kg = c.string("a .kg file path")?;
        c.expect_keyword("LINKS")?;
        let links = c.string("a .link file path")?;
        Import::Kg { kg, links }
    } else {
        return Err(c.error("PRODUCTS, EVENTS, SEQUENCES, MOVIELENS, MODEL or KG after IMPORT"));
    };
    Ok(Plan::Import(import))
}

/// `EXPORT USER 'u' TO 'file.json'`, `EXPORT EVENTS | PRODUCTS | MODEL mf TO 'dir'`.
fn export(c: &mut Cursor<'_>) -> Result<Plan> {
    let data = if c.eat("EVENTS") {
        Some(super::ExportData::Events)
    } else if c.eat("PRODUCTS") {
        Some(super::ExportData::Products)
    } else if c.eat("MODEL") {
        if !c.eat("MF") {
            return Err(c.error("mf after EXPORT MODEL (the model with factors)"));
        }
        Some(super::ExportData::Mf)
    } else {
        None
    };
    if let Some(data) = data {
        c.expect_keyword("TO")?;
        let path = c.string("a directory path")?;
        return Ok(Plan::Export { data, path });
    }
    if !c.eat("USER") {
        return Err(c.error("USER, EVENTS, PRODUCTS or MODEL after EXPORT"));
    }
    let user = c.string("a user id")?;
    c.expect_keyword("TO")?;
    let path = c.string("a file path")?;
    Ok(Plan::ExportUser { user, path })
}

/// `SET RETENTION (max_age_days = N, max_events_per_user = M)` (either or both) or
/// `SET RETENTION OFF`.
fn set(c: &mut Cursor<'_>) -> Result<Plan> {
    if !c.eat("RETENTION") {
        return Err(c.error("RETENTION after SET"));
    }
    if c.eat("OFF") || c.eat("NONE") {
        return Ok(Plan::SetRetention(None));
    }
    c.expect_token(&Token::LParen)?;
    let mut policy = crate::retention::Retention::default();
    let expected = "a rule: max_age_days or max_events_per_user";
    loop {
        let name = c.word(expected)?;
        c.expect_token(&Token::Eq)?;
        let at = c.i;
        let n = c.number("a whole number such as 365")?;
        if n.fract() != 0.0 || n > f64::from(u32::MAX) {
            c.i = at;
            return Err(c.error("a whole number such as 365"));
        }
        let n = n as u32;
        match name.as_str() {
            "max_age_days" => policy.max_age_days = Some(n),
            "max_events_per_user" => policy.max_events_per_user = Some(n),
            _ => {
                c.i = c.i.saturating_sub(3);
                return Err(c.error(expected));
            }
        }
        if c.eat_token(&Token::RParen) {
            break;
        }
        c.expect_token(&Token::Comma)?;
    }
    // Checked here too, so that EXPLAIN and the shell report a bad policy before running.
    policy.validate()?;
    Ok(Plan::SetRetention(Some(policy)))
}
