//! The expression parser, written with `winnow` (already in the build through `toml`, so it
//! costs no new crate): numbers, names, `+ - * / ** @`, unary minus, the comparisons
//! `< <= > >= == !=`, calls with positional and keyword arguments, parentheses and tuples,
//! strings in quotes (a loss's `reduction='sum'`),
//! with Python's precedence (so PyTorch's): `-x**2` is `-(x**2)`, `2**-1` is `2**(-1)`,
//! `a - b - c` is `(a - b) - c`, `a ** b ** c` is `a ** (b ** c)`. Comparisons do not chain
//! (`a < b < c` is refused: Python's meaning would be `a < b and b < c`, which has no tensor form).
//!
//! An error gives the column (1-based, in characters) inside the expression where the parser
//! stopped, and what it expected there.

use winnow::ascii::{float, multispace0};
use winnow::combinator::{alt, cut_err, opt, preceded, repeat, terminated};
use winnow::error::{ContextError, ErrMode, StrContext, StrContextValue};
use winnow::stream::Location;
use winnow::token::{literal, one_of, take_while};
use winnow::{LocatingSlice, ModalResult, Parser};

use super::ast::{Ast, BinOp, Kind};

type In<'a> = LocatingSlice<&'a str>;

/// Longest expression accepted, in bytes: a bound on the parser's work and recursion.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, calls and unary operators accepted.
pub const MAX_DEPTH: usize = 64;

/// A parse error: where in the expression and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based column in characters inside the expression.
    pub col: usize,
    /// What was expected or refused there.
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {}: {}", self.col, self.message)
    }
}

/// Parses an expression, or says at which column and why it does not parse.
pub fn parse(text: &str) -> Result<Ast, SyntaxError> {
    if text.len() > MAX_LEN {
        return Err(SyntaxError { col: 1, message: format!("the expression is {} bytes long, over the limit of {MAX_LEN}", text.len()) });
    }
    let mut ast = terminated(|i: &mut In<'_>| expr(i, 0), multispace0).parse(LocatingSlice::new(text)).map_err(|e| {
        let col = column(text, e.offset());
        let inner = e.inner();
        let message = match inner.to_string() {
            m if m.is_empty() => "unexpected text".to_string(),
            m => m,
        };
        SyntaxError { col, message }
    })?;
    to_columns(&mut ast, text);
    if depth(&ast) > MAX_DEPTH {
        return Err(SyntaxError { col: 1, message: format!("the expression nests deeper than {MAX_DEPTH} levels") });
    }
    Ok(ast)
}

/// The 1-based column, in characters, of byte offset `offset` of `text`.
pub fn column(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(offset, |s| s.chars().count()) + 1
}

fn depth(a: &Ast) -> usize {
    let below = match &a.kind {
        Kind::Num(_) | Kind::Int(_) | Kind::Bool(_) | Kind::Str(_) | Kind::Name(_) => 0,
        Kind::Neg(x) => depth(x),
        Kind::Bin(_, x, y) => depth(x).max(depth(y)),
        Kind::Call(_, args, kw) => args.iter().chain(kw.iter().map(|(_, v)| v)).map(depth).max().unwrap_or(0),
        Kind::Tuple(items) => items.iter().map(depth).max().unwrap_or(0),
    };
    below + 1
}

fn expected(what: &'static str) -> StrContext {
    StrContext::Expected(StrContextValue::Description(what))
}

/// The byte offset of the next token (after spaces); `parse` turns offsets into columns.
fn here(i: &mut In<'_>) -> ModalResult<usize> {
    multispace0.parse_next(i)?;
    Ok(i.current_token_start())
}

/// A final error saying what was expected instead.
fn fail(what: &'static str) -> ErrMode<ContextError> {
    let mut e = ContextError::new();
    e.push(expected(what));
    ErrMode::Cut(e)
}

/// Rewrites every node's byte offset (as the parser records it) into its 1-based column.
fn to_columns(a: &mut Ast, text: &str) {
    a.col = column(text, a.col);
    match &mut a.kind {
        Kind::Num(_) | Kind::Int(_) | Kind::Bool(_) | Kind::Str(_) | Kind::Name(_) => {}
        Kind::Neg(x) => to_columns(x, text),
        Kind::Bin(_, x, y) => {
            to_columns(x, text);
            to_columns(y, text);
        }
        Kind::Call(_, args, kw) => args.iter_mut().chain(kw.iter_mut().map(|(_, v)| v)).for_each(|x| to_columns(x, text)),
        Kind::Tuple(items) => items.iter_mut().for_each(|x| to_columns(x, text)),
    }
}

/// A comparison (lowest precedence), or what it reads.
fn expr(i: &mut In<'_>, d: usize) -> ModalResult<Ast> {
    if d > MAX_DEPTH {
        return Err(fail("a shallower expression (it nests too deep)"));
    }
    let lhs = sum(i, d)?;
    let cmp = opt(preceded(
        multispace0,
        alt((
            literal("<=").value(BinOp::Le),
            literal(">=").value(BinOp::Ge),
            literal("==").value(BinOp::Eq),
            literal("!=").value(BinOp::Ne),
            literal("<").value(BinOp::Lt),
            literal(">").value(BinOp::Gt),
        )),
    ))
    .parse_next(i)?;
    let Some(op) = cmp else { return Ok(lhs) };
    let rhs = cut_err(|i: &mut In<'_>| sum(i, d)).context(expected("an expression after the comparison")).parse_next(i)?;
    let col = lhs.col;
    let chained = opt(preceded(multispace0, one_of(['<', '>', '=', '!']))).parse_next(i)?;
    if chained.is_some() {
        return Err(fail("no second comparison (comparisons do not chain: write two and multiply the masks)"));
    }
    Ok(Ast { kind: Kind::Bin(op, Box::new(lhs), Box::new(rhs)), col })
}

/// `a + b - c`, left to right.
fn sum(i: &mut In<'_>, d: usize) -> ModalResult<Ast> {
    let first = product(i, d)?;
    let rest: Vec<(BinOp, Ast)> =
        repeat(0.., (preceded(multispace0, alt((one_of('+').value(BinOp::Add), one_of('-').value(BinOp::Sub)))), cut_err(|i: &mut In<'_>| product(i, d)).context(expected("an operand"))))
            .parse_next(i)?;
    Ok(fold(first, rest))
}

/// `a * b / c @ d`, left to right (Python puts `@` beside `*` and `/`).
fn product(i: &mut In<'_>, d: usize) -> ModalResult<Ast> {
    let first = unary(i, d)?;
    let op = preceded(multispace0, alt((terminated(one_of('*'), winnow::combinator::not(one_of('*'))).value(BinOp::Mul), one_of('/').value(BinOp::Div), one_of('@').value(BinOp::MatMul))));
    let rest: Vec<(BinOp, Ast)> = repeat(0.., (op, cut_err(|i: &mut In<'_>| unary(i, d)).context(expected("an operand")))).parse_next(i)?;
    Ok(fold(first, rest))
}

fn fold(first: Ast, rest: Vec<(BinOp, Ast)>) -> Ast {
    rest.into_iter().fold(first, |a, (op, b)| {
        let col = a.col;
        Ast { kind: Kind::Bin(op, Box::new(a), Box::new(b)), col }
    })
}

/// `-a`, `+a` or a power.
fn unary(i: &mut In<'_>, d: usize) -> ModalResult<Ast> {
    if d > MAX_DEPTH {
        return Err(fail("a shallower expression (it nests too deep)"));
    }
    let start = here(i)?;
    let sign = opt(one_of(['-', '+'])).parse_next(i)?;
    match sign {
        Some(s) => {
            let inner = cut_err(|i: &mut In<'_>| unary(i, d + 1)).context(expected("an operand after the sign")).parse_next(i)?;
            Ok(if s == '-' { Ast { kind: Kind::Neg(Box::new(inner)), col: start } } else { inner })
        }
        None => power(i, d),
    }
}

/// `a ** b`: binds tighter than a unary minus on its left, and its right side may carry one.
fn power(i: &mut In<'_>, d: usize) -> ModalResult<Ast> {
    let base = atom(i, d)?;
    let exp = opt(preceded((multispace0, literal("**")), cut_err(|i: &mut In<'_>| unary(i, d + 1)).context(expected("an exponent")))).parse_next(i)?;
    Ok(match exp {
        Some(e) => {
            let col = base.col;
            Ast { kind: Kind::Bin(BinOp::Pow, Box::new(base), Box::new(e)), col }
        }
        None => base,
    })
}

/// A number, a name, a call, a string or a parenthesised expression or tuple.
fn atom(i: &mut In<'_>, d: usize) -> ModalResult<Ast> {
    let col = here(i)?;
    let first = i.chars().next();
    match first {
        Some(c) if c.is_ascii_digit() || c == '.' => {
            let (v, written): (f64, &str) = float.with_taken().context(expected("a number")).parse_next(i)?;
            // Written without `.` or an exponent, it is an int, as Python reads it (one too
            // large for 64 bits stays a float: no PyTorch integer argument takes it).
            let int = written.chars().all(|c| c.is_ascii_digit()).then(|| written.parse::<i64>().ok()).flatten();
            Ok(Ast { kind: int.map_or(Kind::Num(v), Kind::Int), col })
        }
        Some(c) if c.is_ascii_alphabetic() || c == '_' => name_or_call(i, col, d),
        Some('(') => group(i, col, d),
        Some(q @ ('\'' | '"')) => {
            let body = preceded(
                one_of(q),
                cut_err(terminated(take_while(0.., |c: char| c.is_ascii_alphanumeric() || c == '_'), one_of(q))).context(expected("a closing quote after letters, digits and `_`")),
            )
            .parse_next(i)?;
            Ok(Ast { kind: Kind::Str(body.to_string()), col })
        }
        _ => {
            let mut e = ContextError::new();
            e.push(expected("a number, a name, a call or `(`"));
            Err(ErrMode::Backtrack(e))
        }
    }
}

fn ident<'a>(i: &mut In<'a>) -> ModalResult<&'a str> {
    (one_of(|c: char| c.is_ascii_alphabetic() || c == '_'), take_while(0.., |c: char| c.is_ascii_alphanumeric() || c == '_')).take().parse_next(i)
}

fn name_or_call(i: &mut In<'_>, col: usize, d: usize) -> ModalResult<Ast> {
    let name = ident(i)?.to_string();
    let open = opt(preceded(multispace0, one_of('('))).parse_next(i)?;
    if open.is_none() {
        return Ok(Ast {
            kind: match name.as_str() {
                "true" | "True" => Kind::Bool(true),
                "false" | "False" => Kind::Bool(false),
                _ => Kind::Name(name),
            },
            col,
        });
    }
    let (mut args, mut kwargs) = (Vec::new(), Vec::new());
    loop {
        multispace0.parse_next(i)?;
        if opt(one_of(')')).parse_next(i)?.is_some() {
            break;
        }
        let key = opt(terminated(ident, (multispace0, one_of('='), winnow::combinator::not(one_of('='))))).parse_next(i)?;
        let value = cut_err(|i: &mut In<'_>| expr(i, d + 1)).context(expected("an argument")).parse_next(i)?;
        match key {
            Some(k) => kwargs.push((k.to_string(), value)),
            None if !kwargs.is_empty() => return Err(fail("a keyword argument (a positional one cannot follow keywords)")),
            None => args.push(value),
        }
        multispace0.parse_next(i)?;
        let sep = cut_err(one_of([',', ')'])).context(expected("`,` or `)`")).parse_next(i)?;
        if sep == ')' {
            break;
        }
    }
    Ok(Ast { kind: Kind::Call(name, args, kwargs), col })
}

fn group(i: &mut In<'_>, col: usize, d: usize) -> ModalResult<Ast> {
    one_of('(').parse_next(i)?;
    let mut items = vec![cut_err(|i: &mut In<'_>| expr(i, d + 1)).context(expected("an expression")).parse_next(i)?];
    let mut tuple = false;
    loop {
        multispace0.parse_next(i)?;
        let sep = cut_err(one_of([',', ')'])).context(expected("`,` or `)`")).parse_next(i)?;
        if sep == ')' {
            break;
        }
        tuple = true;
        multispace0.parse_next(i)?;
        if opt(one_of(')')).parse_next(i)?.is_some() {
            break;
        }
        items.push(cut_err(|i: &mut In<'_>| expr(i, d + 1)).context(expected("an expression")).parse_next(i)?);
    }
    if tuple {
        return Ok(Ast { kind: Kind::Tuple(items), col });
    }
    Ok(items.pop().map_or(Ast { kind: Kind::Tuple(Vec::new()), col }, |a| a))
}
