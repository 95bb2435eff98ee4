//! A Go `text/template` interpreter for user-defined injection templates (Istio's
//! `sidecarInjectorWebhook.templates`, mizzen's `spec.injection.templates`), over JSON data.
//!
//! Supported: text with `{{ }}` actions and `{{-`/`-}}` trimming, comments, pipelines with `|`, parenthesised
//! sub-pipelines, variables (`$x := …`, `$x = …`, `$`), field chains on `.` and variables, `if`/`else if`/`else`,
//! `range` (with `$i, $v :=` and `else`), `with`/`else`, `define`/`template`, and the functions Istio's templates
//! use (Go's builtins, Istio's own such as `annotation`, `isset`, `valueOrDefault`, `toJSON`, `otelResourceAttributes`,
//! and the Sprig ones such as `default`, `quote`, `toYaml`, `indent`, `contains`, `join`, `list`, `append`). Anything
//! else is an error naming the template and the function. Data is JSON: a field `.Name` is found as the key `Name`,
//! else `name`, else case-insensitively (`APIVersion` finds `apiVersion`), so Kubernetes objects read as Go structs
//! do; a missing field is empty (where Go would print `<no value>` for a missing map key).
//!
//! The template comes from the MeshInstall but the data from the pod under admission, and both run inside the
//! webhook, so malformed input is an error, never a panic (the text and every list are read with checked
//! accessors), and everything a template can make the evaluator do is bounded: nesting ([`MAX_NESTING`],
//! [`MAX_EXEC_NESTING`], [`MAX_DEPTH`], [`MAX_VALUE_DEPTH`]), steps ([`MAX_STEPS`]), the bytes of values copied or
//! built ([`MAX_WORK`]), one built string or list ([`MAX_VALUE`]) and the output ([`MAX_OUTPUT`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Number, Value, json};

use super::gojson::GoEscapes;

/// Output larger than this is refused (a runaway template must not exhaust the webhook's memory).
pub const MAX_OUTPUT: usize = 4 << 20;
/// Nested `template` calls deeper than this are refused (recursion).
pub const MAX_DEPTH: usize = 64;
/// Executing more nodes and `range` iterations than this is refused (a template that branches into too much work).
pub const MAX_STEPS: usize = 1_000_000;
/// Blocks (`if`, `range`, `with`, `define`) or parentheses nested deeper than this are refused when parsing: the
/// parser and the evaluator recurse on them, and the webhook runs on 2 MiB thread stacks.
pub const MAX_NESTING: usize = 50;
/// Evaluation nested deeper than this (blocks, parentheses and `template` calls together, as `template`
/// recursion multiplies the nesting of the blocks it runs through) is refused. A level takes about 0.7 KiB of
/// stack in a release build, 2 KiB in a debug one.
pub const MAX_EXEC_NESTING: usize = 300;
/// Bytes (roughly their size in memory) of the values one execution may build, copy, or read whole (print,
/// compare, serialise): bounds the time and memory a template spends on values however it loops, at about a
/// quarter of a second.
pub const MAX_WORK: usize = 256 << 20;
/// A string (or `split`'s list) one function builds is refused once larger than this, as it grows.
pub const MAX_VALUE: usize = 16 << 20;
/// Lists and maps built by a template nested deeper than this are refused (printing, comparing and dropping a
/// value recurse on its nesting).
pub const MAX_VALUE_DEPTH: usize = 200;

/// A template that cannot be parsed or executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {name:?}: {message}")]
pub struct TemplateError {
    /// The template's name.
    pub name: String,
    /// What went wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct Pipeline {
    /// The variables it declares or assigns (shared names: declaring one is a step, not a copy).
    decl: Vec<Arc<str>>,
    assign: bool,
    commands: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    /// `if`, its `else if`s in order (a flat chain, so a long chain does not nest), then the `else` part.
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Template(String, Option<Pipeline>),
}

/// A parsed template and the templates it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    name: String,
    root: Vec<Node>,
    defines: BTreeMap<String, Vec<Node>>,
}

// ---------------------------------------------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Action(String),
}

/// Splits the text into literal text and the bodies of the actions, applying the `{{-`/`-}}` trimming.
fn split(name: &str, src: &str) -> Result<Vec<Piece>, TemplateError> {
    let err = |m: &str| TemplateError {
        name: name.to_owned(),
        message: m.to_owned(),
    };
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some((before, after)) = rest.split_once("{{") {
        let mut text = if trim_next { before.trim_start() } else { before };
        let body_src = match after.strip_prefix('-') {
            Some(body) if body.starts_with([' ', '\t', '\n']) => {
                text = text.trim_end();
                body
            }
            _ => after,
        };
        if !text.is_empty() {
            out.push(Piece::Text(text.to_owned()));
        }
        // A comment may contain "}}"; it ends at "*/" followed by the delimiter.
        let end = if body_src.trim_start().starts_with("/*") {
            let c = body_src.find("*/").ok_or_else(|| err("unclosed comment"))?;
            let k = body_src
                .get(c..)
                .and_then(|from| from.find("}}"))
                .ok_or_else(|| err("unclosed action"))?;
            c + k
        } else {
            find_close(body_src).ok_or_else(|| err("unclosed action: missing }}"))?
        };
        let (body, after_close) = body_src
            .split_at_checked(end)
            .and_then(|(body, close)| Some((body, close.strip_prefix("}}")?)))
            .ok_or_else(|| err("unclosed action: missing }}"))?;
        let (body, trim) = match body.strip_suffix('-') {
            Some(b) if b.ends_with([' ', '\t', '\n']) => (b, true),
            _ => (body, false),
        };
        trim_next = trim;
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push(Piece::Action(body.to_owned()));
        }
        rest = after_close;
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        out.push(Piece::Text(text.to_owned()));
    }
    Ok(out)
}

/// Byte position of the `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                i += 1;
                while let Some(&d) = b.get(i) {
                    if d == b'"' {
                        break;
                    }
                    if d == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while b.get(i).is_some_and(|&d| d != b'`') {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Num(Number),
    Open,
    Close,
    Pipe,
    Declare,
    Assign,
    Comma,
    Dot,
}

/// A read position in an action's text, always on a character boundary: every read is checked, so no input
/// can make the lexer index past the end or into a character.
struct Cursor<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Cursor<'s> {
    fn rest(&self) -> &'s str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Consumes characters while `keep` holds and returns them.
    fn eat_while(&mut self, keep: impl Fn(char) -> bool) -> &'s str {
        let rest = self.rest();
        let n = rest.find(|c| !keep(c)).unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or_default()
    }

    fn ident(&mut self) -> String {
        self.eat_while(|c| c.is_alphanumeric() || c == '_').to_owned()
    }

    /// A chain of `.name` fields (a name may be empty, as in `.A.`).
    fn fields(&mut self) -> Vec<String> {
        let mut path = Vec::new();
        while self.peek() == Some('.') {
            self.bump();
            path.push(self.ident());
        }
        path
    }
}

fn tokens(name: &str, s: &str) -> Result<Vec<Tok>, TemplateError> {
    let err = |m: String| TemplateError {
        name: name.to_owned(),
        message: m,
    };
    let mut cur = Cursor { src: s, pos: 0 };
    let mut out = Vec::new();
    while let Some(c) = cur.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                cur.bump();
            }
            '(' => {
                cur.bump();
                out.push(Tok::Open);
            }
            ')' => {
                cur.bump();
                out.push(Tok::Close);
                if cur.peek() == Some('.') {
                    out.push(Tok::Field(cur.fields()));
                }
            }
            '|' => {
                cur.bump();
                out.push(Tok::Pipe);
            }
            ',' => {
                cur.bump();
                out.push(Tok::Comma);
            }
            ':' if cur.peek_second() == Some('=') => {
                cur.bump();
                cur.bump();
                out.push(Tok::Declare);
            }
            '=' => {
                cur.bump();
                out.push(Tok::Assign);
            }
            '.' => {
                if cur.peek_second().is_some_and(|n| n.is_alphabetic() || n == '_') {
                    out.push(Tok::Field(cur.fields()));
                } else {
                    cur.bump();
                    out.push(Tok::Dot);
                }
            }
            '$' => {
                cur.bump();
                let name = cur.ident();
                let path = cur.fields();
                out.push(Tok::Var(format!("${name}"), path));
            }
            '"' => {
                cur.bump();
                let mut text = String::new();
                loop {
                    let ch = cur.bump().ok_or_else(|| err("unterminated string".into()))?;
                    match ch {
                        '"' => break,
                        '\\' => {
                            let e = cur.bump().ok_or_else(|| err("unterminated string".into()))?;
                            text.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        other => text.push(other),
                    }
                }
                out.push(Tok::Str(text));
            }
            '`' => {
                cur.bump();
                let text = cur.eat_while(|c| c != '`');
                if cur.bump().is_none() {
                    return Err(err("unterminated raw string".into()));
                }
                out.push(Tok::Str(text.to_owned()));
            }
            c if c.is_ascii_digit() || (c == '-' && cur.peek_second().is_some_and(|n| n.is_ascii_digit())) => {
                let start = cur.pos;
                cur.bump();
                cur.eat_while(|c| c.is_ascii_digit() || c == '.');
                let text = s.get(start..cur.pos).unwrap_or_default();
                let n = text
                    .parse::<i64>()
                    .map(Number::from)
                    .ok()
                    .or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64))
                    .ok_or_else(|| err(format!("bad number {text:?}")))?;
                out.push(Tok::Num(n));
            }
            c if c.is_alphabetic() || c == '_' => out.push(Tok::Word(cur.ident())),
            other => return Err(err(format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------- parsing

struct Parser<'a> {
    name: &'a str,
    pieces: std::vec::IntoIter<Piece>,
    /// Blocks open around the list being parsed.
    depth: usize,
    defines: BTreeMap<String, Vec<Node>>,
}

/// How a list of nodes ended.
enum Stop {
    Eof,
    End,
    Else(Vec<Tok>),
}

impl Parser<'_> {
    fn err(&self, m: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_owned(),
            message: m.into(),
        }
    }

    fn list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        if self.depth >= MAX_NESTING {
            return Err(self.err(format!("blocks nested more than {MAX_NESTING} deep")));
        }
        self.depth += 1;
        let r = self.list_body();
        self.depth -= 1;
        r
    }

    fn list_body(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            let action = match piece {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Piece::Action(a) => a,
            };
            let toks = tokens(self.name, &action)?;
            let Some((Tok::Word(first), rest)) = toks.split_first() else {
                nodes.push(Node::Action(self.pipeline(&toks, 0)?));
                continue;
            };
            match first.as_str() {
                "end" => return Ok((nodes, Stop::End)),
                "else" => return Ok((nodes, Stop::Else(rest.to_vec()))),
                "if" => nodes.push(self.if_chain(rest)?),
                "range" | "with" => nodes.push(self.block(first, rest)?),
                "define" => self.define(rest)?,
                "template" => nodes.push(self.template_call(rest)?),
                "block" | "break" | "continue" => return Err(self.err(format!("{first} is not supported"))),
                _ => nodes.push(Node::Action(self.pipeline(&toks, 0)?)),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// A `range` or `with` block.
    fn block(&mut self, keyword: &str, rest: &[Tok]) -> Result<Node, TemplateError> {
        let pipe = self.pipeline(rest, 0)?;
        let (body, end) = self.list()?;
        let otherwise = self.tail(keyword, end)?;
        Ok(if keyword == "range" {
            Node::Range(pipe, body, otherwise)
        } else {
            Node::With(pipe, body, otherwise)
        })
    }

    fn define(&mut self, rest: &[Tok]) -> Result<(), TemplateError> {
        let Some(Tok::Str(n)) = rest.first() else {
            return Err(self.err("define needs a quoted name"));
        };
        let (body, end) = self.list()?;
        if !matches!(end, Stop::End) {
            return Err(self.err(format!("define {n:?} without {{{{end}}}}")));
        }
        self.defines.insert(n.clone(), body);
        Ok(())
    }

    fn template_call(&self, rest: &[Tok]) -> Result<Node, TemplateError> {
        let Some((Tok::Str(n), data)) = rest.split_first() else {
            return Err(self.err("template needs a quoted name"));
        };
        let pipe = if data.is_empty() {
            None
        } else {
            Some(self.pipeline(data, 0)?)
        };
        Ok(Node::Template(n.clone(), pipe))
    }

    /// An `if` with its `else if` chain (one `end` closes them all) and `else` part.
    fn if_chain(&mut self, cond: &[Tok]) -> Result<Node, TemplateError> {
        let pipe = self.pipeline(cond, 0)?;
        let (body, mut end) = self.list()?;
        let mut branches = vec![(pipe, body)];
        let otherwise = loop {
            match end {
                Stop::End => break Vec::new(),
                Stop::Else(t) => match t.split_first() {
                    None => break self.block_end()?,
                    Some((Tok::Word(w), cond)) if w == "if" => {
                        let pipe = self.pipeline(cond, 0)?;
                        let (body, next) = self.list()?;
                        branches.push((pipe, body));
                        end = next;
                    }
                    Some(_) => return Err(self.err("unsupported else clause in if")),
                },
                Stop::Eof => return Err(self.err("unexpected end of template: if without {{end}}")),
            }
        };
        Ok(Node::If(branches, otherwise))
    }

    /// What follows the body of a `range` or `with`: nothing (`end`) or an `else` part.
    fn tail(&mut self, keyword: &str, end: Stop) -> Result<Vec<Node>, TemplateError> {
        match end {
            Stop::End => Ok(Vec::new()),
            Stop::Else(t) if t.is_empty() => self.block_end(),
            Stop::Else(_) => Err(self.err(format!("unsupported else clause in {keyword}"))),
            Stop::Eof => Err(self.err(format!("unexpected end of template: {keyword} without {{{{end}}}}"))),
        }
    }

    fn block_end(&mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, end) = self.list()?;
        match end {
            Stop::End => Ok(nodes),
            _ => Err(self.err("else without {{end}}")),
        }
    }

    /// The tokens inside a parenthesis whose `(` has been read, and those after its `)`.
    fn parenthesised<'t>(&self, toks: &'t [Tok]) -> Result<(&'t [Tok], &'t [Tok]), TemplateError> {
        let mut depth = 0usize;
        for (i, t) in toks.iter().enumerate() {
            match t {
                Tok::Open => depth += 1,
                Tok::Close if depth == 0 => {
                    if let Some((inner, [_, after @ ..])) = toks.split_at_checked(i) {
                        return Ok((inner, after));
                    }
                }
                Tok::Close => depth -= 1,
                _ => {}
            }
        }
        Err(self.err("unclosed parenthesis"))
    }

    /// A pipeline; `depth` counts the parentheses around it.
    fn pipeline(&self, toks: &[Tok], depth: usize) -> Result<Pipeline, TemplateError> {
        if depth > MAX_NESTING {
            return Err(self.err(format!("parentheses nested more than {MAX_NESTING} deep")));
        }
        let mut decl = Vec::new();
        let mut assign = false;
        let mut toks = toks;
        // `$a := …`, `$a, $b := …`, `$a = …`
        if let Some(p) = toks.iter().position(|t| matches!(t, Tok::Declare | Tok::Assign))
            && p > 0
            && let Some((names, [op, rest @ ..])) = toks.split_at_checked(p)
            && names
                .iter()
                .all(|t| matches!(t, Tok::Var(_, path) if path.is_empty()) || *t == Tok::Comma)
        {
            for t in names {
                if let Tok::Var(v, _) = t {
                    decl.push(Arc::from(v.as_str()));
                }
            }
            assign = *op == Tok::Assign;
            toks = rest;
        }
        let mut commands = Vec::new();
        let mut current = Vec::new();
        let mut rest = toks;
        while let Some((tok, after)) = rest.split_first() {
            rest = after;
            match tok {
                Tok::Pipe => {
                    if current.is_empty() {
                        return Err(self.err("empty command in pipeline"));
                    }
                    commands.push(std::mem::take(&mut current));
                }
                Tok::Open => {
                    let (inner, after) = self.parenthesised(after)?;
                    let inner = self.pipeline(inner, depth + 1)?;
                    let path = match after.split_first() {
                        Some((Tok::Field(p), after)) => {
                            rest = after;
                            p.clone()
                        }
                        _ => {
                            rest = after;
                            Vec::new()
                        }
                    };
                    current.push(Arg::Sub(Box::new(inner), path));
                }
                Tok::Close => return Err(self.err("unexpected )")),
                Tok::Word(w) => current.push(match w.as_str() {
                    "true" => Arg::Lit(Value::Bool(true)),
                    "false" => Arg::Lit(Value::Bool(false)),
                    "nil" => Arg::Lit(Value::Null),
                    _ => Arg::Ident(w.clone()),
                }),
                Tok::Field(p) => current.push(Arg::Field(p.clone())),
                Tok::Var(v, p) => current.push(Arg::Var(v.clone(), p.clone())),
                Tok::Str(s) => current.push(Arg::Lit(Value::String(s.clone()))),
                Tok::Num(n) => current.push(Arg::Lit(Value::Number(n.clone()))),
                Tok::Dot => current.push(Arg::Dot),
                Tok::Declare | Tok::Assign | Tok::Comma => return Err(self.err("unexpected := , or =")),
            }
        }
        if !current.is_empty() {
            commands.push(current);
        }
        if commands.is_empty() {
            return Err(self.err("missing value in action"));
        }
        Ok(Pipeline { decl, assign, commands })
    }
}

impl Template {
    /// Parses a template.
    pub fn parse(name: &str, src: &str) -> Result<Self, TemplateError> {
        let mut p = Parser {
            name,
            pieces: split(name, src)?.into_iter(),
            depth: 0,
            defines: BTreeMap::new(),
        };
        let (root, end) = p.list()?;
        match end {
            Stop::Eof => Ok(Self {
                name: name.to_owned(),
                root,
                defines: p.defines,
            }),
            Stop::End => Err(p.err("unexpected {{end}}")),
            Stop::Else(_) => Err(p.err("unexpected {{else}}")),
        }
    }

    /// Executes the template over `data`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        let mut ex = Exec {
            t: self,
            out: String::new(),
            vars: vec![(Arc::from("$"), Slot::Borrowed(data))],
            depth: 0,
            nesting: 0,
            steps: 0,
            work: 0,
        };
        ex.nodes(&self.root, &Slot::Borrowed(data))?;
        Ok(ex.out)
    }
}

// ---------------------------------------------------------------------------------------------------- execution

/// What `.` and variables hold: a part of the data or of the template's literals (borrowed, never copied), or a
/// value computed while running (shared by the variables and dots that hold it).
#[derive(Clone)]
enum Slot<'a> {
    Borrowed(&'a Value),
    Shared(Arc<Value>),
}

/// A value passed between commands and functions: a slot's, or one just built (which is charged as work).
enum Val<'a> {
    Borrowed(&'a Value),
    Shared(Arc<Value>),
    New(Value),
}

impl<'a> Val<'a> {
    fn get(&self) -> &Value {
        match self {
            Val::Borrowed(v) => v,
            Val::Shared(v) => v,
            Val::New(v) => v,
        }
    }

    fn into_slot(self) -> Slot<'a> {
        match self {
            Val::Borrowed(v) => Slot::Borrowed(v),
            Val::Shared(v) => Slot::Shared(v),
            Val::New(v) => Slot::Shared(Arc::new(v)),
        }
    }
}

impl<'a> From<Slot<'a>> for Val<'a> {
    fn from(s: Slot<'a>) -> Self {
        match s {
            Slot::Borrowed(v) => Val::Borrowed(v),
            Slot::Shared(v) => Val::Shared(v),
        }
    }
}

struct Exec<'a> {
    t: &'a Template,
    out: String,
    vars: Vec<(Arc<str>, Slot<'a>)>,
    /// Nested `template` calls.
    depth: usize,
    /// Nested evaluation: blocks, parentheses and `template` calls.
    nesting: usize,
    steps: usize,
    /// Work done on values so far, in the units of [`MAX_WORK`].
    work: usize,
}

/// Go's notion of "true" in `if`, `and`, `or`, `not`, `with`.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Go's `fmt.Sprint` of a value.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(to_text).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", to_text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Size of a `Value` in memory, what every value and array element costs besides its text.
const VALUE_BYTES: usize = 32;
/// What a map entry costs besides its key's text and its value (the key's `String` and its share of a B-tree node).
const ENTRY_BYTES: usize = 64;
/// The B-tree leaf a map of one or more entries allocates.
const MAP_BYTES: usize = 512;

/// Roughly the bytes a value takes in memory (what copying or traversing it costs) and how deeply it nests (a
/// scalar is 1). Iterative, so that measuring does not itself recurse.
fn measure(v: &Value) -> (usize, usize) {
    let (mut bytes, mut depth) = (0usize, 0);
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        depth = depth.max(d);
        bytes = bytes.saturating_add(VALUE_BYTES);
        match v {
            Value::String(s) => bytes = bytes.saturating_add(s.len()),
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(m) => {
                if !m.is_empty() {
                    bytes = bytes.saturating_add(MAP_BYTES);
                }
                for (k, x) in m {
                    bytes = bytes.saturating_add(ENTRY_BYTES + k.len());
                    stack.push((x, d + 1));
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    (bytes, depth)
}

/// The first of [`measure`]'s answers, without a traversal for scalars.
fn weight(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => VALUE_BYTES,
        Value::String(s) => VALUE_BYTES.saturating_add(s.len()),
        Value::Array(_) | Value::Object(_) => measure(v).0,
    }
}

/// The field `name` of an object: the key itself, else with its first letter lower-cased, else compared without
/// case. `scanned` grows by what the two fallbacks cost, in the units of [`MAX_WORK`].
fn field<'v>(v: &'v Value, name: &str, scanned: &mut usize) -> Option<&'v Value> {
    let m = v.as_object()?;
    if let Some(x) = m.get(name) {
        return Some(x);
    }
    *scanned = scanned.saturating_add(name.len());
    let mut lower = name.to_owned();
    if let Some(first) = lower.get_mut(0..1) {
        first.make_ascii_lowercase();
    }
    if let Some(x) = m.get(&lower) {
        return Some(x);
    }
    *scanned = scanned.saturating_add(m.len().saturating_mul(VALUE_BYTES));
    m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

static NULL: Value = Value::Null;

fn walk<'v>(v: &'v Value, path: &[String], scanned: &mut usize) -> &'v Value {
    let mut cur = v;
    for p in path {
        cur = field(cur, p, scanned).unwrap_or(&NULL);
    }
    cur
}

/// `index`: `v[k0][k1]…`; a missing key of a map is empty, a list index out of range an error.
fn index<'v>(v: &'v Value, keys: &[Val<'_>]) -> Result<&'v Value, String> {
    let mut cur = v;
    for k in keys {
        cur = match (cur, k.get()) {
            (Value::Object(m), k) => m.get(&to_text(k)).unwrap_or(&NULL),
            (Value::Array(a), Value::Number(i)) => i
                .as_u64()
                .and_then(|i| a.get(usize::try_from(i).ok()?))
                .ok_or_else(|| format!("index out of range: {i}"))?,
            (Value::Null, _) => &NULL,
            _ => return Err("can't index this value".into()),
        };
    }
    Ok(cur)
}

/// Text a function builds, refused once longer than [`MAX_VALUE`].
#[derive(Default)]
struct Built {
    text: String,
    /// Something did not fit.
    over: bool,
}

impl Built {
    /// Appends `s`; false (and nothing appended) if the text would exceed the limit.
    fn push(&mut self, s: &str) -> bool {
        if self.over || self.text.len().saturating_add(s.len()) > MAX_VALUE {
            self.over = true;
            return false;
        }
        self.text.push_str(s);
        true
    }
}

impl std::fmt::Write for Built {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.push(s) { Ok(()) } else { Err(std::fmt::Error) }
    }
}

impl<'a> Exec<'a> {
    fn err(&self, m: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.t.name.clone(),
            message: m.into(),
        }
    }

    fn write(&mut self, s: &str) -> Result<(), TemplateError> {
        if self.out.len().saturating_add(s.len()) > MAX_OUTPUT {
            return Err(self.err("output exceeds 4 MiB"));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn step(&mut self) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.err("template does too much work (more than a million steps)"));
        }
        Ok(())
    }

    /// Counts work against [`MAX_WORK`].
    fn charge(&mut self, bytes: usize) -> Result<(), TemplateError> {
        self.work = self.work.saturating_add(bytes);
        if self.work > MAX_WORK {
            return Err(self.too_much_work());
        }
        Ok(())
    }

    fn too_much_work(&self) -> TemplateError {
        self.err(format!(
            "template does too much work (more than {} MiB of values built, copied or read)",
            MAX_WORK >> 20
        ))
    }

    /// The value itself, copied (and charged, before copying) unless it is new or no longer shared.
    fn own(&mut self, v: Val<'a>) -> Result<Value, TemplateError> {
        let shared = match v {
            Val::New(v) => return Ok(v),
            Val::Shared(v) => match Arc::try_unwrap(v) {
                Ok(v) => return Ok(v),
                Err(shared) => shared,
            },
            Val::Borrowed(v) => {
                self.charge(weight(v))?;
                return Ok(v.clone());
            }
        };
        self.charge(weight(&shared))?;
        Ok((*shared).clone())
    }

    /// The field chain `path` of `v`: borrowed from the data or the template, copied out of a computed value.
    fn walk(&mut self, v: Val<'a>, path: &[String]) -> Result<Val<'a>, TemplateError> {
        if path.is_empty() {
            return Ok(v);
        }
        let mut scanned = 0;
        if let Val::Borrowed(v) = v {
            let found = walk(v, path, &mut scanned);
            self.charge(scanned)?;
            return Ok(Val::Borrowed(found));
        }
        let found = walk(v.get(), path, &mut scanned);
        self.charge(scanned.saturating_add(weight(found)))?;
        Ok(Val::New(found.clone()))
    }

    fn enter(&mut self) -> Result<(), TemplateError> {
        if self.nesting >= MAX_EXEC_NESTING {
            return Err(self.err(format!("evaluation nested more than {MAX_EXEC_NESTING} deep")));
        }
        self.nesting += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    /// Where the variable `name` is in scope (the innermost), charging the variables passed over to find it.
    fn find_var(&mut self, name: &str) -> Result<usize, TemplateError> {
        let found = self.vars.iter().rposition(|(n, _)| &**n == name);
        let passed = self.vars.len() - found.map_or(0, |i| i + 1);
        self.charge(passed.saturating_mul(VALUE_BYTES.saturating_add(name.len())))?;
        found.ok_or_else(|| self.err(format!("undefined variable {name}")))
    }

    fn var(&mut self, name: &str) -> Result<Slot<'a>, TemplateError> {
        let i = self.find_var(name)?;
        self.vars
            .get(i)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err(format!("undefined variable {name}")))
    }

    fn nodes(&mut self, nodes: &'a [Node], dot: &Slot<'a>) -> Result<(), TemplateError> {
        let mark = self.vars.len();
        for n in nodes {
            self.node(n, dot)?;
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn node(&mut self, n: &'a Node, dot: &Slot<'a>) -> Result<(), TemplateError> {
        self.step()?;
        self.enter()?;
        let r = self.node_body(n, dot);
        self.leave();
        r
    }

    // Each kind of node has a function of its own, so that the frames a nested template stacks up stay small.
    fn node_body(&mut self, n: &'a Node, dot: &Slot<'a>) -> Result<(), TemplateError> {
        match n {
            Node::Text(t) => self.write(t),
            Node::Action(p) => self.action(p, dot),
            Node::If(branches, otherwise) => self.if_chain(branches, otherwise, dot),
            Node::With(p, body, otherwise) => self.with(p, body, otherwise, dot),
            Node::Range(p, body, otherwise) => self.range(p, body, otherwise, dot),
            Node::Template(name, p) => self.template(name, p.as_ref(), dot),
        }
    }

    fn action(&mut self, p: &'a Pipeline, dot: &Slot<'a>) -> Result<(), TemplateError> {
        let v = self.pipeline(p, dot)?;
        if p.decl.is_empty() {
            let text = to_text(v.get());
            self.write(&text)?;
        }
        Ok(())
    }

    fn if_chain(
        &mut self,
        branches: &'a [(Pipeline, Vec<Node>)],
        otherwise: &'a [Node],
        dot: &Slot<'a>,
    ) -> Result<(), TemplateError> {
        // Each `else if` runs as an `if` inside the previous one's `else`: a step of its own, and the variables its
        // condition declares end with the chain.
        let mut mark = None;
        let mut run = otherwise;
        for (i, (p, body)) in branches.iter().enumerate() {
            if i > 0 {
                self.step()?;
                mark.get_or_insert(self.vars.len());
            }
            if truthy(self.pipeline(p, dot)?.get()) {
                run = body;
                break;
            }
        }
        let r = self.nodes(run, dot);
        if let Some(m) = mark {
            self.vars.truncate(m);
        }
        r
    }

    fn with(
        &mut self,
        p: &'a Pipeline,
        body: &'a [Node],
        otherwise: &'a [Node],
        dot: &Slot<'a>,
    ) -> Result<(), TemplateError> {
        let v = self.pipeline(p, dot)?;
        if truthy(v.get()) {
            self.nodes(body, &v.into_slot())
        } else {
            self.nodes(otherwise, dot)
        }
    }

    fn range(
        &mut self,
        p: &'a Pipeline,
        body: &'a [Node],
        otherwise: &'a [Node],
        dot: &Slot<'a>,
    ) -> Result<(), TemplateError> {
        let v = self.commands(&p.commands, dot)?;
        let items = self.items(v)?;
        if items.is_empty() {
            return self.nodes(otherwise, dot);
        }
        for (k, x) in items {
            // An iteration is a step even when its body is empty.
            self.step()?;
            let mark = self.vars.len();
            match p.decl.as_slice() {
                [] => {}
                [v] => self.vars.push((v.clone(), x.clone())),
                [i, v, ..] => {
                    self.vars.push((i.clone(), Slot::Shared(Arc::new(k))));
                    self.vars.push((v.clone(), x.clone()));
                }
            }
            self.nodes(body, &x)?;
            self.vars.truncate(mark);
        }
        Ok(())
    }

    fn template(&mut self, name: &str, p: Option<&'a Pipeline>, dot: &Slot<'a>) -> Result<(), TemplateError> {
        let t = self.t;
        let body = t
            .defines
            .get(name)
            .ok_or_else(|| self.err(format!("no template {name:?} defined")))?;
        let data = match p {
            Some(p) => self.pipeline(p, dot)?.into_slot(),
            None => Slot::Borrowed(&NULL),
        };
        if self.depth >= MAX_DEPTH {
            return Err(self.err("template calls nested too deeply"));
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.vars, vec![(Arc::from("$"), data.clone())]);
        let r = self.nodes(body, &data);
        self.vars = saved;
        self.depth -= 1;
        r
    }

    /// What `range` iterates over: (index or key, element) pairs.
    fn items(&mut self, v: Val<'a>) -> Result<Vec<(Value, Slot<'a>)>, TemplateError> {
        Ok(match v {
            Val::Borrowed(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, x)| (json!(i), Slot::Borrowed(x)))
                .collect(),
            Val::Borrowed(Value::Object(m)) => {
                // The keys are copied: a step per entry does not cover a long one.
                self.charge(m.keys().fold(0, |n: usize, k| n.saturating_add(k.len())))?;
                m.iter()
                    .map(|(k, x)| (Value::String(k.clone()), Slot::Borrowed(x)))
                    .collect()
            }
            v @ (Val::Shared(_) | Val::New(_)) if matches!(v.get(), Value::Array(_) | Value::Object(_)) => {
                match self.own(v)? {
                    Value::Array(a) => a
                        .into_iter()
                        .enumerate()
                        .map(|(i, x)| (json!(i), Slot::Shared(Arc::new(x))))
                        .collect(),
                    Value::Object(m) => m
                        .into_iter()
                        .map(|(k, x)| (Value::String(k), Slot::Shared(Arc::new(x))))
                        .collect(),
                    _ => Vec::new(),
                }
            }
            v => match v.get() {
                Value::Null => Vec::new(),
                Value::Number(n) => (0..n.as_u64().unwrap_or(0).min(1 << 16))
                    .map(|i| (json!(i), Slot::Shared(Arc::new(json!(i)))))
                    .collect(),
                other => return Err(self.err(format!("range can't iterate over {}", to_text(other)))),
            },
        })
    }

    /// Runs a pipeline and declares or assigns its variables, which share its value.
    fn pipeline(&mut self, p: &'a Pipeline, dot: &Slot<'a>) -> Result<Val<'a>, TemplateError> {
        let v = self.commands(&p.commands, dot)?;
        if p.decl.is_empty() {
            return Ok(v);
        }
        let v = v.into_slot();
        for name in &p.decl {
            if p.assign {
                let i = self.find_var(name)?;
                let Some(slot) = self.vars.get_mut(i) else {
                    return Err(self.err(format!("undefined variable {name}")));
                };
                slot.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v.into())
    }

    fn commands(&mut self, commands: &'a [Vec<Arg>], dot: &Slot<'a>) -> Result<Val<'a>, TemplateError> {
        let mut piped = None;
        for cmd in commands {
            piped = Some(self.command(cmd, dot, piped)?);
        }
        Ok(piped.unwrap_or(Val::Borrowed(&NULL)))
    }

    fn arg(&mut self, a: &'a Arg, dot: &Slot<'a>) -> Result<Val<'a>, TemplateError> {
        match a {
            Arg::Dot => Ok(dot.clone().into()),
            Arg::Field(path) => self.walk(dot.clone().into(), path),
            Arg::Var(name, path) => {
                let v = self.var(name)?;
                self.walk(v.into(), path)
            }
            Arg::Lit(v) => Ok(Val::Borrowed(v)),
            Arg::Sub(p, path) => {
                self.enter()?;
                let v = self.pipeline(p, dot);
                self.leave();
                self.walk(v?, path)
            }
            Arg::Ident(f) => self.call(f, Vec::new()),
        }
    }

    fn command(&mut self, cmd: &'a [Arg], dot: &Slot<'a>, piped: Option<Val<'a>>) -> Result<Val<'a>, TemplateError> {
        match cmd.split_first() {
            Some((Arg::Ident(f), rest)) => {
                // `and` and `or` stop at the deciding argument, as Go's do.
                if (f == "and" || f == "or") && piped.is_none() {
                    let mut last = Val::Borrowed(&NULL);
                    for a in rest {
                        last = self.arg(a, dot)?;
                        if truthy(last.get()) != (f == "and") {
                            return Ok(last);
                        }
                    }
                    return Ok(last);
                }
                let mut args = Vec::with_capacity(rest.len() + 1);
                for a in rest {
                    args.push(self.arg(a, dot)?);
                }
                args.extend(piped);
                self.call(f, args)
            }
            Some((a, [])) => {
                if piped.is_some() {
                    return Err(self.err("can't give an argument to a non-function"));
                }
                self.arg(a, dot)
            }
            Some(_) => Err(self.err("can't give an argument to a non-function")),
            None => Err(self.err("empty command")),
        }
    }

    /// Calls a function: charges what it reads of its arguments and the value it builds, and refuses a built value
    /// nested too deeply.
    fn call(&mut self, f: &str, args: Vec<Val<'a>>) -> Result<Val<'a>, TemplateError> {
        // Most functions read their arguments whole (print them, compare or serialise them); these look at one
        // key, the length or the truth of a value, whatever its size.
        let read = match f {
            "and" | "or" | "not" | "empty" | "default" | "valueOrDefault" | "env" | "len" => &[][..],
            "index" | "isset" | "annotation" => args.get(1..).unwrap_or_default(),
            _ => &args[..],
        };
        let read = read.iter().fold(0usize, |n, v| n.saturating_add(weight(v.get())));
        self.charge(read)?;
        let v = self.function(f, args)?;
        if let Val::New(built) = &v
            && !matches!(built, Value::Null | Value::Bool(_) | Value::Number(_))
        {
            let (bytes, depth) = measure(built);
            self.charge(bytes)?;
            if depth > MAX_VALUE_DEPTH {
                return Err(self.err(format!("{f}: value nested more than {MAX_VALUE_DEPTH} deep")));
            }
        }
        Ok(v)
    }

    fn arity(&self, f: &str, want: &str, n: usize) -> TemplateError {
        self.err(format!("wrong number of arguments for {f}: want {want}, got {n}"))
    }

    /// The arguments of a function that takes exactly `K`.
    fn exactly<T, const K: usize>(&self, f: &str, args: Vec<T>) -> Result<[T; K], TemplateError> {
        <[T; K]>::try_from(args).map_err(|args| self.arity(f, &K.to_string(), args.len()))
    }

    /// The first `K` arguments of a function that takes at least `K`, and the others.
    fn at_least<T, const K: usize>(&self, f: &str, mut args: Vec<T>) -> Result<([T; K], Vec<T>), TemplateError> {
        let n = args.len();
        let want = || format!("at least {K}");
        if n < K {
            return Err(self.arity(f, &want(), n));
        }
        let rest = args.split_off(K);
        let first = <[T; K]>::try_from(args).map_err(|_| self.arity(f, &want(), n))?;
        Ok((first, rest))
    }

    /// Text built from `pieces` joined by `sep` after `prefix`, refused past [`MAX_VALUE`].
    fn build<S: AsRef<str>>(
        &self,
        f: &str,
        prefix: &str,
        pieces: impl IntoIterator<Item = S>,
        sep: &str,
    ) -> Result<String, TemplateError> {
        let mut out = Built::default();
        out.push(prefix);
        for (i, p) in pieces.into_iter().enumerate() {
            if i > 0 {
                out.push(sep);
            }
            if !out.push(p.as_ref()) {
                return Err(self.too_big(f));
            }
        }
        if out.over { Err(self.too_big(f)) } else { Ok(out.text) }
    }

    fn too_big(&self, f: &str) -> TemplateError {
        self.err(format!("{f}: value larger than {} MiB", MAX_VALUE >> 20))
    }

    fn function(&mut self, f: &str, args: Vec<Val<'a>>) -> Result<Val<'a>, TemplateError> {
        let s = |v: &Val<'_>| to_text(v.get());
        let new = |v: Value| Ok(Val::New(v));
        match f {
            "and" | "or" => {
                let ([first], rest) = self.at_least::<_, 1>(f, args)?;
                let and = f == "and";
                let mut last = first;
                for v in rest {
                    if truthy(last.get()) != and {
                        break;
                    }
                    last = v;
                }
                Ok(last)
            }
            "not" => {
                let [a] = self.exactly(f, args)?;
                new(Value::Bool(!truthy(a.get())))
            }
            "eq" => {
                let ([a, b], rest) = self.at_least::<_, 2>(f, args)?;
                new(Value::Bool(
                    std::iter::once(&b).chain(&rest).any(|x| equal(a.get(), x.get())),
                ))
            }
            "ne" => {
                let [a, b] = self.exactly(f, args)?;
                new(Value::Bool(!equal(a.get(), b.get())))
            }
            "lt" | "le" | "gt" | "ge" => {
                let [a, b] = self.exactly(f, args)?;
                let ord = compare(a.get(), b.get()).ok_or_else(|| self.err(format!("{f}: incomparable values")))?;
                new(Value::Bool(match f {
                    "lt" => ord.is_lt(),
                    "le" => ord.is_le(),
                    "gt" => ord.is_gt(),
                    _ => ord.is_ge(),
                }))
            }
            "len" => {
                let [a] = self.exactly(f, args)?;
                new(json!(match a.get() {
                    Value::String(x) => x.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(m) => m.len(),
                    Value::Null => 0,
                    _ => return Err(self.err("len of a value that has none")),
                }))
            }
            "index" => {
                let ([first], keys) = self.at_least::<_, 1>(f, args)?;
                match first {
                    Val::Borrowed(v) => Ok(Val::Borrowed(index(v, &keys).map_err(|e| self.err(e))?)),
                    other => new(index(other.get(), &keys).map_err(|e| self.err(e))?.clone()),
                }
            }
            "print" => new(Value::String(self.build(f, "", args.iter().map(s), "")?)),
            "println" => {
                let mut text = self.build(f, "", args.iter().map(s), " ")?;
                text.push('\n');
                new(Value::String(text))
            }
            "printf" => {
                let ([format], rest) = self.at_least::<_, 1>(f, args)?;
                new(Value::String(
                    printf(&s(&format), &rest).ok_or_else(|| self.too_big(f))?,
                ))
            }
            // Istio's functions.
            "isset" => {
                let [m, k] = self.exactly(f, args)?;
                new(Value::Bool(m.get().as_object().is_some_and(|m| m.contains_key(&s(&k)))))
            }
            "annotation" => {
                let [meta, key, default] = self.exactly(f, args)?;
                let key = s(&key);
                new(Value::String(
                    match field(meta.get(), "Annotations", &mut 0).and_then(|a| a.get(&key)) {
                        Some(v) => to_text(v),
                        None => s(&default),
                    },
                ))
            }
            "valueOrDefault" => {
                let [v, default] = self.exactly(f, args)?;
                Ok(if truthy(v.get()) { v } else { default })
            }
            "toJSON" | "toJson" | "structToJSON" | "protoToJSON" => {
                let [v] = self.exactly(f, args)?;
                let mut out = Built::default();
                // Go's json.Marshal (and jsonpb, through it) escapes <, > and & in strings.
                write!(GoEscapes(&mut out), "{}", v.get()).map_err(|_| self.too_big(f))?;
                new(Value::String(out.text))
            }
            "fromJSON" | "fromJson" => {
                let [text] = self.exactly(f, args)?;
                let text = s(&text);
                // Parsed JSON takes up to 16 times its text in memory: that must fit in what is left of the budget.
                if text.len().saturating_mul(16) > MAX_WORK.saturating_sub(self.work) {
                    return Err(self.too_much_work());
                }
                new(serde_json::from_str(&text).map_err(|e| self.err(format!("fromJSON: {e}")))?)
            }
            "toYaml" => {
                let [v] = self.exactly(f, args)?;
                let mut out = Built::default();
                if let Err(e) = serde_saphyr::to_fmt_writer(&mut out, v.get()) {
                    return Err(if out.over {
                        self.too_big(f)
                    } else {
                        self.err(crate::yaml::YamlError::Serialize(e.to_string()).to_string())
                    });
                }
                new(Value::String(out.text.trim_end_matches('\n').to_owned()))
            }
            "otelResourceAttributes" => {
                // Istio's: `otelResourceAttributes .MeshConfig .ObjectMeta.Annotations .ObjectMeta.Labels
                // .DeploymentMeta.Namespace .Spec.Containers`, empty unless a provider asks for the attributes.
                let [mesh, annotations, labels, namespace, containers] = self.exactly(f, args)?;
                let enabled = mesh
                    .get()
                    .get("extensionProviders")
                    .and_then(Value::as_array)
                    .is_some_and(|providers| providers.iter().any(super::config::otel_semantic_conventions));
                let text = if enabled {
                    super::template::otel_resource_attributes(
                        annotations.get().as_object(),
                        labels.get().as_object(),
                        &s(&namespace),
                        containers.get().as_array().map(Vec::as_slice).unwrap_or_default(),
                    )
                } else {
                    String::new()
                };
                // Built from values already charged, at most a few times their size: refused past the limit of one
                // built value as what `build` makes is.
                if text.len() > MAX_VALUE {
                    return Err(self.too_big(f));
                }
                new(Value::String(text))
            }
            "env" => {
                // istiod's environment: mizzen's webhook has none of Istio's, so the default applies.
                let [_, default] = self.exactly(f, args)?;
                Ok(default)
            }
            "omit" => {
                let ([v], keys) = self.at_least::<_, 1>(f, args)?;
                let mut m = match v.get() {
                    Value::Object(_) => match self.own(v)? {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    },
                    _ => Map::new(),
                };
                for k in &keys {
                    m.remove(&s(k));
                }
                new(Value::Object(m))
            }
            // Sprig's.
            "default" => {
                let [default, v] = self.exactly(f, args)?;
                Ok(if truthy(v.get()) { v } else { default })
            }
            "quote" => new(Value::String(self.build(
                f,
                "",
                args.iter().map(|v| format!("{:?}", s(v))),
                " ",
            )?)),
            "squote" => new(Value::String(self.build(
                f,
                "",
                args.iter().map(|v| format!("'{}'", s(v))),
                " ",
            )?)),
            "toLower" | "lower" => {
                let [v] = self.exactly(f, args)?;
                new(Value::String(s(&v).to_lowercase()))
            }
            "toUpper" | "upper" => {
                let [v] = self.exactly(f, args)?;
                new(Value::String(s(&v).to_uppercase()))
            }
            "trim" => {
                let [v] = self.exactly(f, args)?;
                new(Value::String(s(&v).trim().to_owned()))
            }
            "contains" => {
                let [needle, v] = self.exactly(f, args)?;
                new(Value::Bool(s(&v).contains(&s(&needle))))
            }
            "hasPrefix" => {
                let [prefix, v] = self.exactly(f, args)?;
                new(Value::Bool(s(&v).starts_with(&s(&prefix))))
            }
            "hasSuffix" => {
                let [suffix, v] = self.exactly(f, args)?;
                new(Value::Bool(s(&v).ends_with(&s(&suffix))))
            }
            "replace" => {
                let [old, replacement, v] = self.exactly(f, args)?;
                // What `str::replace` gives, built piece by piece so that its size is checked as it grows.
                new(Value::String(self.build(
                    f,
                    "",
                    s(&v).split(s(&old).as_str()),
                    &s(&replacement),
                )?))
            }
            "split" | "splitList" => {
                let [sep, v] = self.exactly(f, args)?;
                let (text, sep) = (s(&v), s(&sep));
                let mut bytes = 0usize;
                let mut parts = Vec::new();
                for part in text.split(sep.as_str()) {
                    bytes = bytes.saturating_add(VALUE_BYTES + part.len());
                    if bytes > MAX_VALUE {
                        return Err(self.too_big(f));
                    }
                    parts.push(Value::String(part.to_owned()));
                }
                new(Value::Array(parts))
            }
            "join" => {
                let [sep, items] = self.exactly(f, args)?;
                let sep = s(&sep);
                new(Value::String(match items.get() {
                    Value::Array(a) => self.build(f, "", a.iter().map(to_text), &sep)?,
                    other => self.build(f, "", [to_text(other)], &sep)?,
                }))
            }
            "indent" | "nindent" => {
                let [width, v] = self.exactly(f, args)?;
                let width = usize::try_from(width.get().as_u64().unwrap_or(0)).unwrap_or(0).min(256);
                let pad = " ".repeat(width);
                let prefix = if f == "nindent" { "\n" } else { "" };
                new(Value::String(self.build(
                    f,
                    prefix,
                    s(&v).split('\n').map(|l| format!("{pad}{l}")),
                    "\n",
                )?))
            }
            "list" => {
                let mut items = Vec::with_capacity(args.len());
                for v in args {
                    items.push(self.own(v)?);
                }
                new(Value::Array(items))
            }
            "append" | "mustAppend" => {
                let [l, v] = self.exactly(f, args)?;
                let mut l = match l.get() {
                    Value::Array(_) => match self.own(l)? {
                        Value::Array(a) => a,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                l.push(self.own(v)?);
                new(Value::Array(l))
            }
            "dict" => {
                let mut m = Map::new();
                let mut args = args.into_iter();
                while let Some(k) = args.next() {
                    let v = match args.next() {
                        Some(v) => self.own(v)?,
                        None => Value::Null,
                    };
                    m.insert(s(&k), v);
                }
                new(Value::Object(m))
            }
            "empty" => {
                let [v] = self.exactly(f, args)?;
                new(Value::Bool(!truthy(v.get())))
            }
            other => Err(self.err(format!("function {other:?} not defined"))),
        }
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s`, `%v`, `%d`, `%q`, `%%`; `None` if the text would
/// exceed [`MAX_VALUE`].
fn printf(format: &str, args: &[Val<'_>]) -> Option<String> {
    let mut out = Built::default();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let fits = if c != '%' {
            out.push(c.encode_utf8(&mut [0; 4]))
        } else {
            match chars.next() {
                Some('%') => out.push("%"),
                Some(verb) => match args.next() {
                    Some(v) => match verb {
                        'q' => out.push(&format!("{:?}", to_text(v.get()))),
                        _ => out.push(&to_text(v.get())),
                    },
                    None => out.push(&format!("%!{verb}(MISSING)")),
                },
                None => out.push("%!(NOVERB)"),
            }
        };
        if !fits {
            return None;
        }
    }
    Some(out.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, data: Value) -> String {
        Template::parse("t", src).unwrap().execute(&data).unwrap()
    }

    #[test]
    fn ranges_with_variables_and_trimming() {
        let data = json!({"Spec": {"containers": [{"name": "a"}, {"name": "istio-proxy"}, {"name": "b"}]}});
        let src = "x:\n{{- range $i, $c := .Spec.Containers }}\n{{- if not (eq $c.Name \"istio-proxy\") }}\n- {{ $i }}={{ $c.Name }}\n{{- end }}\n{{- end }}\n";
        assert_eq!(run(src, data), "x:\n- 0=a\n- 2=b\n");
    }

    #[test]
    fn to_json_has_gos_escapes() {
        // Go's json.Marshal, under toJSON, structToJSON and Sprig's toJson, escapes <, > and & in strings.
        let data = json!({"ObjectMeta": {"annotations": {"q": "a=1&b=<2>"}}});
        assert_eq!(
            run("{{ toJSON .ObjectMeta.Annotations }}", data),
            r#"{"q":"a=1\u0026b=\u003c2\u003e"}"#
        );
    }

    #[test]
    fn istio_and_sprig_functions() {
        let data = json!({"ObjectMeta": {"annotations": {"k": "v"}, "labels": {"app": "web"}},
            "Values": {"global": {"proxy": {"resources": {"requests": {"cpu": "100m"}}}}}, "DeploymentMeta": {"name": "d"}});
        assert_eq!(
            run(
                "{{ annotation .ObjectMeta `k` `x` }}/{{ annotation .ObjectMeta `z` `x` }}",
                data.clone()
            ),
            "v/x"
        );
        assert_eq!(run("{{ isset .ObjectMeta.Annotations `k` }}", data.clone()), "true");
        assert_eq!(
            run(
                "{{ index .ObjectMeta.Labels `version` | default .DeploymentMeta.Name | quote }}",
                data.clone()
            ),
            "\"d\""
        );
        assert_eq!(
            run(
                "r:\n{{ toYaml .Values.global.proxy.resources | indent 2 }}",
                data.clone()
            ),
            "r:\n  requests:\n    cpu: 100m"
        );
        assert_eq!(
            run(
                "{{ $l := list }}{{ $l = append $l 1 }}{{ $l = append $l 2 }}{{ $l | join \",\" }}",
                json!({})
            ),
            "1,2"
        );
        assert_eq!(run("{{ printf \"istio.%s\" \"sa\" }}", json!({})), "istio.sa");
        assert_eq!(run("{{ valueOrDefault .Missing `default` }}", json!({})), "default");
    }

    #[test]
    fn if_else_chains_and_with() {
        let src = "{{ if eq .N 1 }}one{{ else if eq .N 2 }}two{{ else if eq .N 3 }}three{{ else }}many{{ end }}";
        for (n, want) in [(1, "one"), (2, "two"), (3, "three"), (9, "many")] {
            assert_eq!(run(src, json!({"N": n})), want);
        }
        assert_eq!(
            run("{{ with .A }}{{ .B }}{{ else }}none{{ end }}", json!({"A": {"B": "b"}})),
            "b"
        );
        assert_eq!(run("{{ with .A }}{{ .B }}{{ else }}none{{ end }}", json!({})), "none");
    }

    #[test]
    fn defines_are_callable_and_comments_vanish() {
        let src = "{{- define \"r\" }}[{{ .X }}]{{ end }}{{/* a comment with }} inside */}}{{ template \"r\" . }}";
        assert_eq!(run(src, json!({"X": 1})), "[1]");
    }

    #[test]
    fn errors_name_the_template_and_the_problem() {
        let e = Template::parse("custom", "{{ if .A }}").unwrap_err();
        assert_eq!(e.name, "custom");
        assert!(e.message.contains("end"), "{e}");
        let e = Template::parse("custom", "{{ nosuch .A }}")
            .unwrap()
            .execute(&json!({}))
            .unwrap_err();
        assert!(e.message.contains("nosuch"), "{e}");
        assert!(Template::parse("t", "{{ \"open }}").is_err());
        assert!(Template::parse("t", "{{ (.A }}").is_err());
        // Malformed input is an error, never a panic.
        for src in [
            "{{",
            "}}",
            "{{-",
            "{{ - }}",
            "{{ ( }}",
            "{{ ) }}",
            "{{ $ }}",
            "{{ . . }}",
            "{{ range }}",
            "{{ end }}",
            "{{ else }}",
            "{{ index }}",
            "{{ printf }}",
            "{{ template }}",
            "{{ $x = 1 }}",
            "{{ 1 | 2 }}",
            "{{ \"é\" }}",
            "{{-1}}",
            "{{ (index .A 5).B }}",
            "{{ index .L 9 }}",
            "{{ len 3 }}",
            "{{ lt 1 \"a\" }}",
            "{{/* x",
            "{{ range 99999999999 }}x{{ end }}",
            "{{ define \"a\" }}",
            "{{ with }}{{ end }}",
            "ä{{ .é }}ö",
        ] {
            if let Ok(t) = Template::parse("t", src) {
                let _ = t.execute(&json!({"A": [1], "L": [1, 2]}));
            }
        }
        // Work is bounded.
        let t = Template::parse(
            "t",
            "{{ define \"x\" }}{{ range 2 }}{{ template \"x\" $ }}{{ end }}{{ end }}{{ template \"x\" . }}",
        )
        .unwrap();
        assert!(t.execute(&json!({})).is_err());
        // Recursion is bounded.
        let t = Template::parse(
            "t",
            "{{ define \"x\" }}{{ template \"x\" . }}{{ end }}{{ template \"x\" . }}",
        )
        .unwrap();
        assert!(t.execute(&json!({})).is_err());
    }

    /// Starts `f` on a thread with a 1 MiB stack (the webhook's are 2 MiB), so that a nesting bound too loose for
    /// the evaluator's frames fails the test instead of passing on the main thread's 8 MiB.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        std::thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap()
    }

    fn error_of(src: &str, data: &Value) -> String {
        match Template::parse("t", src) {
            Err(e) => e.message,
            Ok(t) => t
                .execute(data)
                .map_or_else(|e| e.message, |out| format!("ok ({} bytes)", out.len())),
        }
    }

    #[test]
    fn text_is_read_by_characters_whatever_the_input() {
        for src in [
            "{{ \"é",
            "{{ `é",
            "{{ é }}",
            "{{ 1é }}",
            "{{ $é.ä }}",
            "{{ .é.ü }}",
            "é{{- 1 -}}é",
            "{{-é-}}",
            "{{/*é*/}}",
            "{{/*/}}",
            "{{-/*x*/-}}",
            "{{ ( ) }}",
            "{{ )) }}",
            "{{ (1).a.b }}",
            "{{ $x := 1 }}{{ $x.a. }}",
            "{{ .a..b }}",
            "{{ \"\\",
            "{{ \"\\é\" }}",
            "{{ - }}",
            "{{ -é }}",
            "{{ 1.2.3 }}",
            "{{ :é }}",
            "{{ }}é}",
            "{{ \"}}\" }}",
            "{{ `}}` }}",
            "{{ | }}",
            "{{ 1 | }}",
            "{{ , }}",
            "{{ $a, := 1 }}",
            "{{ $a = }}",
            "{{- -}}",
        ] {
            let _ = error_of(src, &json!({"a": {"b": "c"}}));
        }
        assert_eq!(run("ä{{ \"é\" }}{{ `ö` }}{{- \" ü \" -}} ß", json!({})), "äéö ü ß");
        assert_eq!(run("{{ .Ä }}{{ $ü := 1 }}{{ $ü }}", json!({"Ä": "x"})), "x1");
    }

    #[test]
    fn every_bound_is_an_error_not_a_crash_or_a_hang() {
        // Doubling a string, a list or a map in a loop, and the functions whose output is a product of their inputs.
        let double = |seed: &str, times: u32, then: &str| {
            format!("{{{{ $x := {seed} }}}}{{{{ range {times} }}}}{{{{ $x = print $x $x }}}}{{{{ end }}}}{then}")
        };
        let big = json!({"A": "x".repeat(100_000), "M": (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect::<Map<_, _>>()});
        let cases = [
            (double("\"ab\"", 100, ""), "print: value larger than 16 MiB"),
            (
                double("\"\\n\"", 16, "{{ indent 256 $x }}"),
                "indent: value larger than 16 MiB",
            ),
            (
                double("\"aaaa\"", 16, "{{ replace \"a\" $x $x }}"),
                "replace: value larger than 16 MiB",
            ),
            (
                double("\"aaaa\"", 16, "{{ join $x (split \"\" $x) }}"),
                "join: value larger than 16 MiB",
            ),
            (
                double("\"aaaa\"", 22, "{{ split \"\" $x }}"),
                "split: value larger than 16 MiB",
            ),
            (
                double("`\u{1}`", 22, "{{ quote $x }}"),
                "quote: value larger than 16 MiB",
            ),
            (
                double("`\u{1}`", 22, "{{ toJSON $x }}"),
                "toJSON: value larger than 16 MiB",
            ),
            (
                double("\"%v\"", 22, "{{ printf $x }}"),
                "printf: value larger than 16 MiB",
            ),
            (
                double(
                    "\"0,\"",
                    22,
                    "{{ $a := fromJSON (print \"[\" $x \"0]\") }}{{ $b := fromJSON $x }}",
                ),
                "more than 256 MiB of values",
            ),
            (
                "{{ $x := list 1 }}{{ range 64 }}{{ $x = list $x $x }}{{ end }}".into(),
                "more than 256 MiB of values",
            ),
            (
                "{{ $x := dict }}{{ range 64 }}{{ $x = dict 1 $x 2 $x }}{{ end }}".into(),
                "more than 256 MiB of values",
            ),
            (
                "{{ range 65536 }}{{ range 15 }}{{ $x := toJSON $ }}{{ end }}{{ end }}".into(),
                "more than 256 MiB of values",
            ),
            (
                "{{ range 65536 }}{{ range 15 }}{{ eq $.M $.M }}{{ end }}{{ end }}".into(),
                "more than 256 MiB of values",
            ),
            (
                "{{ range 65536 }}{{ range 15 }}{{ $.M.Nope }}{{ end }}{{ end }}".into(),
                "more than 256 MiB of values",
            ),
            // Looking up a variable past thousands of others, or a field by a long name.
            (
                format!(
                    "{{{{ $x := 1 }}}}{}{{{{ range 65536 }}}}{{{{ range 15 }}}}{{{{ $x }}}}{{{{ end }}}}{{{{ end }}}}",
                    "{{ $y := 1 }}".repeat(5000)
                ),
                "more than 256 MiB of values",
            ),
            (
                format!(
                    "{{{{ range 65536 }}}}{{{{ range 15 }}}}{{{{ $.A{} }}}}{{{{ end }}}}{{{{ end }}}}",
                    "b".repeat(8000)
                ),
                "more than 256 MiB of values",
            ),
            (
                "{{ $x := list }}{{ range 1000 }}{{ $x = list $x }}{{ end }}".into(),
                "list: value nested more than 200 deep",
            ),
            (
                "{{ range 65536 }}{{ range 65536 }}{{ end }}{{ end }}".into(),
                "more than a million steps",
            ),
            (
                "{{ range 65536 }}{{ . }}{{ $.A }}{{ end }}".into(),
                "output exceeds 4 MiB",
            ),
            (
                "{{ define \"x\" }}{{ template \"x\" . }}{{ end }}{{ template \"x\" . }}".into(),
                "template calls nested too deeply",
            ),
            (
                format!(
                    "{{{{ define \"x\" }}}}{}{{{{ template \"x\" . }}}}{}{{{{ end }}}}{{{{ template \"x\" . }}}}",
                    "{{ with . }}".repeat(40),
                    "{{ end }}".repeat(40)
                ),
                "evaluation nested more than 300 deep",
            ),
            (
                format!("{}{}", "{{ if 1 }}".repeat(10_000), "{{ end }}".repeat(10_000)),
                "blocks nested more than 50 deep",
            ),
            (
                format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000)),
                "parentheses nested more than 50 deep",
            ),
            // The deepest nesting allowed works; an `else if` chain does not nest at all.
            (
                format!(
                    "{}{{{{ {}1{} }}}}{}",
                    "{{ if 1 }}".repeat(48),
                    "(".repeat(50),
                    ")".repeat(50),
                    "{{ end }}".repeat(48)
                ),
                "ok (1 bytes)",
            ),
            (
                format!(
                    "{{{{ if 0 }}}}{}{{{{ else }}}}z{{{{ end }}}}",
                    "{{ else if 0 }}".repeat(20_000)
                ),
                "ok (1 bytes)",
            ),
        ];
        // In parallel: each case that exhausts the budget takes a second in a debug build.
        let runs: Vec<_> = cases
            .into_iter()
            .map(|(src, want)| {
                let (data, head) = (big.clone(), src.chars().take(80).collect::<String>());
                (on_small_stack(move || error_of(&src, &data)), want, head)
            })
            .collect();
        for (run, want, head) in runs {
            let got = run.join().unwrap();
            assert!(got.contains(want), "{head}…: want {want:?}, got {got:?}");
        }
    }
}
