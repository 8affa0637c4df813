//! The expression language's syntax tree: what `parse` makes and `check`, `eval` and the
//! PyTorch export read. Every node keeps the column (1-based, in characters) where it starts
//! inside the expression, so errors and diagnoses can point at it.

use std::fmt;

/// Why an expression does not check: the column of the sub-expression at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based column inside the expression.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {}: {}", self.col, self.message)
    }
}

/// One node of an expression, with its column.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    /// What it is.
    pub kind: Kind,
    /// Where it starts: 1-based column, in characters, inside the expression text.
    pub col: usize,
}

/// The kinds of node.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A float literal (`2.0`, `1e-12`, `.5`, `1e0`): Python's `float`.
    Num(f64),
    /// An integer literal (`2`, `0`; `-1` is `Neg(Int(1))`): Python's `int`, which PyTorch's
    /// integer arguments (`dim`, a `reshape`'s sizes) take and a float literal is refused for.
    Int(i64),
    /// `true` or `false` (`True`, `False`), for keyword arguments such as `keepdim`.
    Bool(bool),
    /// A string in quotes (`'sum'`), for keyword arguments such as a loss's `reduction`.
    Str(String),
    /// A name: `x`, `p`, `y`, `mask`, a constant or an earlier named output.
    Name(String),
    /// Unary minus.
    Neg(Box<Ast>),
    /// A binary operator.
    Bin(BinOp, Box<Ast>, Box<Ast>),
    /// A call `f(a, b, dim=1)`: the function's name, positional and keyword arguments.
    Call(String, Vec<Ast>, Vec<(String, Ast)>),
    /// A parenthesised tuple `(2, -1)` (a `reshape`'s shape, a `dim` of several).
    Tuple(Vec<Ast>),
}

/// The binary operators, by PyTorch's (Python's) precedence: comparisons lowest, then `+ -`,
/// then `* / @`, then `**` (which binds tighter than unary minus on its left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `**`
    Pow,
    /// `@`, `torch.matmul`.
    MatMul,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl BinOp {
    /// Its symbol, as written in the expression and in Python.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "**",
            BinOp::MatMul => "@",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
        }
    }

    /// Whether it compares, giving a 0/1 mask.
    pub fn compares(self) -> bool {
        match self {
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => true,
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Pow | BinOp::MatMul => false,
        }
    }
}

impl Ast {
    /// Every name the expression reads (variables and constants; not function names), in order
    /// of first appearance, each with the column of its first use.
    pub fn names(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        self.walk(&mut |a| {
            if let Kind::Name(n) = &a.kind {
                if !out.iter().any(|(m, _)| m == n) {
                    out.push((n.clone(), a.col));
                }
            }
        });
        out
    }

    /// Calls `f` on this node and every node under it, parents first.
    pub fn walk(&self, f: &mut dyn FnMut(&Ast)) {
        f(self);
        match &self.kind {
            Kind::Num(_) | Kind::Int(_) | Kind::Bool(_) | Kind::Str(_) | Kind::Name(_) => {}
            Kind::Neg(a) => a.walk(f),
            Kind::Bin(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Kind::Call(_, args, kwargs) => {
                args.iter().for_each(|a| a.walk(f));
                kwargs.iter().for_each(|(_, a)| a.walk(f));
            }
            Kind::Tuple(items) => items.iter().for_each(|a| a.walk(f)),
        }
    }
}

/// The expression written back in the language (fully parenthesised where it nests), for
/// messages and the diagnosis's "at `log(p)`".
impl fmt::Display for Ast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            // Each literal as it was written: an int as an int, a float as a float (`2.0`).
            Kind::Int(i) => write!(f, "{i}"),
            Kind::Num(v) => write!(f, "{v:?}"),
            Kind::Bool(b) => write!(f, "{b}"),
            Kind::Str(s) => write!(f, "'{s}'"),
            Kind::Name(n) => write!(f, "{n}"),
            Kind::Neg(a) => write!(f, "-{}", Paren(a)),
            Kind::Bin(op, a, b) => write!(f, "{} {} {}", Paren(a), op.symbol(), Paren(b)),
            Kind::Call(name, args, kwargs) => {
                write!(f, "{name}(")?;
                let items = args.iter().map(|a| a.to_string()).chain(kwargs.iter().map(|(k, v)| format!("{k}={v}")));
                write!(f, "{})", items.collect::<Vec<_>>().join(", "))
            }
            // A tuple of one is Python's `(x,)`: `(x)` would be the number.
            Kind::Tuple(items) if items.len() == 1 => write!(f, "({},)", items[0]),
            Kind::Tuple(items) => write!(f, "({})", items.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// A node in parentheses if it is an operator (so the text keeps the tree's grouping).
struct Paren<'a>(&'a Ast);

impl fmt::Display for Paren<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.kind {
            Kind::Bin(..) | Kind::Neg(_) => write!(f, "({})", self.0),
            Kind::Num(v) if v < 0.0 => write!(f, "({})", self.0),
            Kind::Num(_) | Kind::Int(_) | Kind::Bool(_) | Kind::Str(_) | Kind::Name(_) | Kind::Call(..) | Kind::Tuple(_) => write!(f, "{}", self.0),
        }
    }
}
